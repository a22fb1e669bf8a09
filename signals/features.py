"""Scale-free features from closed bars only, for all symbols at once ([symbols, bars] numpy arrays).

Two entry points that give bit-identical values:

* `compute_features(bars)` — the whole history (training, backtests);
* `FeatureEngine.update(...)` — one new closed bar for every symbol (inference at bar close).

How identity is guaranteed: windowed statistics are sums of shifted arrays in a fixed order (the same
element-wise IEEE operations whether they run over the whole history or over the engine's small
tail buffer), and every recursive indicator (Wilder RSI/ATR, MACD EMAs, higher-timeframe RSI) is
advanced by one shared step function, looped over time in `compute_features`.

Feature value at bar t uses bars <= t only (bar t is closed when it is used). Warm-up values are NaN;
`FeatureFrame.valid` marks rows where every feature is finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from signals.data import AlignedKlines, timeframe_ms


@dataclass(frozen=True)
class FeatureConfig:
    return_windows: tuple[int, ...] = (1, 3, 6, 12, 24, 48)
    vol_window: int = 24
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_window: int = 20
    atr_period: int = 14
    volume_window: int = 48
    htf_factor: int = 4  # higher timeframe = htf_factor bars (4 × 1h = 4h)
    htf_rsi_period: int = 14
    btc_symbol: str | None = "BTCUSDT"  # None: no BTC context features

    def own_names(self) -> tuple[str, ...]:
        return (
            *(f"ret_{w}" for w in self.return_windows),
            f"rvol_{self.vol_window}",
            f"rsi_{self.rsi_period}",
            "macd",
            "macd_signal",
            "macd_hist",
            "bb_z",
            "bb_width",
            f"atr_{self.atr_period}",
            f"volume_z_{self.volume_window}",
            "htf_ret_1",
            f"htf_rsi_{self.htf_rsi_period}",
        )

    def names(self) -> tuple[str, ...]:
        """Ordered feature names (the registry stores and checks this list)."""
        own = self.own_names()
        if self.btc_symbol is None:
            return own
        return (*own, "btc_ret_1", "btc_ret_24", f"btc_rsi_{self.rsi_period}", "btc_htf_rsi", "rel_ret_24")

    @property
    def buffer_len(self) -> int:
        """Bars the incremental engine keeps for its windowed statistics."""
        return max(*self.return_windows, self.vol_window, self.bb_window, self.volume_window, 24) + 1


@dataclass(frozen=True)
class FeatureFrame:
    """`values` [symbols, bars, features]; NaN during warm-up."""

    symbols: tuple[str, ...]
    open_time_ms: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """[symbols, bars] bool: every feature finite."""
        return np.all(np.isfinite(self.values), axis=-1)

    def column(self, name: str) -> np.ndarray:
        return self.values[..., self.names.index(name)]


# ---------------------------------------------------------------------------------------------------
# windowed statistics: fixed-order shifted sums (identical over any array length)


def _rolling_sum(x: np.ndarray, w: int) -> np.ndarray:
    n = x.shape[-1]
    out = np.full(x.shape, np.nan)
    if n < w:
        return out
    m = n - w + 1
    acc = x[..., 0:m].copy()
    for j in range(1, w):
        acc = acc + x[..., j : j + m]
    out[..., w - 1 :] = acc
    return out


def _rolling_mean_std(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    mean = _rolling_sum(x, w) / w
    n = x.shape[-1]
    sd = np.full(x.shape, np.nan)
    if n < w:
        return mean, sd
    m = n - w + 1
    mu = mean[..., w - 1 :]
    d = x[..., 0:m] - mu
    acc = d * d
    for j in range(1, w):
        d = x[..., j : j + m] - mu
        acc = acc + d * d
    sd[..., w - 1 :] = np.sqrt(acc / w)
    return mean, sd


def _lag_diff(x: np.ndarray, w: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if x.shape[-1] > w:
        out[..., w:] = x[..., w:] - x[..., :-w]
    return out


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.where(np.isnan(b), np.nan, 0.0))


def _windowed(cfg: FeatureConfig, close: np.ndarray, volume: np.ndarray) -> dict[str, np.ndarray]:
    """Window features over [S, T] arrays; entry [:, t] depends on bars <= t only."""
    lc = np.log(close)
    out: dict[str, np.ndarray] = {}
    for w in cfg.return_windows:
        out[f"ret_{w}"] = _lag_diff(lc, w)
    r1 = _lag_diff(lc, 1)
    _, rv = _rolling_mean_std(r1, cfg.vol_window)
    out[f"rvol_{cfg.vol_window}"] = rv
    mean, sd = _rolling_mean_std(close, cfg.bb_window)
    out["bb_z"] = _safe_div(close - mean, sd)
    out["bb_width"] = _safe_div(4.0 * sd, mean)
    lv = np.log1p(volume)
    vmean, vsd = _rolling_mean_std(lv, cfg.volume_window)
    out[f"volume_z_{cfg.volume_window}"] = _safe_div(lv - vmean, vsd)
    return out


# ---------------------------------------------------------------------------------------------------
# recursive indicators: one step per closed bar, shared by the full and incremental paths


def _rsi_from(avg_gain: np.ndarray, avg_loss: np.ndarray) -> np.ndarray:
    total = avg_gain + avg_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, avg_gain / np.where(total > 0, total, 1.0), 0.5)


@dataclass
class _Wilder:
    """Wilder smoothing: first value = mean of the first `period` inputs, then (prev·(p−1)+x)/p."""

    period: int
    n_symbols: int
    count: int = 0
    acc_a: np.ndarray = field(init=False)
    acc_b: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.acc_a = np.zeros(self.n_symbols)
        self.acc_b = np.zeros(self.n_symbols)

    def push(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Add one input pair; True once the averages are defined."""
        p = self.period
        self.count += 1
        if self.count < p:
            self.acc_a = self.acc_a + a
            self.acc_b = self.acc_b + b
            return False
        if self.count == p:
            self.acc_a = (self.acc_a + a) / p
            self.acc_b = (self.acc_b + b) / p
            return True
        self.acc_a = (self.acc_a * (p - 1) + a) / p
        self.acc_b = (self.acc_b * (p - 1) + b) / p
        return True


@dataclass
class _Recursive:
    cfg: FeatureConfig
    n_symbols: int
    bar_ms: int
    n_bars: int = 0
    prev_close: np.ndarray | None = None
    ema_fast: np.ndarray | None = None
    ema_slow: np.ndarray | None = None
    ema_signal: np.ndarray | None = None
    htf_close: np.ndarray | None = None
    htf_ret: np.ndarray | None = None
    rsi: _Wilder = field(init=False)
    atr: _Wilder = field(init=False)
    htf_rsi: _Wilder = field(init=False)
    htf_rsi_value: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.rsi = _Wilder(self.cfg.rsi_period, self.n_symbols)
        self.atr = _Wilder(self.cfg.atr_period, self.n_symbols)
        self.htf_rsi = _Wilder(self.cfg.htf_rsi_period, self.n_symbols)

    def step(
        self, open_time_ms: int, high: np.ndarray, low: np.ndarray, close: np.ndarray
    ) -> dict[str, np.ndarray]:
        cfg = self.cfg
        nan = np.full(self.n_symbols, np.nan)
        out: dict[str, np.ndarray] = {}
        # RSI (Wilder) and ATR (Wilder) on 1-bar changes
        rsi_v = atr_v = nan
        if self.prev_close is not None:
            d = close - self.prev_close
            if self.rsi.push(np.maximum(d, 0.0), np.maximum(-d, 0.0)):
                rsi_v = _rsi_from(self.rsi.acc_a, self.rsi.acc_b)
            tr = np.maximum(
                high - low, np.maximum(np.abs(high - self.prev_close), np.abs(low - self.prev_close))
            )
            if self.atr.push(tr, tr):
                atr_v = self.atr.acc_a / close
        out[f"rsi_{cfg.rsi_period}"] = rsi_v
        out[f"atr_{cfg.atr_period}"] = atr_v
        # MACD: EMAs seeded with the first value (adjust=False), reported after the slow+signal warm-up
        if self.ema_fast is None or self.ema_slow is None or self.ema_signal is None:
            self.ema_fast = close.copy()
            self.ema_slow = close.copy()
            self.ema_signal = np.zeros(self.n_symbols)
        else:
            af = 2.0 / (cfg.macd_fast + 1)
            a_s = 2.0 / (cfg.macd_slow + 1)
            self.ema_fast = self.ema_fast + af * (close - self.ema_fast)
            self.ema_slow = self.ema_slow + a_s * (close - self.ema_slow)
            line = self.ema_fast - self.ema_slow
            ag = 2.0 / (cfg.macd_signal + 1)
            self.ema_signal = self.ema_signal + ag * (line - self.ema_signal)
        if self.n_bars >= cfg.macd_slow + cfg.macd_signal:
            line = self.ema_fast - self.ema_slow
            out["macd"] = line / close
            out["macd_signal"] = self.ema_signal / close
            out["macd_hist"] = (line - self.ema_signal) / close
        else:
            out["macd"] = out["macd_signal"] = out["macd_hist"] = nan
        # higher timeframe: a bar that closes on the htf grid closes an htf bar (its close = this close)
        if (open_time_ms + self.bar_ms) % (self.bar_ms * cfg.htf_factor) == 0:
            if self.htf_close is not None:
                d = close - self.htf_close
                self.htf_ret = np.log(close) - np.log(self.htf_close)
                if self.htf_rsi.push(np.maximum(d, 0.0), np.maximum(-d, 0.0)):
                    self.htf_rsi_value = _rsi_from(self.htf_rsi.acc_a, self.htf_rsi.acc_b)
            self.htf_close = close.copy()
        out["htf_ret_1"] = self.htf_ret if self.htf_ret is not None else nan
        out[f"htf_rsi_{cfg.htf_rsi_period}"] = self.htf_rsi_value if self.htf_rsi_value is not None else nan
        self.prev_close = close.copy()
        self.n_bars += 1
        return out


# ---------------------------------------------------------------------------------------------------


def _assemble(cfg: FeatureConfig, symbols: tuple[str, ...], own: Mapping[str, np.ndarray]) -> np.ndarray:
    """Stack own features (+ BTC context) into [..., F] in `cfg.names()` order."""
    cols = [own[n] for n in cfg.own_names()]
    if cfg.btc_symbol is not None:
        b = symbols.index(cfg.btc_symbol)
        for n in ("ret_1", "ret_24", f"rsi_{cfg.rsi_period}", f"htf_rsi_{cfg.htf_rsi_period}"):
            cols.append(np.broadcast_to(own[n][b], own[n].shape))
        cols.append(own["ret_24"] - np.broadcast_to(own["ret_24"][b], own["ret_24"].shape))
    return np.stack(cols, axis=-1)


class FeatureEngine:
    """Holds the state for incremental updates; `compute_features` builds one from a full history."""

    def __init__(self, symbols: tuple[str, ...], timeframe: str, config: FeatureConfig | None = None):
        self.config = config or FeatureConfig()
        if self.config.btc_symbol is not None and self.config.btc_symbol not in symbols:
            raise ValueError(
                f"BTC context needs {self.config.btc_symbol} among the symbols "
                "(or FeatureConfig(btc_symbol=None))"
            )
        if "ret_24" not in {f"ret_{w}" for w in self.config.return_windows} and self.config.btc_symbol:
            raise ValueError("BTC context needs the 24-bar return window")
        self.symbols = symbols
        self.timeframe = timeframe
        self.bar_ms = timeframe_ms(timeframe)
        self._rec = _Recursive(self.config, len(symbols), self.bar_ms)
        self._close = np.zeros((len(symbols), 0))
        self._volume = np.zeros((len(symbols), 0))
        self.last_open_time_ms: int | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return self.config.names()

    def _check_time(self, open_time_ms: int) -> None:
        if self.last_open_time_ms is not None and open_time_ms != self.last_open_time_ms + self.bar_ms:
            raise ValueError(
                f"bar {open_time_ms} does not follow {self.last_open_time_ms} by one {self.timeframe} bar"
            )

    def run(self, bars: AlignedKlines) -> FeatureFrame:
        """Feed a block of closed bars (continuing this engine's state); features for every bar of it."""
        if bars.symbols != self.symbols or bars.timeframe != self.timeframe:
            raise ValueError("bars do not match the engine's symbols/timeframe")
        t = bars.open_time_ms
        if t.shape[0] == 0:
            return FeatureFrame(
                self.symbols, t, self.names, np.zeros((len(self.symbols), 0, len(self.names)))
            )
        self._check_time(int(t[0]))
        if np.any(np.diff(t) != self.bar_ms):
            raise ValueError("bars have gaps; features need a contiguous bar grid")
        k = self._close.shape[1]
        close = np.concatenate([self._close, bars.close], axis=1)
        volume = np.concatenate([self._volume, bars.volume], axis=1)
        win = {n: a[:, k:] for n, a in _windowed(self.config, close, volume).items()}
        rec_cols: dict[str, list[np.ndarray]] = {}
        for i in range(t.shape[0]):
            step = self._rec.step(int(t[i]), bars.high[:, i], bars.low[:, i], bars.close[:, i])
            for n, v in step.items():
                rec_cols.setdefault(n, []).append(v)
        own = {**win, **{n: np.stack(v, axis=1) for n, v in rec_cols.items()}}
        keep = self.config.buffer_len
        self._close = close[:, -keep:].copy()
        self._volume = volume[:, -keep:].copy()
        self.last_open_time_ms = int(t[-1])
        return FeatureFrame(self.symbols, t.copy(), self.names, _assemble(self.config, self.symbols, own))

    def update(
        self,
        open_time_ms: int,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
    ) -> np.ndarray:
        """One new closed bar for every symbol ([S] arrays); returns features [S, F]."""
        self._check_time(open_time_ms)
        c = np.concatenate([self._close, np.asarray(close, dtype=np.float64)[:, None]], axis=1)
        v = np.concatenate([self._volume, np.asarray(volume, dtype=np.float64)[:, None]], axis=1)
        win = {n: a[:, -1] for n, a in _windowed(self.config, c, v).items()}
        rec = self._rec.step(
            open_time_ms, np.asarray(high, dtype=np.float64), np.asarray(low, dtype=np.float64), c[:, -1]
        )
        keep = self.config.buffer_len
        self._close = c[:, -keep:]
        self._volume = v[:, -keep:]
        self.last_open_time_ms = open_time_ms
        return _assemble(self.config, self.symbols, {**win, **rec})


def compute_features(
    bars: AlignedKlines, config: FeatureConfig | None = None
) -> tuple[FeatureFrame, FeatureEngine]:
    """Features for the whole history, and the engine positioned after its last bar (for `update`)."""
    engine = FeatureEngine(bars.symbols, bars.timeframe, config)
    return engine.run(bars), engine


def feature_symbols(symbols: Sequence[str], config: FeatureConfig | None = None) -> tuple[str, ...]:
    """The symbols features are computed over: `symbols` plus the BTC context symbol, sorted."""
    cfg = config or FeatureConfig()
    out = set(symbols)
    if cfg.btc_symbol:
        out.add(cfg.btc_symbol)
    return tuple(sorted(out))


def _feature_config(symbols: Sequence[str]) -> FeatureConfig:
    return FeatureConfig() if "BTCUSDT" in symbols else FeatureConfig(btc_symbol=None)


def return_windows(close: np.ndarray, index: np.ndarray, length: int) -> np.ndarray:
    """The `length` most recent 1-bar log returns ending at each bar in `index` (oldest first): [n, L].

    `close` is one symbol's [T] closes; rows without enough history are NaN-padded on the left.
    """
    lr = np.concatenate([[np.nan], np.diff(np.log(close))])
    padded = np.concatenate([np.full(length, np.nan), lr])
    idx = np.asarray(index, dtype=np.int64)
    cols = idx[:, None] + 1 + np.arange(length)[None, :]  # padded index of lr[idx-L+1 .. idx]
    return padded[cols]

"""Price sources of the paper exchange: a market clock and the price of each symbol at a market time.

- `ManualPrices`: fixed prices, moved only through `set` (the admin endpoint); market clock = wall clock.
- `ReplayPrices`: real klines from the shipped gzip CSV files, rebased so the first bar opens at the
  engine's start; the market clock runs at `speed` × wall time. Inside a bar the price walks
  open→low→high→close (up bar) or open→high→low→close (down bar), linear in time.
- `SyntheticPrices`: a seeded geometric Brownian motion, one step per market second, deterministic.

Every source takes `rules` (symbol → filters; default: the real symbols' DEFAULT_RULES) and knows only
those symbols; `symbol_universe(n)` adds the n synthetic load-test perpetuals (T001USDT...). They have
no data files: manual and synthetic sources start them at 100.00, replay holds them constant there.
`served_rules(config)` adds each chosen symbol outside them (`--symbols`) that has kline files, with
filters scaled to its prices (`trading.instruments.inferred_rules`), and refuses one without.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import math
import random
import zlib
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol, runtime_checkable

from exchange.paper.config import PaperConfig
from trading.instruments import (
    DEFAULT_RULES,
    SYNTHETIC_START_PRICE,
    SymbolRules,
    inferred_rules,
    synthetic_rules,
    synthetic_symbols,
)
from trading.paths import SHIPPED_DATA_DIR

# The repository's shipped data folder (`data/`).
DEFAULT_DATA_DIR = SHIPPED_DATA_DIR

# Used when no data file says otherwise.
DEFAULT_PRICES: dict[str, Decimal] = {
    "BTCUSDT": Decimal("65000"),
    "ETHUSDT": Decimal("3000"),
    "BNBUSDT": Decimal("600"),
    "SOLUSDT": Decimal("150"),
    "XRPUSDT": Decimal("0.5"),
    "ADAUSDT": Decimal("0.45"),
    "DOGEUSDT": Decimal("0.15"),
    "LTCUSDT": Decimal("80"),
    "LINKUSDT": Decimal("15"),
    "AVAXUSDT": Decimal("30"),
}

TIMEFRAMES_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


class SymbolChoiceError(ValueError):
    """A chosen symbol cannot be served (bad name, no kline file); the message names each and why."""


@runtime_checkable
class PriceSource(Protocol):
    @property
    def rules(self) -> dict[str, SymbolRules]: ...

    def symbols(self) -> list[str]: ...

    def price_at(self, symbol: str, market_ms: int) -> Decimal: ...

    def market_ms(self, wall_ms: int) -> int: ...


def symbol_universe(extra_symbols: int = 0) -> dict[str, SymbolRules]:
    """The real symbols' rules plus `extra_symbols` synthetic perpetuals (T001USDT, T002USDT, ...)."""
    if not extra_symbols:
        return DEFAULT_RULES
    return {**DEFAULT_RULES, **{s: synthetic_rules(s) for s in synthetic_symbols(extra_symbols)}}


def _round(rules: SymbolRules, value: float | Decimal) -> Decimal:
    d = value if isinstance(value, Decimal) else Decimal(repr(value))
    p = rules.round_price(d)
    return p if p >= rules.min_price else rules.min_price


def data_files(data_dir: Path | None) -> dict[str, dict[str, Path]]:
    """{symbol: {timeframe: path}} for every `binance-futures-<SYM>-<tf>.csv.gz` in `data_dir`."""
    out: dict[str, dict[str, Path]] = {}
    if data_dir is None or not Path(data_dir).is_dir():
        return out
    for path in Path(data_dir).glob("binance-futures-*-*.csv.gz"):
        parts = path.name[: -len(".csv.gz")].split("-")
        if len(parts) != 4 or parts[3] not in TIMEFRAMES_MS:
            continue
        out.setdefault(parts[2], {})[parts[3]] = path
    return out


def _last_close(path: Path) -> Decimal | None:
    ends = _first_open_last_close(path)
    return ends[1] if ends else None


def _first_open_last_close(path: Path) -> tuple[Decimal, Decimal] | None:
    """The first bar's open and the last bar's close of a kline file (None: unreadable)."""
    try:
        text = zlib.decompress(path.read_bytes(), 16 + zlib.MAX_WBITS)
    except (OSError, zlib.error):
        return None
    lines = text.rstrip(b"\n").split(b"\n", 2)  # header, first row, the rest
    if len(lines) < 2:
        return None
    try:
        first = Decimal(lines[1].split(b",")[1].decode())
        last = Decimal(lines[-1].rsplit(b"\n", 1)[-1].split(b",")[4].decode())
    except (IndexError, ValueError, ArithmeticError):
        return None
    if not (first.is_finite() and last.is_finite() and first > 0 and last > 0):
        return None
    return first, last


def _is_symbol_name(symbol: str) -> bool:
    return symbol.endswith("USDT") and len(symbol) > 4 and symbol.isalnum() and symbol.isupper()


def served_rules(config: PaperConfig) -> dict[str, SymbolRules]:
    """The filters of every symbol this exchange may list: the built-in ones, the synthetic extras and
    each of `config.symbols` outside them, inferred from its kline files.

    Raises SymbolChoiceError naming every chosen symbol that cannot be served: a malformed name, or no
    kline file in the data folder where one is needed (under replay for every real symbol, otherwise
    for a symbol without built-in filters, whose price scale only its data tells). Before this check a
    chosen symbol without data or filters was silently left out, and the trader found out only when
    an order for it was refused.
    """
    rules = dict(symbol_universe(config.extra_symbols))
    if not config.symbols:
        return rules
    data_dir = config.data_dir or DEFAULT_DATA_DIR
    files = data_files(data_dir)
    extra = set(synthetic_symbols(config.extra_symbols))
    bad_names = [s for s in config.symbols if not _is_symbol_name(s)]
    no_data: list[str] = []
    unreadable: list[str] = []
    for s in config.symbols:
        if s in bad_names or s in extra:
            continue
        if s not in files:
            if config.prices == "replay" or s not in rules:
                no_data.append(s)
            continue
        if s in rules:
            continue
        ends = [e for e in map(_first_open_last_close, files[s].values()) if e is not None]
        if not ends:
            unreadable.append(s)
            continue
        rules[s] = inferred_rules(s, min(min(e) for e in ends))
    problems = []
    if bad_names:
        problems.append(f"{', '.join(map(repr, bad_names))}: not a USDT perpetual name like BTCUSDT")
    if no_data:
        problems.append(
            f"no klines for {', '.join(no_data)} in {data_dir} (files named "
            "binance-futures-<SYMBOL>-<tf>.csv.gz; `qtrader data download` fetches them, QT_DATA_DIR "
            "points at another folder)"
        )
    if unreadable:
        problems.append(f"unreadable kline files for {', '.join(unreadable)} in {data_dir}")
    if problems:
        raise SymbolChoiceError("cannot serve the chosen symbols: " + "; ".join(problems))
    return rules


class ManualPrices:
    """Fixed prices; `set` moves one. Initial price: the last close of the symbol's shipped data file."""

    def __init__(
        self,
        symbols: list[str] | None = None,
        data_dir: Path | None = None,
        rules: dict[str, SymbolRules] | None = None,
    ) -> None:
        self._rules = rules = DEFAULT_RULES if rules is None else rules
        names = [s for s in (symbols or list(rules)) if s in rules]
        files = data_files(data_dir)
        self._prices: dict[str, Decimal] = {}
        for s in names:
            price = None
            tfs = files.get(s, {})
            if tfs:
                # The 1h files reach furthest in time; otherwise any file.
                path = tfs.get("1h") or next(iter(tfs.values()))
                price = _last_close(path)
            if price is None:
                price = DEFAULT_PRICES.get(s, SYNTHETIC_START_PRICE)
            self._prices[s] = _round(rules[s], price)

    @property
    def rules(self) -> dict[str, SymbolRules]:
        return self._rules

    def symbols(self) -> list[str]:
        return list(self._prices)

    def price_at(self, symbol: str, market_ms: int) -> Decimal:
        return self._prices[symbol]

    def market_ms(self, wall_ms: int) -> int:
        return wall_ms

    def set(self, symbol: str, price: Decimal) -> None:
        if symbol not in self._prices:
            raise KeyError(symbol)
        self._prices[symbol] = _round(self._rules[symbol], price)


@dataclass
class _Series:
    tf_ms: int
    opens: list[int]  # data open times
    o: list[float]
    h: list[float]
    low: list[float]
    c: list[float]
    v: list[float]


def load_series(path: Path, tf_ms: int) -> _Series:
    opens: list[int] = []
    o: list[float] = []
    h: list[float] = []
    lo: list[float] = []
    c: list[float] = []
    v: list[float] = []
    with gzip.open(path, "rb") as fh:
        reader = csv.reader(io.TextIOWrapper(fh, encoding="ascii"))
        next(reader, None)
        for row in reader:
            opens.append(int(row[0]))
            o.append(float(row[1]))
            h.append(float(row[2]))
            lo.append(float(row[3]))
            c.append(float(row[4]))
            v.append(float(row[5]))
    return _Series(tf_ms, opens, o, h, lo, c, v)


class ReplayPrices:
    """Real klines replayed from `data_dir`, rebased to start at `origin_ms` (wall) and run at `speed`.

    `constant` symbols (the synthetic load-test ones, which have no data) hold a fixed price.
    """

    def __init__(
        self,
        data_dir: Path,
        symbols: list[str] | None = None,
        speed: float = 1.0,
        origin_ms: int = 0,
        rules: dict[str, SymbolRules] | None = None,
        constant: dict[str, Decimal] | None = None,
    ) -> None:
        self._rules = rules = DEFAULT_RULES if rules is None else rules
        files = data_files(data_dir)
        wanted = symbols or [s for s in rules if s in files]
        self._paths: dict[str, tuple[Path, int]] = {}
        for s in wanted:
            tfs = files.get(s)
            if s not in rules or not tfs:
                continue
            tf = min(tfs, key=lambda t: TIMEFRAMES_MS[t])  # prefer 1m, else the lowest timeframe
            self._paths[s] = (tfs[tf], TIMEFRAMES_MS[tf])
        if not self._paths:
            raise ValueError(f"no kline files for {wanted} in {data_dir}")
        self._constant: dict[str, Decimal] = {
            s: _round(rules[s], p) for s, p in (constant or {}).items() if s in rules and s not in self._paths
        }
        self.speed = speed
        self.origin_ms = origin_ms
        self._series: dict[str, _Series] = {}

    @property
    def rules(self) -> dict[str, SymbolRules]:
        return self._rules

    def symbols(self) -> list[str]:
        return [*self._paths, *self._constant]

    def replays(self, symbol: str) -> bool:
        """Whether `symbol` is replayed from data (False: a constant-price symbol)."""
        return symbol in self._paths

    def timeframe_ms(self, symbol: str) -> int:
        return self._paths[symbol][1]

    def market_ms(self, wall_ms: int) -> int:
        if self.speed == 1.0:
            return wall_ms
        return self.origin_ms + int((wall_ms - self.origin_ms) * self.speed)

    def series(self, symbol: str) -> _Series:
        s = self._series.get(symbol)
        if s is None:
            path, tf = self._paths[symbol]
            s = self._series[symbol] = load_series(path, tf)
        return s

    def offset(self, symbol: str) -> int:
        """market time = data time + offset; the first bar opens at the origin floored to its timeframe."""
        s = self.series(symbol)
        return (self.origin_ms // s.tf_ms) * s.tf_ms - s.opens[0]

    def _path_value(self, s: _Series, i: int, frac: float) -> float:
        o, h, lo, c = s.o[i], s.h[i], s.low[i], s.c[i]
        pts = (o, lo, h, c) if c >= o else (o, h, lo, c)
        x = frac * 3.0
        k = min(int(x), 2)
        return pts[k] + (pts[k + 1] - pts[k]) * (x - k)

    def raw_at(self, symbol: str, market_ms: int) -> float:
        s = self.series(symbol)
        t = market_ms - self.offset(symbol)
        if t <= s.opens[0]:
            return s.o[0]
        i = bisect.bisect_right(s.opens, t) - 1
        if i >= len(s.opens) - 1 and t >= s.opens[-1] + s.tf_ms:
            return s.c[-1]  # the data ran out: hold the last close
        return self._path_value(s, i, (t - s.opens[i]) / s.tf_ms)

    def price_at(self, symbol: str, market_ms: int) -> Decimal:
        fixed = self._constant.get(symbol)
        if fixed is not None:
            return fixed
        return _round(self._rules[symbol], self.raw_at(symbol, market_ms))

    def path_ohlc(self, symbol: str, start: int, end: int) -> tuple[float, float, float, float] | None:
        """OHLC of the price path over market time [start, end), or None if before the data."""
        s = self.series(symbol)
        off = self.offset(symbol)
        t0, t1 = start - off, end - off
        if t1 <= s.opens[0]:
            return None
        t0 = max(t0, s.opens[0])
        vals = [self.raw_at(symbol, t0 + off), self.raw_at(symbol, t1 - 1 + off)]
        # interior vertices of the piecewise-linear path
        i = max(bisect.bisect_right(s.opens, t0) - 1, 0)
        while i < len(s.opens) and s.opens[i] < t1:
            for k in (0, 1, 2, 3):
                tv = s.opens[i] + s.tf_ms * k // 3
                if t0 <= tv < t1:
                    vals.append(self._path_value(s, i, k / 3))
            i += 1
        return vals[0], max(vals), min(vals), vals[1]


class SyntheticPrices:
    """Seeded GBM, one step per market second (linear inside the second); deterministic per seed.

    The path is generated forward and only a window of recent seconds is kept, so memory stays flat
    however long (or fast) the market clock runs; a query older than the window gets its oldest point.
    """

    WINDOW = 4096

    def __init__(
        self,
        symbols: list[str] | None = None,
        seed: int = 7,
        speed: float = 1.0,
        origin_ms: int = 0,
        annual_vol: float = 0.8,
        data_dir: Path | None = None,
        rules: dict[str, SymbolRules] | None = None,
    ) -> None:
        start = ManualPrices(symbols, data_dir, rules)
        self._rules = start._rules
        self._start = {s: float(start.price_at(s, 0)) for s in start.symbols()}
        self.seed = seed
        self.speed = speed
        self.origin_ms = origin_ms
        self._sigma = annual_vol / math.sqrt(365 * 86400)
        self._paths: dict[str, deque[float]] = {}
        self._last_k: dict[str, int] = {}  # index of the newest point kept
        self._rngs: dict[str, random.Random] = {}

    @property
    def rules(self) -> dict[str, SymbolRules]:
        return self._rules

    def symbols(self) -> list[str]:
        return list(self._start)

    def market_ms(self, wall_ms: int) -> int:
        return self.origin_ms + int((wall_ms - self.origin_ms) * self.speed)

    def _point(self, symbol: str, k: int) -> float:
        path = self._paths.get(symbol)
        if path is None:
            path = self._paths[symbol] = deque([self._start[symbol]], maxlen=self.WINDOW)
            self._last_k[symbol] = 0
            self._rngs[symbol] = random.Random(f"{self.seed}:{symbol}")
        last = self._last_k[symbol]
        if k > last:
            rng = self._rngs[symbol]
            sig = self._sigma
            drift = -0.5 * sig * sig
            x = path[-1]
            for _ in range(k - last):
                x *= math.exp(drift + sig * rng.gauss(0.0, 1.0))
                path.append(x)
            self._last_k[symbol] = last = k
        idx = len(path) - 1 - (last - k)
        return path[max(idx, 0)]

    def raw_at(self, symbol: str, market_ms: int) -> float:
        t = max(market_ms - self.origin_ms, 0)
        k, r = divmod(t, 1000)
        a = self._point(symbol, k)
        if r == 0:
            return a
        b = self._point(symbol, k + 1)
        return a + (b - a) * r / 1000

    def price_at(self, symbol: str, market_ms: int) -> Decimal:
        return _round(self._rules[symbol], self.raw_at(symbol, market_ms))


def build_price_source(config: PaperConfig) -> PriceSource:
    """The price source the config asks for (the server's factory)."""
    origin = config.clock()
    rules = served_rules(config)
    extra = synthetic_symbols(config.extra_symbols)
    symbols = config.symbols
    if symbols is not None and extra:  # the synthetic symbols come on top of the chosen ones
        symbols = [*symbols, *(s for s in extra if s not in symbols)]
    if config.prices == "replay":
        data_dir = config.data_dir or DEFAULT_DATA_DIR
        if symbols is None and extra:
            files = data_files(data_dir)
            symbols = [*(s for s in DEFAULT_RULES if s in files), *extra]
        constant = {s: SYNTHETIC_START_PRICE for s in extra}
        return ReplayPrices(data_dir, symbols, config.speed, origin, rules=rules, constant=constant)
    if config.prices == "synthetic":
        return SyntheticPrices(
            symbols, config.seed, config.speed, origin, data_dir=config.data_dir, rules=rules
        )
    return ManualPrices(symbols, config.data_dir, rules)

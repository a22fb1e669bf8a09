"""Benchmark: how fast the backtester replays history through the live policies.

`python -m bench.backtest`

- `bars_per_s_1m_1sym`: the whole shipped 1 m BTCUSDT file, the default exit profile and risk policy, a
  long signal on every bar (the replay re-enters as soon as the portfolio's gates allow);
- `bars_per_s_1h_10sym`: the ten shipped 1 h files, whole (each symbol from its first to its last bar,
  on the union of their times), one portfolio, the same signal; bars counted per symbol;
- `floor_bars_per_s`: one numpy pass over the same 1 m arrays (a running maximum of the highs), the
  speed no replay of those bars can beat (`floor_bars_per_s_1h_10sym` the same over the ten 1 h files).

Each figure is the best of three runs (two for the ten symbols; loading and signal arrays excluded).
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import numpy as np

from backtest.config import BacktestConfig
from backtest.engine import SignalSet, run_backtest
from backtest.result import BacktestResult
from signals.data import AlignedKlines, available, load_klines

RUNS = 3


def union_bars(symbols: list[str], timeframe: str) -> tuple[AlignedKlines, int]:
    """Whole files on the union of their times. Before a symbol's first bar its prices are NaN (no
    signal, no position); after its last bar they stay at its last close (a position held there is
    marked there and closed at the end). Returns the bars and the number of real symbol-bars."""
    loaded = [load_klines(s, timeframe) for s in symbols]
    times = np.unique(np.concatenate([k.open_time_ms for k in loaded]))
    shape = (len(loaded), times.shape[0])
    cols = {n: np.full(shape, np.nan) for n in ("open", "high", "low", "close", "volume")}
    for s, k in enumerate(loaded):
        idx = np.searchsorted(times, k.open_time_ms)
        for n, a in cols.items():
            a[s, idx] = getattr(k, n)
        after = slice(idx[-1] + 1, None)
        for n in ("open", "high", "low", "close"):
            cols[n][s, after] = k.close[-1]
    real = sum(len(k) for k in loaded)
    return AlignedKlines(tuple(symbols), timeframe, times.astype(np.int64), **cols), real


def tradable_every_bar(bars: AlignedKlines) -> SignalSet:
    side = np.ones(bars.close.shape, dtype=np.int8)
    side[:, :-1][~np.isfinite(bars.open[:, 1:])] = 0  # never enter where the next bar has no data
    return SignalSet(side)


def best_of(fn: Callable[[], BacktestResult], runs: int = RUNS) -> tuple[float, BacktestResult]:
    best, out = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    assert out is not None
    return best, out


def floor_time(arr: np.ndarray, runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        np.fmax.accumulate(arr, axis=-1)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    one = load_klines("BTCUSDT", "1m")
    bars_1m = AlignedKlines(
        ("BTCUSDT",),
        "1m",
        one.open_time_ms,
        *(getattr(one, n)[None] for n in ("open", "high", "low", "close", "volume")),
    )
    cfg_1m = BacktestConfig(symbols=("BTCUSDT",), timeframe="1m")
    sig_1m = SignalSet(np.ones(bars_1m.close.shape, dtype=np.int8))
    print(f"[bench] 1m BTCUSDT: {bars_1m.n_bars} bars", file=sys.stderr)
    t_1m, r_1m = best_of(lambda: run_backtest(cfg_1m, bars_1m, sig_1m))

    symbols = sorted(s for s, tf in available() if tf == "1h")
    bars_1h, real = union_bars(symbols, "1h")
    cfg_1h = BacktestConfig(symbols=tuple(symbols), timeframe="1h")
    sig_1h = tradable_every_bar(bars_1h)
    print(f"[bench] 1h x {len(symbols)}: {real} symbol-bars over {bars_1h.n_bars} times", file=sys.stderr)
    t_1h, r_1h = best_of(lambda: run_backtest(cfg_1h, bars_1h, sig_1h), runs=2)

    floor_1m = floor_time(bars_1m.high)
    floor_1h = floor_time(bars_1h.high)
    result = {
        "bars_per_s_1m_1sym": round(bars_1m.n_bars / t_1m),
        "bars_per_s_1h_10sym": round(real / t_1h),
        "trades": len(r_1m.trades),
        "trades_1h_10sym": len(r_1h.trades),
        "decisions_1m_1sym": r_1m.decisions,
        "decisions_1h_10sym": r_1h.decisions,
        "seconds_1m_1sym": round(t_1m, 4),
        "seconds_1h_10sym": round(t_1h, 4),
        "floor_bars_per_s": round(bars_1m.n_bars / floor_1m),
        "floor_bars_per_s_1h_10sym": round(real / floor_1h),
        "bars_1m_1sym": bars_1m.n_bars,
        "bars_1h_10sym": real,
        "symbols_1h": len(symbols),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

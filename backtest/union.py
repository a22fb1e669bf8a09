"""Symbols whose files do not overlap in one backtest (`qtrader backtest --union`): the bar times are the
union of theirs, and each symbol trades only where it has bars of its own.

Before a symbol's first bar its prices are NaN (no signal, no position); after its last bar, and in a gap
inside its file, they stay at its last close (a position held there is marked there, and one still open
at the end is closed at that price). A signal is kept only where the symbol has real bars both at the
signal's bar and at the next one (where it would enter)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from signals.data import AlignedKlines, Klines

PRICES = ("open", "high", "low", "close")


def union_bars(klines: Sequence[Klines]) -> tuple[AlignedKlines, np.ndarray]:
    """The bars on the union of the times, and `real` [symbols, bars]: True where a symbol has its own bar."""
    if not klines:
        raise ValueError("union_bars needs at least one symbol")
    times = np.unique(np.concatenate([k.open_time_ms for k in klines]))
    shape = (len(klines), times.shape[0])
    cols = {n: np.full(shape, np.nan) for n in (*PRICES, "volume")}
    real = np.zeros(shape, dtype=bool)
    for s, k in enumerate(klines):
        if len(k) == 0:
            continue
        idx = np.searchsorted(times, k.open_time_ms)
        real[s, idx] = True
        for n, a in cols.items():
            a[s, idx] = getattr(k, n)
        # After the first bar, a time without a bar of its own holds the last close (forward filled).
        first = int(idx[0])
        seen = np.maximum.accumulate(np.where(real[s], np.arange(shape[1]), -1))
        fill = ~real[s] & (np.arange(shape[1]) >= first)
        last_close = cols["close"][s, seen[fill]]
        for n in PRICES:
            cols[n][s, fill] = last_close
        cols["volume"][s, fill] = 0.0
    bars = AlignedKlines(
        symbols=tuple(k.symbol for k in klines),
        timeframe=klines[0].timeframe,
        open_time_ms=times.astype(np.int64),
        **cols,
    )
    return bars, real


def mask_signal(side: np.ndarray, real: np.ndarray) -> np.ndarray:
    """`side` with every signal removed whose bar, or the next one (its entry), is not a real bar."""
    out = side.copy()
    ok = real.copy()
    ok[:, :-1] &= real[:, 1:]
    out[~ok] = 0
    return out

"""Entry signals for the replay: an array per symbol of the side decided at each bar's close (+1 long,
-1 short, 0 none). The position opens at the next bar's open, so a signal only sees closed bars."""

from __future__ import annotations

import numpy as np

from signals.data import AlignedKlines

SIGNALS = ("every-bar", "momentum")


def every_bar(bars: AlignedKlines, side: int = 1) -> np.ndarray:
    """A signal on every bar (the benchmark's load): enter again as soon as the gates allow."""
    return np.full(bars.close.shape, side, dtype=np.int8)


def momentum(bars: AlignedKlines, lookback: int = 24) -> np.ndarray:
    """Long when the close is above the close `lookback` bars earlier, short when below."""
    if lookback < 1:
        raise ValueError("lookback must be at least 1 bar")
    out = np.zeros(bars.close.shape, dtype=np.int8)
    c = bars.close
    with np.errstate(invalid="ignore"):  # a NaN price (a symbol before its first bar) gives no signal
        diff = c[:, lookback:] - c[:, :-lookback]
        out[:, lookback:] = np.where(np.isfinite(diff), np.sign(diff), 0).astype(np.int8)
    return out

"""Find the next bar where something can happen, without visiting the bars in between in Python."""

from __future__ import annotations

import numpy as np

FIRST_WINDOW = 128


def first_cross(high: np.ndarray, low: np.ndarray, start: int, stop: int, above: float, below: float) -> int:
    """The first index k in [start, stop) with high[k] >= above or low[k] <= below; `stop` when none.

    Scans windows that grow fourfold, so a position that is decided soon costs one small comparison and
    one that waits for weeks costs a few large vectorized ones."""
    i, width = start, FIRST_WINDOW
    while i < stop:
        j = min(i + width, stop)
        hit = (high[i:j] >= above) | (low[i:j] <= below)
        k = int(hit.argmax())
        if hit[k]:
            return i + k
        i, width = j, width * 4
    return stop

"""Market regime from the scale-free features: trending up / trending down / ranging / volatile.

Pure functions over feature rows ([..., F] arrays with their ordered names, as `FeatureFrame` or
`FeatureEngine.update` give them). Two numbers decide, each with a plain threshold:

* **volatility** — realised σ of 1-bar log returns over `rvol_<w>` bars, scaled to one day
  (σ·√(bars per day)). Above `volatile_daily_vol` (default 5 % a day, ≈ 95 % a year) the regime is
  VOLATILE whatever the trend: in that state barriers are hit by noise and sizing shrinks anyway.
* **trend strength** — the t-statistic of the `ret_<n>` return over its own noise:
  z = ret_n / (σ·√n). |z| ≥ `trend_z` (default 1.0) is a trend, up or down by its sign; the MACD
  histogram must not point the other way (`require_macd_agree`). Otherwise RANGING.

Rows with a missing input (warm-up NaN) are UNKNOWN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from signals.data import timeframe_ms

DAY_MS = 86_400_000


class Regime(StrEnum):
    TRENDING_UP = "trending_up"
    TRENDING_DOWN = "trending_down"
    RANGING = "ranging"
    VOLATILE = "volatile"
    UNKNOWN = "unknown"


REGIMES: tuple[Regime, ...] = (Regime.TRENDING_UP, Regime.TRENDING_DOWN, Regime.RANGING, Regime.VOLATILE)
_CODES = (*REGIMES, Regime.UNKNOWN)  # code i ↔ _CODES[i]


@dataclass(frozen=True)
class RegimeThresholds:
    volatile_daily_vol: float = 0.05  # σ per day above which the regime is VOLATILE
    trend_z: float = 1.0  # |ret_n| / (σ·√n) at or above which the market trends
    trend_window: int = 24  # n of the ret_<n> feature
    vol_window: int = 24  # w of the rvol_<w> feature
    require_macd_agree: bool = True  # a trend needs macd_hist of the same sign (or zero)

    def __post_init__(self) -> None:
        if self.volatile_daily_vol <= 0 or self.trend_z <= 0 or self.trend_window < 1 or self.vol_window < 2:
            raise ValueError("volatile_daily_vol > 0, trend_z > 0, trend_window >= 1, vol_window >= 2")


def bars_per_day(timeframe: str) -> float:
    return DAY_MS / timeframe_ms(timeframe)


def regime_codes(
    values: np.ndarray,
    names: Sequence[str],
    timeframe: str = "1h",
    thresholds: RegimeThresholds | None = None,
) -> np.ndarray:
    """Integer codes (index into `REGIMES`, 4 = UNKNOWN) for feature rows `values` [..., F]."""
    th = thresholds or RegimeThresholds()
    names = list(names)
    for n in (f"ret_{th.trend_window}", f"rvol_{th.vol_window}", "macd_hist"):
        if n not in names:
            raise ValueError(f"regime needs feature {n!r}; have {names}")
    v = np.asarray(values, dtype=np.float64)
    ret = v[..., names.index(f"ret_{th.trend_window}")]
    sig = v[..., names.index(f"rvol_{th.vol_window}")]
    hist = v[..., names.index("macd_hist")]
    daily = sig * math.sqrt(bars_per_day(timeframe))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sig > 0, ret / (sig * math.sqrt(th.trend_window)), 0.0)
    up = z >= th.trend_z
    down = z <= -th.trend_z
    if th.require_macd_agree:
        up &= hist >= 0
        down &= hist <= 0
    codes = np.full(v.shape[:-1], 2, dtype=np.int64)  # ranging
    codes[up] = 0
    codes[down] = 1
    codes[daily > th.volatile_daily_vol] = 3
    codes[~(np.isfinite(ret) & np.isfinite(sig) & np.isfinite(hist))] = 4
    return codes


def classify(
    values: np.ndarray,
    names: Sequence[str],
    timeframe: str = "1h",
    thresholds: RegimeThresholds | None = None,
) -> list[Regime]:
    """Regime of each row of `values` [n, F] (or one row [F] → a one-element list)."""
    codes = regime_codes(np.atleast_2d(values), names, timeframe, thresholds)
    return [_CODES[int(c)] for c in codes.reshape(-1)]


def regime_of(
    features: np.ndarray,
    names: Sequence[str],
    timeframe: str = "1h",
    thresholds: RegimeThresholds | None = None,
) -> Regime:
    """Regime of one feature row [F]."""
    return classify(np.asarray(features).reshape(1, -1), names, timeframe, thresholds)[0]

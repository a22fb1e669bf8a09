"""Direction labels for bar closes: triple-barrier (AFML ch. 3) or fixed-horizon sign with a dead zone.

Both are from a long entry at the close of bar t. Volatility σ_t is an EWMA of squared 1-bar log returns
using bars <= t only, scaled to the horizon (σ_t·√N). A label of bar t reads bars t+1 … t+N only and
reports `end[t]`, the bar where it resolved, so training rows can be purged against test folds.

* triple-barrier: profit-take at +k_up·σ_t·√N, stop at −k_down·σ_t·√N (log return from the entry
  close, touched by high / low), time limit N bars. Label = first touch: 1 = profit-take, 0 = stop; a
  bar that touches both counts as the stop (adverse first). At the time limit the label is the sign
  of the return (`vertical="sign"`) or undefined (`vertical="drop"`).
* fixed-horizon: sign of the N-bar log return; |return| <= k·σ_t·√N is the dead zone (undefined).

Undefined labels are NaN (and end = -1); the last N bars are always undefined.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class LabelSpec:
    kind: Literal["triple_barrier", "fixed_horizon"] = "triple_barrier"
    horizon: int = 24
    k_up: float = 1.0  # triple-barrier profit-take, in σ·√N
    k_down: float = 1.0  # triple-barrier stop, in σ·√N
    dead_zone: float = 0.1  # fixed-horizon dead zone, in σ·√N
    vertical: Literal["sign", "drop"] = "sign"
    vol_span: int = 48

    def __post_init__(self) -> None:
        if self.kind not in ("triple_barrier", "fixed_horizon"):
            raise ValueError(f"unknown label kind {self.kind!r}")
        if self.horizon < 1 or self.vol_span < 2 or self.k_up <= 0 or self.k_down <= 0 or self.dead_zone < 0:
            raise ValueError("horizon >= 1, vol_span >= 2, k_up/k_down > 0 and dead_zone >= 0 are required")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LabelSpec:
        return cls(**d)


@dataclass(frozen=True)
class Labels:
    """[symbols, bars]: `y` in {0, 1} or NaN, `end` the resolving bar (or -1), `ret` log return to it."""

    spec: LabelSpec
    y: np.ndarray
    end: np.ndarray
    ret: np.ndarray

    @property
    def defined(self) -> np.ndarray:
        return np.isfinite(self.y)


def ewma_vol(close: np.ndarray, span: int) -> np.ndarray:
    """EWMA σ of 1-bar log returns, [S, T]; value at t uses returns up to bar t; NaN for t < span."""
    close = np.atleast_2d(close)
    r = np.diff(np.log(close), axis=1)
    a = 2.0 / (span + 1)
    out = np.full(close.shape, np.nan)
    var = r[:, 0] * r[:, 0] if r.shape[1] else np.zeros(close.shape[0])
    for i in range(r.shape[1]):
        var = (1 - a) * var + a * r[:, i] * r[:, i]
        if i + 1 >= span:
            out[:, i + 1] = np.sqrt(var)
    return out


def make_labels(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    spec: LabelSpec,
    sigma: np.ndarray | None = None,
) -> Labels:
    """Labels for every bar of [S, T] (or [T]) arrays. `sigma`: per-bar σ to use instead of EWMA."""
    high, low, close = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (high, low, close))
    s_n, t_n = close.shape
    n = spec.horizon
    sig = ewma_vol(close, spec.vol_span) if sigma is None else np.atleast_2d(sigma)
    width = sig * np.sqrt(n)
    y = np.full((s_n, t_n), np.nan)
    end = np.full((s_n, t_n), -1, dtype=np.int64)
    ret = np.full((s_n, t_n), np.nan)
    m = t_n - n  # bars t in [0, m) have a full horizon
    if m <= 0:
        return Labels(spec, y, end, ret)
    lc = np.log(close)
    c0 = lc[:, :m]
    w = width[:, :m]
    ok = np.isfinite(w)
    if spec.kind == "fixed_horizon":
        r = lc[:, n : n + m] - c0
        band = spec.dead_zone * w
        lab = np.where(r > band, 1.0, np.where(r < -band, 0.0, np.nan))
        y[:, :m] = np.where(ok, lab, np.nan)
        end[:, :m] = np.where(ok & np.isfinite(lab), np.arange(m)[None, :] + n, -1)
        ret[:, :m] = np.where(ok, r, np.nan)
        return Labels(spec, y, end, ret)
    up = spec.k_up * w
    dn = spec.k_down * w
    lab = np.full((s_n, m), np.nan)
    hit_at = np.full((s_n, m), -1, dtype=np.int64)
    hit_ret = np.full((s_n, m), np.nan)
    open_ = ok.copy()
    base = np.arange(m)[None, :]
    for j in range(1, n + 1):
        hi = np.log(high[:, j : j + m]) - c0
        lo = np.log(low[:, j : j + m]) - c0
        stop = open_ & (lo <= -dn)
        take = open_ & ~stop & (hi >= up)
        lab[stop] = 0.0
        lab[take] = 1.0
        hit_ret[stop] = -dn[stop]
        hit_ret[take] = up[take]
        done = stop | take
        hit_at[done] = np.broadcast_to(base + j, done.shape)[done]
        open_ &= ~done
    r_n = lc[:, n : n + m] - c0
    if spec.vertical == "sign":
        lab[open_] = (r_n[open_] > 0).astype(np.float64)
        hit_at[open_] = np.broadcast_to(base + n, open_.shape)[open_]
        hit_ret[open_] = r_n[open_]
    y[:, :m] = lab
    end[:, :m] = np.where(np.isfinite(lab), hit_at, -1)
    ret[:, :m] = hit_ret
    return Labels(spec, y, end, ret)


def uniqueness_weights(t_index: np.ndarray, end: np.ndarray, n_bars: int) -> np.ndarray:
    """AFML ch. 4 average uniqueness of each label window (t, end] among the given labels."""
    t_index = np.asarray(t_index, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    conc = np.zeros(n_bars + 1)
    np.add.at(conc, t_index + 1, 1.0)
    np.add.at(conc, end + 1, -1.0)
    conc = np.cumsum(conc)[:n_bars]  # labels active on each bar
    inv = np.concatenate([[0.0], np.cumsum(np.where(conc > 0, 1.0 / np.maximum(conc, 1), 0.0))])
    return (inv[end + 1] - inv[t_index + 1]) / np.maximum(end - t_index, 1)

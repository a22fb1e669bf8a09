"""Labels: hand-made paths, a plain-loop reference, no look-ahead beyond the horizon, purging info."""

from __future__ import annotations

import math

import numpy as np
import pytest

from signals.data import AlignedKlines
from signals.labels import LabelSpec, ewma_vol, make_labels, uniqueness_weights


def _flat(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.full(n, 100.0)
    return c.copy(), c.copy(), c


def test_triple_barrier_first_touch_and_adverse_wins() -> None:
    h, lo, c = _flat(10)
    sig = np.full(10, 0.01)  # width = 0.01·√4 = 0.02 in log terms
    spec = LabelSpec(kind="triple_barrier", horizon=4, k_up=1.0, k_down=1.0, vertical="drop")
    h[2] = 100 * math.exp(0.025)  # bar 2: profit-take touched
    lab = make_labels(h, lo, c, spec, sigma=sig)
    assert lab.y[0, 0] == 1.0 and lab.end[0, 0] == 2
    assert lab.y[0, 1] == 1.0 and lab.end[0, 1] == 2
    assert np.isnan(lab.y[0, 2]) and lab.end[0, 2] == -1  # nothing touched after bar 2 → dropped
    lo[2] = 100 * math.exp(-0.03)  # the same bar also touches the stop: adverse wins
    lab = make_labels(h, lo, c, spec, sigma=sig)
    assert lab.y[0, 0] == 0.0 and lab.end[0, 0] == 2 and lab.ret[0, 0] == pytest.approx(-0.02)
    assert np.isnan(lab.y[0, -4:]).all()  # the last N bars never have a label


def test_triple_barrier_vertical_sign() -> None:
    h, lo, c = _flat(8)
    c[3] = h[3] = 100.5  # inside the barriers, but up at the time limit
    lab = make_labels(h, lo, c, LabelSpec(horizon=3, vertical="sign"), sigma=np.full(8, 0.01))
    assert lab.y[0, 0] == 1.0 and lab.end[0, 0] == 3
    assert lab.y[0, 1] == 0.0 and lab.end[0, 1] == 4  # flat at the limit (ret 0) is not up
    lab2 = make_labels(h, lo, c, LabelSpec(horizon=2, vertical="sign"), sigma=np.full(8, 0.01))
    assert lab2.y[0, 3] == 0.0 and lab2.end[0, 3] == 5  # down (100.5 → 100) at the limit


def test_fixed_horizon_dead_zone() -> None:
    c = np.array([100.0, 100.0, 101.0, 100.05, 99.0, 99.0, 99.0])
    spec = LabelSpec(kind="fixed_horizon", horizon=2, dead_zone=0.5)
    lab = make_labels(c, c, c, spec, sigma=np.full(7, 0.01))  # band = 0.5·0.01·√2 ≈ 0.0071
    assert lab.y[0, 0] == 1.0  # +1.0%
    assert math.isnan(lab.y[0, 1])  # +0.05%: dead zone
    assert lab.y[0, 2] == 0.0 and lab.end[0, 2] == 4
    assert lab.end[0, 1] == -1


def ref_triple_barrier(h, lo, c, sig, n, k):  # plain loops
    out = []
    for t in range(len(c) - n):
        if not math.isfinite(sig[t]):
            out.append((math.nan, -1))
            continue
        w = k * sig[t] * math.sqrt(n)
        res = None
        for j in range(1, n + 1):
            if math.log(lo[t + j] / c[t]) <= -w:
                res = (0.0, t + j)
                break
            if math.log(h[t + j] / c[t]) >= w:
                res = (1.0, t + j)
                break
        if res is None:
            res = (1.0 if math.log(c[t + n] / c[t]) > 0 else 0.0, t + n)
        out.append(res)
    return out


def test_matches_loop_reference_on_real_data(btc_1h: AlignedKlines) -> None:
    b = btc_1h.slice(0, 1500)
    spec = LabelSpec(horizon=12, k_up=1.5, k_down=1.5)
    lab = make_labels(b.high, b.low, b.close, spec)
    sig = ewma_vol(b.close, spec.vol_span)[0]
    ref = ref_triple_barrier(b.high[0], b.low[0], b.close[0], sig, 12, 1.5)
    got = list(zip(lab.y[0, : len(ref)].tolist(), lab.end[0, : len(ref)].tolist(), strict=True))
    for (gy, ge), (ry, re) in zip(got, ref, strict=True):
        assert (math.isnan(gy) and math.isnan(ry)) or (gy == ry and ge == re)
    defined = lab.defined[0]
    assert 0.3 < np.nanmean(lab.y[0][defined]) < 0.7


def test_ewma_vol_uses_past_only(btc_1h: AlignedKlines) -> None:
    c = btc_1h.close[0, :600]
    v = ewma_vol(c, 48)
    c2 = c.copy()
    c2[400:] *= 1.3
    assert np.array_equal(v[0, :400], ewma_vol(c2, 48)[0, :400], equal_nan=True)


@pytest.mark.parametrize("kind", ["triple_barrier", "fixed_horizon"])
def test_no_lookahead_beyond_the_horizon(btc_1h: AlignedKlines, kind: str) -> None:
    b = btc_1h.slice(0, 2000)
    spec = LabelSpec(kind=kind, horizon=24)  # type: ignore[arg-type]
    lab = make_labels(b.high, b.low, b.close, spec)
    k = 1200
    rng = np.random.default_rng(1)
    h, lo, c = b.high.copy(), b.low.copy(), b.close.copy()
    f = np.exp(rng.normal(0, 0.05, size=c.shape[1] - k - 1))
    c[:, k + 1 :] *= f
    h[:, k + 1 :] = np.maximum(h[:, k + 1 :] * f * 1.02, c[:, k + 1 :])
    lo[:, k + 1 :] = np.minimum(lo[:, k + 1 :] * f * 0.98, c[:, k + 1 :])
    lab2 = make_labels(h, lo, c, spec)
    last = k - spec.horizon  # labels of bars <= k - N read bars <= k only
    assert np.array_equal(lab.y[:, : last + 1], lab2.y[:, : last + 1], equal_nan=True)
    assert np.array_equal(lab.end[:, : last + 1], lab2.end[:, : last + 1])
    assert not np.array_equal(lab.y[:, last + 1 : k], lab2.y[:, last + 1 : k], equal_nan=True)
    # purging info: every defined label ends within (t, t+N]
    t = np.arange(b.n_bars)
    d = lab.defined[0]
    assert np.all(lab.end[0][d] > t[d]) and np.all(lab.end[0][d] <= t[d] + spec.horizon)


def test_uniqueness_weights() -> None:
    w = uniqueness_weights(np.array([0, 1, 10]), np.array([2, 3, 12]), 20)
    # bars 1..2 covered by label 0 (bar 2 shared), label 1 covers 2..3
    assert w[0] == pytest.approx((1.0 + 0.5) / 2)
    assert w[1] == pytest.approx((0.5 + 1.0) / 2)
    assert w[2] == pytest.approx(1.0)


def test_spec_validation_and_roundtrip() -> None:
    with pytest.raises(ValueError):
        LabelSpec(horizon=0)
    s = LabelSpec(kind="fixed_horizon", horizon=6)
    assert LabelSpec.from_dict(s.to_dict()) == s

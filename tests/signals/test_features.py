"""Features: independent cross-checks (plain Python loops), no look-ahead, incremental == full."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from signals.data import AlignedKlines
from signals.features import FeatureConfig, FeatureEngine, compute_features, return_windows


def ref_rsi(close: list[float], n: int = 14) -> list[float]:
    out = [math.nan] * len(close)
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    ag = sum(gains[:n]) / n
    al = sum(losses[:n]) / n
    for i in range(n, len(close)):
        if i > n:
            ag = (ag * (n - 1) + gains[i - 1]) / n
            al = (al * (n - 1) + losses[i - 1]) / n
        out[i] = 100.0 - 100.0 / (1.0 + ag / al) if al > 0 else 100.0
    return out


def ref_ema(x: list[float], n: int) -> list[float]:
    a = 2.0 / (n + 1)
    out = [x[0]]
    for v in x[1:]:
        out.append(out[-1] * (1 - a) + a * v)
    return out


def ref_atr(high: list[float], low: list[float], close: list[float], n: int = 14) -> list[float]:
    tr = [math.nan] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]
    out = [math.nan] * len(close)
    atr = sum(tr[1 : n + 1]) / n
    out[n] = atr
    for i in range(n + 1, len(close)):
        atr = (atr * (n - 1) + tr[i]) / n
        out[i] = atr
    return out


@pytest.fixture(scope="module")
def frame(bars3: AlignedKlines):
    return compute_features(bars3)


def test_names_and_shape(bars3: AlignedKlines, frame) -> None:
    f, _ = frame
    assert f.values.shape == (3, bars3.n_bars, len(FeatureConfig().names()))
    assert f.names == FeatureConfig().names()
    assert f.valid[:, 100:].all()  # warm-up is short (HTF RSI needs 15 closed 4h bars)
    assert not f.valid[:, :40].any()


def test_rsi_macd_bollinger_atr_match_reference(bars3: AlignedKlines, frame) -> None:
    f, _ = frame
    for s in range(3):
        c = bars3.close[s].tolist()
        h = bars3.high[s].tolist()
        lo = bars3.low[s].tolist()
        rsi = np.array(ref_rsi(c)) / 100.0
        np.testing.assert_allclose(f.column("rsi_14")[s][14:], rsi[14:], rtol=1e-9, atol=1e-12)
        ef, es = ref_ema(c, 12), ref_ema(c, 26)
        line = [a - b for a, b in zip(ef, es, strict=True)]
        sig = ref_ema(line, 9)
        w = slice(35, None)
        cc = np.array(c)
        np.testing.assert_allclose(f.column("macd")[s][w], (np.array(line) / cc)[w], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(
            f.column("macd_signal")[s][w], (np.array(sig) / cc)[w], rtol=1e-6, atol=1e-11
        )
        hist = (np.array(line) - np.array(sig)) / cc
        np.testing.assert_allclose(f.column("macd_hist")[s][w], hist[w], rtol=1e-6, atol=1e-10)
        bbz, bbw = [], []
        for i in range(19, len(c)):
            win = c[i - 19 : i + 1]
            m, sd = statistics.fmean(win), statistics.pstdev(win)
            bbz.append((c[i] - m) / sd)
            bbw.append(4 * sd / m)
        np.testing.assert_allclose(f.column("bb_z")[s][19:], bbz, rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(f.column("bb_width")[s][19:], bbw, rtol=1e-7)
        atr = np.array(ref_atr(h, lo, c)) / cc
        np.testing.assert_allclose(f.column("atr_14")[s][14:], atr[14:], rtol=1e-9)
        lr = np.diff(np.log(cc))
        for wnd in (1, 6, 48):
            np.testing.assert_allclose(f.column(f"ret_{wnd}")[s][48:], np.log(cc[48:] / cc[48 - wnd : -wnd]))
        rv = [statistics.pstdev(lr[i - 24 : i].tolist()) for i in range(24, len(cc))]
        np.testing.assert_allclose(f.column("rvol_24")[s][24:], rv, rtol=1e-7)
        lv = np.log1p(bars3.volume[s])
        vz = [(lv[i] - lv[i - 47 : i + 1].mean()) / lv[i - 47 : i + 1].std() for i in range(47, len(cc))]
        np.testing.assert_allclose(f.column("volume_z_48")[s][47:], vz, rtol=1e-7, atol=1e-9)


def test_higher_timeframe_uses_closed_4h_bars_only(bars3: AlignedKlines, frame) -> None:
    f, _ = frame
    h4 = 4 * 3_600_000
    closes_4h = (bars3.open_time_ms + 3_600_000) % h4 == 0  # bar that closes a 4h bar
    idx4 = np.flatnonzero(closes_4h)
    c = bars3.close[1]
    c4 = c[idx4]
    rsi4 = np.array(ref_rsi(c4.tolist())) / 100.0
    for t in range(200, bars3.n_bars, 37):
        k = int(np.searchsorted(idx4, t, side="right")) - 1  # last closed 4h bar at or before t
        assert idx4[k] <= t
        assert f.column("htf_ret_1")[1, t] == pytest.approx(math.log(c4[k] / c4[k - 1]), rel=1e-12)
        assert f.column("htf_rsi_14")[1, t] == pytest.approx(rsi4[k], rel=1e-9)


def test_btc_context(bars3: AlignedKlines, frame) -> None:
    f, _ = frame
    assert np.array_equal(f.column("btc_ret_24")[2], f.column("ret_24")[0], equal_nan=True)
    np.testing.assert_allclose(
        f.column("rel_ret_24")[1, 60:], f.column("ret_24")[1, 60:] - f.column("ret_24")[0, 60:]
    )
    with pytest.raises(ValueError, match="BTC"):
        FeatureEngine(("ETHUSDT",), "1h")
    alone, _ = compute_features(bars3.slice(0, 500), FeatureConfig(btc_symbol=None))
    assert "btc_ret_1" not in alone.names


def _perturb_future(bars: AlignedKlines, k: int, seed: int) -> AlignedKlines:
    """Replace every bar after index k with different (but valid) bars; keep the time grid."""
    rng = np.random.default_rng(seed)
    n = bars.n_bars - k - 1
    scale = np.exp(rng.normal(0, 0.05, size=(len(bars.symbols), n)))
    c = bars.close.copy()
    c[:, k + 1 :] *= scale
    o = bars.open.copy()
    o[:, k + 1 :] *= scale[:, ::-1]
    h = np.maximum(bars.high.copy(), np.maximum(o, c))
    h[:, k + 1 :] *= 1.01
    lo = np.minimum(bars.low.copy(), np.minimum(o, c))
    lo[:, k + 1 :] *= 0.99
    v = bars.volume.copy()
    v[:, k + 1 :] = rng.uniform(0, 1e6, size=(len(bars.symbols), n))
    return AlignedKlines(bars.symbols, bars.timeframe, bars.open_time_ms, o, h, lo, c, v)


@pytest.mark.parametrize("k", [150, 1234, 2500])
def test_no_lookahead_changing_the_future(bars3: AlignedKlines, frame, k: int) -> None:
    f, _ = frame
    g, _ = compute_features(_perturb_future(bars3, k, seed=k))
    assert np.array_equal(f.values[:, : k + 1], g.values[:, : k + 1], equal_nan=True)
    assert not np.array_equal(f.values[:, k + 1 :], g.values[:, k + 1 :], equal_nan=True)
    # truncating the future entirely gives the same past as well
    h, _ = compute_features(bars3.slice(0, k + 1))
    assert np.array_equal(f.values[:, : k + 1], h.values, equal_nan=True)


def test_incremental_update_is_bit_identical_to_full(bars3: AlignedKlines, frame) -> None:
    f, _ = frame
    start = 1800
    _, engine = compute_features(bars3.slice(0, start))
    for i in range(start, start + 300):
        row = engine.update(
            int(bars3.open_time_ms[i]),
            bars3.high[:, i],
            bars3.low[:, i],
            bars3.close[:, i],
            bars3.volume[:, i],
        )
        assert np.array_equal(row, f.values[:, i], equal_nan=True), i
    # from an empty engine, bar by bar from the first bar (warm-up NaNs identical too)
    e2 = FeatureEngine(bars3.symbols, "1h")
    for i in range(120):
        row = e2.update(
            int(bars3.open_time_ms[i]),
            bars3.high[:, i],
            bars3.low[:, i],
            bars3.close[:, i],
            bars3.volume[:, i],
        )
        assert np.array_equal(row, f.values[:, i], equal_nan=True), i
    # two blocks == one block
    _, e3 = compute_features(bars3.slice(0, 1000))
    rest = e3.run(bars3.slice(1000, 1500))
    assert np.array_equal(rest.values, f.values[:, 1000:1500], equal_nan=True)


def test_update_refuses_a_gap(bars3: AlignedKlines) -> None:
    _, engine = compute_features(bars3.slice(0, 200))
    with pytest.raises(ValueError, match="does not follow"):
        engine.update(
            int(bars3.open_time_ms[201]),
            bars3.high[:, 201],
            bars3.low[:, 201],
            bars3.close[:, 201],
            bars3.volume[:, 201],
        )


def test_features_are_scale_free(bars3: AlignedKlines, frame) -> None:
    f, _ = frame
    k = 1000.0
    scaled = AlignedKlines(
        bars3.symbols,
        "1h",
        bars3.open_time_ms,
        bars3.open * k,
        bars3.high * k,
        bars3.low * k,
        bars3.close * k,
        bars3.volume,
    )
    g, _ = compute_features(scaled)
    np.testing.assert_allclose(g.values, f.values, rtol=1e-6, atol=1e-9)


def test_return_windows() -> None:
    c = np.exp(np.cumsum(np.arange(10, dtype=float) / 100))
    w = return_windows(c, np.array([3, 9]), 4)
    assert np.isnan(w[0, 0]) and w[0, 1:].tolist() == pytest.approx([0.01, 0.02, 0.03])
    assert w[1].tolist() == pytest.approx([0.06, 0.07, 0.08, 0.09])

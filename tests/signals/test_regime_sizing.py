"""Regime detection and volatility-target sizing (pure functions)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest

from signals.features import FeatureConfig, compute_features
from signals.regime import Regime, RegimeThresholds, classify, regime_codes, regime_of
from signals.sizing import SizingConfig, volatility_target_notional

NAMES = ("ret_24", "rvol_24", "macd_hist")


def row(ret: float, sig: float, hist: float) -> np.ndarray:
    return np.array([ret, sig, hist])


def test_regime_thresholds() -> None:
    sig = 0.005  # 0.5 % per hour → 2.45 % per day: calm
    step = sig * math.sqrt(24)
    assert regime_of(row(1.2 * step, sig, 1e-4), NAMES) is Regime.TRENDING_UP
    assert regime_of(row(-1.2 * step, sig, -1e-4), NAMES) is Regime.TRENDING_DOWN
    assert regime_of(row(0.5 * step, sig, 1e-4), NAMES) is Regime.RANGING
    # exactly at the threshold counts as a trend
    assert regime_of(row(1.0 * step, sig, 0.0), NAMES) is Regime.TRENDING_UP
    # MACD pointing the other way vetoes the trend (unless disabled)
    assert regime_of(row(1.5 * step, sig, -1e-4), NAMES) is Regime.RANGING
    loose = RegimeThresholds(require_macd_agree=False)
    assert regime_of(row(1.5 * step, sig, -1e-4), NAMES, thresholds=loose) is Regime.TRENDING_UP
    # 1.2 % per hour → 5.9 % per day: volatile beats trend
    assert regime_of(row(3 * 0.012 * math.sqrt(24), 0.012, 1e-4), NAMES) is Regime.VOLATILE
    # the same per-bar σ on a daily timeframe is calm
    assert regime_of(row(0.0, 0.012, 0.0), NAMES, timeframe="1d") is Regime.RANGING
    assert regime_of(row(float("nan"), sig, 0.0), NAMES) is Regime.UNKNOWN
    with pytest.raises(ValueError, match="rvol_24"):
        regime_of(np.array([0.0, 0.0]), ("ret_24", "macd_hist"))


def test_regime_on_real_features(bars3) -> None:
    frame, _ = compute_features(bars3, FeatureConfig())
    codes = regime_codes(frame.values, frame.names, bars3.timeframe)
    assert codes.shape == frame.valid.shape
    assert np.all(codes[frame.valid] < 4)  # every warmed-up row gets a real regime
    share = np.bincount(codes[frame.valid], minlength=4) / frame.valid.sum()
    assert np.all(share > 0.02), share  # all four regimes occur on 2024 BTC/ETH/SOL
    assert share[2] > 0.3  # ranging is the most common state
    last = classify(frame.values[:, -1], frame.names, bars3.timeframe)
    assert len(last) == 3 and all(isinstance(r, Regime) for r in last)


CFG = SizingConfig(
    risk_fraction=Decimal("0.01"),
    stop_sigmas=Decimal(1),
    horizon_bars=16,
    max_notional_per_trade_usdt=Decimal(200),
    min_notional_usdt=Decimal(5),
)


def test_sizing_volatility_target() -> None:
    # equity 1000, risk 1 % = 10 USDT; σ 0.5 %/bar × √16 = 2 % stop → 500 USDT → capped at 200
    r = volatility_target_notional(Decimal(1000), 0.005, CFG)
    assert r.notional_usdt == Decimal(200) and r.reason == "capped"
    assert r.target_usdt == Decimal(500)
    # σ 2.5 %/bar → 10 % stop → 100 USDT, below the cap
    r = volatility_target_notional(Decimal(1000), 0.025, CFG)
    assert r.notional_usdt == Decimal(100) and r.reason == "ok" and isinstance(r.notional_usdt, Decimal)
    # doubling σ halves the size; scale multiplies it
    assert volatility_target_notional(Decimal(1000), 0.05, CFG).notional_usdt == Decimal(50)
    assert volatility_target_notional(Decimal(1000), 0.025, CFG, scale=0.5).notional_usdt == Decimal(50)
    # rounded down to the cent, never up
    r = volatility_target_notional(Decimal(1000), 0.03, CFG)
    assert r.notional_usdt == Decimal("83.33")


def test_sizing_zero_when_target_cannot_be_met() -> None:
    # equity 50, risk 0.5 USDT, 10 % stop → 5 USDT target: exactly the minimum → allowed
    assert volatility_target_notional(Decimal(50), 0.025, CFG).notional_usdt == Decimal(5)
    # equity 40 → 4 USDT target < 5 minimum: a minimum trade would over-risk → zero
    r = volatility_target_notional(Decimal(40), 0.025, CFG)
    assert r.notional_usdt == 0 and not r.tradable and "minimum notional" in r.reason
    for eq, sig in (
        (Decimal(0), 0.01),
        (Decimal(-5), 0.01),
        (Decimal(1000), float("nan")),
        (Decimal(1000), 0.0),
    ):
        assert volatility_target_notional(eq, sig, CFG).notional_usdt == 0
    assert volatility_target_notional(Decimal(1000), 0.01, CFG, scale=0.0).notional_usdt == 0
    # a stop wider than the price is not a stop
    assert volatility_target_notional(Decimal(1000), 0.3, CFG).notional_usdt == 0
    with pytest.raises(ValueError):
        SizingConfig(risk_fraction=Decimal(0))

"""Position size by volatility targeting, within the governor's limits. Pure; money is `Decimal`.

The trade risks a fixed fraction of equity at its stop. The stop sits `stop_sigmas` · σ·√N below
(or above) the entry — the triple-barrier stop of the label the models were trained on — so

    notional = equity · risk_fraction / (stop_sigmas · σ_bar · √N) · scale

where σ_bar is the per-bar volatility (e.g. the `rvol_24` feature) and `scale` ∈ [0, 1] an optional
multiplier (e.g. from confidence). Then:

* clamped to the governor's per-trade cap (`RiskPolicy.max_notional_per_trade_usdt`);
* rounded **down** to `step` USDT;
* **zero** when the result is below the venue's minimum notional: a minimum-size trade would risk
  more than the target, so the target can't be met and the trade is skipped (never rounded up);
* zero for non-finite or non-positive σ, equity or scale.

The result carries the reason, for the decision log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, InvalidOperation

ZERO = Decimal(0)


@dataclass(frozen=True)
class SizingConfig:
    risk_fraction: Decimal = Decimal("0.005")  # of equity, lost if the stop is hit
    stop_sigmas: Decimal = Decimal(1)  # stop distance in σ·√N (the label's k_down)
    horizon_bars: int = 24  # N: the label's time limit
    max_notional_per_trade_usdt: Decimal = Decimal(200)  # the governor's per-trade cap
    min_notional_usdt: Decimal = Decimal(5)  # the venue's MIN_NOTIONAL for the symbol
    step_usdt: Decimal = Decimal("0.01")

    def __post_init__(self) -> None:
        if not (ZERO < self.risk_fraction <= 1):
            raise ValueError("risk_fraction must be in (0, 1]")
        if self.stop_sigmas <= 0 or self.horizon_bars < 1 or self.step_usdt <= 0:
            raise ValueError("stop_sigmas > 0, horizon_bars >= 1 and step_usdt > 0 are required")
        if self.max_notional_per_trade_usdt <= 0 or self.min_notional_usdt < 0:
            raise ValueError("max_notional_per_trade_usdt > 0 and min_notional_usdt >= 0 are required")


@dataclass(frozen=True)
class SizeResult:
    notional_usdt: Decimal  # 0 = do not trade
    reason: str  # "ok" | "capped" | why it is zero
    target_usdt: Decimal  # the unclamped volatility-target notional (0 when undefined)
    stop_distance: float  # stop as a fraction of price (stop_sigmas · σ·√N), NaN when undefined

    @property
    def tradable(self) -> bool:
        return self.notional_usdt > 0


def _dec(x: float) -> Decimal:
    return Decimal(repr(float(x)))


def volatility_target_notional(
    equity_usdt: Decimal,
    sigma_per_bar: float,
    config: SizingConfig | None = None,
    *,
    scale: float = 1.0,
) -> SizeResult:
    """USDT notional for one new position (see the module docstring)."""
    cfg = config or SizingConfig()
    nan = float("nan")
    try:
        equity = Decimal(equity_usdt)
    except (InvalidOperation, TypeError, ValueError):
        return SizeResult(ZERO, "invalid equity", ZERO, nan)
    if not equity.is_finite() or equity <= 0:
        return SizeResult(ZERO, "no equity", ZERO, nan)
    if not (math.isfinite(sigma_per_bar) and sigma_per_bar > 0):
        return SizeResult(ZERO, "volatility undefined", ZERO, nan)
    if not (math.isfinite(scale) and scale > 0):
        return SizeResult(ZERO, "scale is zero", ZERO, nan)
    stop = float(cfg.stop_sigmas) * sigma_per_bar * math.sqrt(cfg.horizon_bars)
    if stop >= 1.0:
        return SizeResult(ZERO, f"stop distance {stop:.2%} of price is not a usable stop", ZERO, stop)
    target = equity * cfg.risk_fraction / _dec(stop) * _dec(min(scale, 1.0))
    notional = min(target, cfg.max_notional_per_trade_usdt)
    reason = "capped" if target > cfg.max_notional_per_trade_usdt else "ok"
    notional = (notional / cfg.step_usdt).to_integral_value(rounding=ROUND_DOWN) * cfg.step_usdt
    if notional < cfg.min_notional_usdt or notional <= 0:
        return SizeResult(
            ZERO,
            f"target {target:.2f} USDT below the minimum notional {cfg.min_notional_usdt} "
            "(a minimum trade would risk more than the target)",
            target,
            stop,
        )
    return SizeResult(notional, reason, target, stop)

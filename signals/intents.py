"""An ensemble decision at a closed bar → a trade intent, or the reason there is none. Pure.

The intent trades the label the models learned: the stop sits `k_down`·σ·√N from the entry and the
take-profit `k_up`·σ·√N (σ = the bar's `rvol` feature, N = the label horizon); its notional comes
from `signals/sizing.py` (volatility targeting, capped by the governor's per-trade limit, zero below
the venue's minimum). The position workflow id derives from the symbol and the bar's open time only,
so deciding the same bar twice names the same workflow (whichever strategy the chooser picks).

The strategy (how the signal is traded: its exit profile) comes from the meta-strategy chooser
(`signals/strategy_chooser.py`); its exit overrides are merged with the label's: the stop is the
tighter of the two (sizing spent its risk budget on the label's stop, so a strategy may only tighten
it), and a strategy with its own take-profit ladder replaces the label's single take-profit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from signals.labels import LabelSpec
from signals.sizing import SizeResult, SizingConfig, volatility_target_notional
from trading.instruments import DEFAULT_RULES
from trading.intents import ExitOverrides, IntentSource, Side, TradeIntent

STRATEGY = "ensemble"  # the strategy without a chooser, and the name in position workflow ids


def size_for_label(
    symbol: str,
    sigma: float,
    equity: Decimal,
    label: LabelSpec,
    *,
    risk_fraction: Decimal,
    max_notional: Decimal,
) -> SizeResult:
    """The volatility-target notional of a trade whose stop is the label's lower barrier
    (`k_down`·σ·√horizon); zero below the venue's minimum notional for the symbol."""
    rules = DEFAULT_RULES.get(symbol)
    cfg = SizingConfig(
        risk_fraction=risk_fraction,
        stop_sigmas=Decimal(repr(label.k_down)),
        horizon_bars=label.horizon,
        max_notional_per_trade_usdt=max_notional,
        min_notional_usdt=rules.min_notional if rules else Decimal(5),
    )
    return volatility_target_notional(equity, sigma if math.isfinite(sigma) else math.nan, cfg)


def position_workflow_id(symbol: str, interval: str, bar_open_ms: int) -> str:
    return f"position-{symbol}-{STRATEGY}-{interval}-{bar_open_ms}"


@dataclass(frozen=True)
class IntentChoice:
    intent: TradeIntent | None
    reason: str  # why there is no intent, or "confidence 0.58 >= 0.55"


def _pct(fraction: float) -> Decimal:
    return Decimal(repr(round(fraction * 100, 4)))


def merge_exits(stop_pct: Decimal, take_pct: Decimal, strategy: ExitOverrides | None) -> ExitOverrides:
    """The label's stop and take-profit (percent from entry) combined with a strategy's overrides."""
    if strategy is None:
        return ExitOverrides(stop_loss_pct=stop_pct, take_profit_pct=take_pct)
    profile = dict(strategy.profile or {})
    own_stop = strategy.stop_loss_pct or profile.pop("stop_pct", None)
    stop = min(stop_pct, Decimal(str(own_stop))) if own_stop is not None else stop_pct
    take = strategy.take_profit_pct
    if take is None and "tp_levels" not in profile:
        take = take_pct
    return strategy.model_copy(
        update={"stop_loss_pct": stop, "take_profit_pct": take, "profile": profile or None}
    )


def choose_intent(
    *,
    symbol: str,
    side: str,
    confidence: float,
    kill_score: float,
    regime: str,
    threshold: float,
    size: SizeResult,
    k_up: float,
    k_down: float,
    leverage: int,
    intent_id: str,
    strategy: str = STRATEGY,
    strategy_exits: ExitOverrides | None = None,
) -> IntentChoice:
    """The intent for one decision when it clears `threshold` and sizing gives a tradable notional,
    traded as `strategy` (its exit overrides merged with the label's, see `merge_exits`)."""
    if side not in (Side.LONG, Side.SHORT):
        return IntentChoice(None, f"no side (confidence {confidence:.3f})")
    if confidence < threshold:
        return IntentChoice(None, f"confidence {confidence:.3f} below the threshold {threshold:.3f}")
    if not size.tradable:
        return IntentChoice(None, f"size: {size.reason}")
    stop = size.stop_distance
    take = stop * k_up / k_down if k_down > 0 else stop
    exits = merge_exits(_pct(stop), _pct(take), strategy_exits)
    intent = TradeIntent(
        symbol=symbol,
        side=Side(side),
        notional_usdt=size.notional_usdt,
        leverage=leverage,
        confidence=round(min(max(confidence, 0.0), 1.0), 6),
        kill_score=round(min(max(kill_score, 0.0), 1.0), 6),
        strategy=strategy,
        regime=regime,
        source=IntentSource.MODEL,
        intent_id=intent_id,
        exits=exits,
    )
    return IntentChoice(intent, f"confidence {confidence:.3f} >= {threshold:.3f}")

"""Decision → intent: only a side that clears the threshold with a tradable size becomes an intent, whose
stop and take-profit are the label's barriers and whose workflow id depends on symbol and bar only."""

from __future__ import annotations

from decimal import Decimal

from signals.intents import choose_intent, position_workflow_id
from signals.sizing import SizingConfig, volatility_target_notional
from trading.intents import IntentSource, Side

CFG = SizingConfig(horizon_bars=24, max_notional_per_trade_usdt=Decimal(200), min_notional_usdt=Decimal(100))


def choose(side: str = "LONG", confidence: float = 0.6, sigma: float = 0.005, equity: str = "10000"):
    size = volatility_target_notional(Decimal(equity), sigma, CFG)
    return choose_intent(
        symbol="BTCUSDT",
        side=side,
        confidence=confidence,
        kill_score=1 - confidence,
        regime="ranging",
        threshold=0.55,
        size=size,
        k_up=2.0,
        k_down=1.0,
        leverage=5,
        intent_id="BTCUSDT-1",
    )


def test_an_intent_carries_the_label_barriers_and_the_capped_size() -> None:
    c = choose()
    assert c.intent is not None and c.intent.side is Side.LONG and c.intent.source is IntentSource.MODEL
    assert c.intent.notional_usdt == Decimal(200)  # the target (≈ 1 700 USDT) capped by the governor's limit
    stop = 0.005 * 24**0.5  # k_down · σ · √N
    assert c.intent.exits is not None
    assert c.intent.exits.stop_loss_pct == Decimal(repr(round(stop * 100, 4)))
    assert c.intent.exits.take_profit_pct == Decimal(repr(round(2 * stop * 100, 4)))  # k_up / k_down = 2


def test_no_intent_without_side_confidence_or_size() -> None:
    assert choose(side="NONE").intent is None
    low = choose(confidence=0.54)
    assert low.intent is None and "below the threshold 0.550" in low.reason
    small = choose(equity="100")  # 100 · 0.5 % at a 2.4 % stop ≈ 20 USDT < the 100 USDT venue minimum
    assert small.intent is None and small.reason.startswith("size: target")
    assert choose(side="SHORT").intent.side is Side.SHORT  # type: ignore[union-attr]


def test_workflow_id_depends_on_symbol_and_bar_only() -> None:
    a = position_workflow_id("BTCUSDT", "1h", 1_700_000_000_000)
    assert a == position_workflow_id("BTCUSDT", "1h", 1_700_000_000_000)
    assert a != position_workflow_id("BTCUSDT", "1h", 1_700_003_600_000)
    assert a != position_workflow_id("ETHUSDT", "1h", 1_700_000_000_000)
    assert len(a) <= 64


def test_a_strategy_names_the_intent_and_may_only_tighten_the_stop() -> None:
    from signals.strategy_chooser import STRATEGIES
    from trading.exit_policy import resolve_profile
    from trading.exit_profile import ExitProfile

    size = volatility_target_notional(Decimal(10000), 0.005, CFG)
    label_stop = Decimal(repr(round(0.005 * 24**0.5 * 100, 4)))  # ≈ 2.45 %

    def with_strategy(name: str):
        c = choose_intent(
            symbol="BTCUSDT", side="LONG", confidence=0.6, kill_score=0.4, regime="ranging",
            threshold=0.55, size=size, k_up=2.0, k_down=1.0, leverage=5, intent_id="BTCUSDT-1",
            strategy=name, strategy_exits=STRATEGIES[name],
        )  # fmt: skip
        assert c.intent is not None and c.intent.strategy == name and c.intent.exits is not None
        profile, _ = resolve_profile(ExitProfile(), c.intent.exits, Side.LONG, Decimal(100))
        return c.intent.exits, profile

    exits, profile = with_strategy("trend")  # its ladder and trailing stop; the label's stop
    assert exits.stop_loss_pct == label_stop and exits.take_profit_pct is None
    assert [lv.at for lv in profile.tp_levels] == [Decimal(4), Decimal(8)] and profile.trailing_enabled
    exits, profile = with_strategy("scalp")  # its 1 % stop is tighter than the label's: it wins
    assert exits.stop_loss_pct == Decimal(1) and profile.stop_pct == Decimal(1)
    assert [lv.at for lv in profile.tp_levels] == [Decimal(1)] and profile.max_holding_seconds == 4 * 3600
    exits, profile = with_strategy("swing")  # the default profile with the label's barriers
    assert exits.stop_loss_pct == label_stop and exits.take_profit_pct == 2 * label_stop
    wide = choose_intent(
        symbol="BTCUSDT", side="LONG", confidence=0.6, kill_score=0.4, regime="ranging", threshold=0.55,
        size=volatility_target_notional(Decimal(10000), 0.001, CFG), k_up=2.0, k_down=1.0, leverage=5,
        intent_id="BTCUSDT-1", strategy="scalp", strategy_exits=STRATEGIES["scalp"],
    )  # fmt: skip
    assert wide.intent is not None and wide.intent.exits is not None
    assert wide.intent.exits.stop_loss_pct < 1  # a label stop tighter than the strategy's is kept

"""The exit engine, hit directly: a scripted path by hand, and properties over random paths."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from trading.exit_policy import ExitProfile, ExitState, evaluate, initial_state, trigger_levels
from trading.instruments import DEFAULT_RULES
from trading.intents import Side

D = Decimal
BTC = DEFAULT_RULES["BTCUSDT"]


def run(
    profile: ExitProfile,
    state: ExitState,
    side: Side,
    open_qty: Decimal,
    price: Decimal,
    leverage: int = 2,
    now: int = 0,
) -> tuple[list[tuple[str, Decimal, Decimal | None]], ExitState, Decimal]:
    """Evaluate until no action, executing closes; returns (reason, qty, new stop) per action."""
    done = []
    while True:
        action, state = evaluate(profile, state, side, open_qty, price, leverage, BTC, now)
        if action is None:
            return done, state, open_qty
        if action.kind == "close":
            open_qty -= action.quantity
        done.append((action.reason, action.quantity, action.new_stop))


def test_r_includes_fees() -> None:
    s = initial_state(Side.LONG, D(60000), D("0.004"), 2, D("0.096"), ExitProfile(), BTC)
    assert s.stop == D("58800.0") and s.hard_stop == D("58200.0")
    # 1200 × 0.004 + 0.096 entry fee + 58800 × 0.004 × 0.0004 exit fee at the stop = 4.99008 USDT
    assert s.r_price * D("0.004") == D("4.99008")


def test_scripted_path_harvest_be_tp1_ratchet_tp2_trailing() -> None:
    profile = ExitProfile(trailing_pct=D(3))
    state = initial_state(Side.LONG, D(60000), D("0.004"), 2, D("0.096"), profile, BTC)
    qty = D("0.004")
    above, below = trigger_levels(profile, state, Side.LONG, 2, BTC)
    assert (above, below) == (D("60600.0"), D("58800.0"))  # trailing arms at +1 %; the stop

    steps, state, qty = run(profile, state, Side.LONG, qty, D(60650))  # +650 ≥ 0.5 R (623.76)
    assert steps == [("harvest_1", D("0.001"), D(60000))]
    assert state.stop_kind == "breakeven_stop" and state.hard_stop == D("59400.0")

    steps, state, qty = run(profile, state, Side.LONG, qty, D(61200))
    assert steps == [("take_profit_1", D("0.001"), None)]  # ratchet to break-even: already there

    steps, state, qty = run(profile, state, Side.LONG, qty, D(62400))
    assert steps == [("take_profit_2", D("0.001"), D("61200.0"))]
    assert state.stop_kind == "ratchet_stop" and state.hard_stop == D("60588.0")

    steps, state, qty = run(profile, state, Side.LONG, qty, D(63500))
    assert steps == [] and state.stop == D("61595.0") and state.stop_kind == "trailing_stop"

    steps, state, qty = run(profile, state, Side.LONG, qty, D(61500))
    assert steps == [("trailing_stop", D("0.001"), None)] and qty == 0


def test_gap_through_several_levels_closes_each_once_and_never_more() -> None:
    profile = ExitProfile(trailing_pct=D(3))
    state = initial_state(Side.LONG, D(60000), D("0.004"), 2, D("0.096"), profile, BTC)
    steps, state, qty = run(profile, state, Side.LONG, D("0.004"), D(63000))
    assert [s[0] for s in steps] == ["take_profit_1", "take_profit_2", "harvest_1"]
    assert qty == D("0.001")


def test_short_side_mirrors() -> None:
    profile = ExitProfile(trailing_enabled=False)
    state = initial_state(Side.SHORT, D(3000), D("0.1"), 3, D("0.12"), profile, DEFAULT_RULES["ETHUSDT"])
    assert state.stop == D("3060.00") and state.hard_stop == D("3090.00")
    action, _ = evaluate(profile, state, Side.SHORT, D("0.1"), D("3061"), 3, DEFAULT_RULES["ETHUSDT"], 0)
    assert action is not None and action.reason == "stop_loss" and action.close_all


def test_emergency_and_time_exit() -> None:
    profile = ExitProfile(max_margin_loss_pct=D(10), max_holding_seconds=60)
    state = initial_state(Side.LONG, D(60000), D("0.004"), 10, D("0.096"), profile, BTC, opened_at_ms=0)
    action, _ = evaluate(profile, state, Side.LONG, D("0.004"), D(59390), 10, BTC, 1000)  # -1.02 % × 10
    assert action is not None and action.reason == "emergency_max_margin_loss"
    action, _ = evaluate(profile, state, Side.LONG, D("0.004"), D(60010), 10, BTC, 61_000)
    assert action is not None and action.reason == "time_exit"


prices = st.lists(st.integers(50_000, 70_000), min_size=1, max_size=60)


@settings(max_examples=300, deadline=None)
@given(prices, st.sampled_from([Side.LONG, Side.SHORT]), st.integers(1, 20), st.integers(1, 12))
def test_properties_over_random_paths(path: list[int], side: Side, leverage: int, steps: int) -> None:
    profile = ExitProfile()
    qty = BTC.round_qty(D(steps) * D("0.001"))
    state = initial_state(side, D(60000), qty, leverage, D("0.1"), profile, BTC)
    open_qty, closed = qty, D(0)
    for i, p in enumerate(path):
        price = D(p)
        for _ in range(10):
            before, snapshot = state.stop, state.model_dump()
            given_state = state
            action, state = evaluate(profile, state, side, open_qty, price, leverage, BTC, i * 1000)
            assert given_state.model_dump() == snapshot, "evaluate changed the state it was given"
            assert (state.stop - before) * side.sign >= 0, "the stop loosened"
            if action is None:
                break
            if action.kind == "close":
                assert 0 < action.quantity <= open_qty, "closes more than is open"
                assert BTC.is_on_qty_step(action.quantity, market=True)
                open_qty -= action.quantity
                closed += action.quantity
                assert open_qty == 0 or open_qty >= BTC.market_min_qty, "left a remainder below min qty"
            assert BTC.is_on_tick(state.stop) and BTC.is_on_tick(state.hard_stop)
        if open_qty == 0:
            break
        above, below = trigger_levels(profile, state, side, leverage, BTC)
        for level in (above, below):
            assert level is None or BTC.is_on_tick(level)
    assert closed + open_qty == qty

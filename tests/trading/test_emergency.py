"""The automatic emergency stop: every rule with its figures, recovery after the cool-off, operator moves,
and random event sequences that must never leave HALTED without an operator, recover before the
cool-off, or make a move the table does not list."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from trading.emergency import (
    DAY_MS,
    SEVERITY,
    TRANSITIONS,
    Cause,
    EmergencyEvent,
    EmergencyPolicy,
    EquityMark,
    EssState,
    OperatorCommand,
    OrderOutcome,
    Rule,
    Thresholds,
    Tick,
    TradeClosed,
    Transition,
    VenueHealth,
    allows_entries,
    breaches,
    emergency_run,
    emergency_step,
    must_flatten,
    size_factor,
)
from trading.governor import EmergencyState
from trading.intents import Side
from trading.records import ClosedTrade

ES = EmergencyState
D = Decimal
MIN = 60_000
HOUR = 3_600_000
POLICY = EmergencyPolicy()


def run(events: list[EmergencyEvent], policy: EmergencyPolicy = POLICY, start: EssState | None = None):
    return emergency_run(start or EssState(), events, policy)


def loss(at: int, pnl: str = "-10", stop: bool = False) -> TradeClosed:
    return TradeClosed(at_ms=at, realized_pnl=D(pnl), stop_out=stop)


def equity(at: int, value: str) -> EquityMark:
    return EquityMark(at_ms=at, equity=D(value))


def op(at: int, to: ES, reason: str = "checked") -> OperatorCommand:
    return OperatorCommand(at_ms=at, to=to, reason=reason, operator="alice")


# ------------------------------------------------------------------------------------------------ rules
def test_drawdown_levels_from_the_peak() -> None:
    s, moved = run([equity(0, "1000"), equity(1, "1100"), equity(2, "1040")])
    assert s.state is ES.WARNING and s.equity_peak == D(1100)
    (t,) = moved
    assert (t.from_state, t.to_state, t.cause, t.rule) == (ES.NORMAL, ES.WARNING, Cause.RULE, "drawdown")
    assert "5.45 %" in t.reason and "1100" in t.reason and "5.00 %" in t.reason
    assert t.breaches[0].measured == "5.45" and t.breaches[0].limit == "5.00"
    s, moved = emergency_step(s, equity(3, "980"), POLICY)  # 10.9 %
    assert s.state is ES.CRITICAL and moved[0].from_state is ES.WARNING
    s, moved = emergency_step(s, equity(4, "880"), POLICY)  # 20 %
    assert s.state is ES.HALTED and "20.00 %" in moved[0].reason


def test_escalation_jumps_straight_to_the_worst_level() -> None:
    s, moved = run([equity(0, "1000"), equity(1, "790")])
    assert s.state is ES.HALTED
    assert [(t.from_state, t.to_state) for t in moved] == [(ES.NORMAL, ES.HALTED)]


def test_daily_loss_counts_today_only() -> None:
    day = 5 * DAY_MS
    s, moved = run([loss(day + 1, "-30"), loss(day + 2, "+5"), loss(day + 3, "-25")])
    assert s.day_realized == D(-50) and s.state is ES.WARNING
    assert moved[0].rule == "daily_loss" and "50.00 USDT ≥ 50.00 USDT" in moved[0].reason
    # Next day: a fresh day's loss; a late trade from yesterday is not today's loss.
    s2, _ = emergency_step(s, loss(day + DAY_MS + 1, "-10"), POLICY)
    assert s2.day_realized == D(-10)
    s3, _ = emergency_step(s2, loss(day + 4, "-500"), POLICY)
    assert s3.day_realized == D(-10)
    assert s3.losing_streak == 3  # it still counts for the streak


def test_daily_loss_critical() -> None:
    s, moved = run([loss(1, "-100")])
    assert s.state is ES.CRITICAL and moved[0].breaches[0].rule is Rule.DAILY_LOSS


def test_losing_streak_resets_on_a_win_and_ignores_zero() -> None:
    policy = POLICY.model_copy(update={"daily_loss_usdt": Thresholds[Decimal]()})
    s, _ = run([loss(1, "-1"), loss(2, "-1"), loss(3, "0"), loss(4, "2")], policy)
    assert s.losing_streak == 0 and s.state is ES.NORMAL
    s, moved = run([loss(i, "-1") for i in range(1, 4)], policy)
    assert s.state is ES.WARNING and moved[0].rule == "losing_streak"
    assert "3 losing trades in a row ≥ 3" in moved[0].reason
    s, moved = run([loss(i, "-1") for i in range(1, 6)], policy)
    assert s.state is ES.CRITICAL and moved[-1].rule == "losing_streak"


def test_stop_outs_in_a_window() -> None:
    policy = EmergencyPolicy(
        daily_loss_usdt=Thresholds[Decimal](), losing_streak=Thresholds[int](), stop_out_window_seconds=3600
    )
    # Three stop-outs, but the first left the window before the third.
    s, moved = run([loss(0, stop=True), loss(30 * MIN, stop=True), loss(HOUR, stop=True)], policy)
    assert s.state is ES.NORMAL and len(s.stop_outs_ms) == 2 and not moved
    s, moved = emergency_step(s, loss(HOUR + 1, stop=True), policy)
    assert s.state is ES.WARNING and moved[0].rule == "stop_outs"
    assert "3 stop-outs in the last 3600 s ≥ 3" in moved[0].reason


def test_failed_order_rate_needs_enough_orders() -> None:
    s, moved = run([OrderOutcome(at_ms=i, failed=True) for i in range(3)])
    assert s.state is ES.NORMAL and not moved  # 3 of 3 is below the minimum sample of 4
    s, moved = emergency_step(s, OrderOutcome(at_ms=4, failed=False), POLICY)
    assert s.state is ES.CRITICAL  # 3 of 4 = 0.75 ≥ 0.5
    assert "3 of 4 orders failed" in moved[0].reason and moved[0].rule == "failed_orders"


def test_failed_orders_leave_the_window() -> None:
    events = [OrderOutcome(at_ms=0, failed=True), *(OrderOutcome(at_ms=i, failed=False) for i in range(1, 4))]
    s, _ = run(events)
    assert s.state is ES.WARNING  # 1 of 4 = 0.25
    s, _ = emergency_step(s, Tick(at_ms=15 * MIN), POLICY)
    assert len(s.orders) == 3


def test_venue_ban_and_outage() -> None:
    s, moved = run([VenueHealth(at_ms=0, condition="outage", active=True)])
    assert s.state is ES.WARNING and moved[0].rule == "venue_outage"
    s, moved = emergency_step(s, VenueHealth(at_ms=10_000, condition="ban", active=True), POLICY)
    assert s.state is ES.CRITICAL and moved[0].rule == "venue_ban"
    s, _ = emergency_step(s, VenueHealth(at_ms=20_000, condition="ban", active=False), POLICY)
    assert s.venue_down == {"outage": 0}
    off = POLICY.model_copy(update={"venue_outage_level": ES.NORMAL})
    s, moved = run([VenueHealth(at_ms=0, condition="outage", active=True)], off)
    assert s.state is ES.NORMAL and not moved


def test_late_reports_do_not_overwrite_newer_ones() -> None:
    s, _ = run([equity(0, "1000"), equity(10, "960"), equity(5, "1050")])
    assert s.equity == D(960) and s.equity_peak == D(1050)  # the old high raises the peak only
    assert s.drawdown_pct == pytest.approx(D("8.571"), abs=D("0.001")) and s.state is ES.WARNING
    assert not s.new_high_since_entered
    ban, ended_late = (
        VenueHealth(at_ms=20, condition="ban", active=True),
        VenueHealth(at_ms=15, condition="ban", active=False),
    )
    s, _ = run([ban, ended_late])
    assert s.venue_down == {"ban": 20} and s.state is ES.CRITICAL


def test_gates_by_state() -> None:
    assert size_factor(ES.NORMAL, POLICY) == 1
    assert size_factor(ES.WARNING, POLICY) == D("0.5")
    assert size_factor(ES.CRITICAL, POLICY) == 0 == size_factor(ES.HALTED, POLICY)
    assert [allows_entries(s) for s in ES] == [True, True, False, False]
    assert [must_flatten(s) for s in ES] == [False, False, False, True]


def test_trade_closed_from_a_record() -> None:
    trade = ClosedTrade(
        trade_id="t1",
        symbol="BTCUSDT",
        side=Side.LONG,
        strategy="s",
        source="model",
        quantity=D(1),
        entry_price=D(100),
        exit_price=D(98),
        opened_at_ms=0,
        closed_at_ms=5,
        realized_pnl=D(-2),
        gross_pnl=D(-2),
        fees=D(0),
        exit_reason="stop_loss",
    )
    ev = TradeClosed.from_trade(trade)
    assert ev.stop_out and ev.at_ms == 5 and ev.realized_pnl == D(-2) and ev.symbol == "BTCUSDT"
    assert not TradeClosed.from_trade(trade.model_copy(update={"exit_reason": "take_profit_1"})).stop_out


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="must not decrease"):
        EmergencyPolicy(drawdown_pct=Thresholds[Decimal](warning=D(10), critical=D(5)))
    with pytest.raises(ValueError, match="positive"):
        EmergencyPolicy(losing_streak=Thresholds[int](warning=0))
    with pytest.raises(ValueError, match="fractions"):
        EmergencyPolicy(failed_order_rate=Thresholds[Decimal](warning=D(2)))
    with pytest.raises(ValueError, match="warning_size_factor"):
        EmergencyPolicy(warning_size_factor=D(0))


# --------------------------------------------------------------------------------------------- recovery
def test_warning_recovers_after_cool_off_and_a_new_high() -> None:
    s, _ = run([equity(0, "1000"), equity(MIN, "940")])
    assert s.state is ES.WARNING
    s, moved = emergency_step(s, equity(2 * MIN, "1000"), POLICY)  # back at the peak, but too soon
    assert s.state is ES.WARNING and not moved and s.new_high_since_entered
    # The drawdown lasted until the mark that showed it gone (2 min): the cool-off counts from there.
    s, moved = emergency_step(s, Tick(at_ms=2 * MIN + HOUR - 1), POLICY)
    assert s.state is ES.WARNING and not moved
    s, moved = emergency_step(s, Tick(at_ms=2 * MIN + HOUR), POLICY)
    assert s.state is ES.NORMAL
    (t,) = moved
    assert t.cause is Cause.RECOVERY and "3600 s" in t.reason and "peak 1000" in t.reason


def test_no_return_to_normal_without_a_new_high() -> None:
    s, _ = run([equity(0, "1000"), equity(MIN, "940"), equity(2 * MIN, "990")])
    s, moved = emergency_step(s, Tick(at_ms=10 * HOUR), POLICY)
    assert s.state is ES.WARNING and not moved
    relaxed = POLICY.model_copy(update={"recovery_requires_new_high": False})
    s, moved = emergency_step(s, Tick(at_ms=10 * HOUR), relaxed)
    assert s.state is ES.NORMAL and moved[0].cause is Cause.RECOVERY


def test_a_breach_restarts_the_cool_off() -> None:
    policy = POLICY.model_copy(update={"recovery_requires_new_high": False})
    s, _ = run([VenueHealth(at_ms=0, condition="outage", active=True)], policy)
    s, _ = emergency_step(s, VenueHealth(at_ms=50 * MIN, condition="outage", active=False), policy)
    s, moved = emergency_step(s, Tick(at_ms=HOUR + 1), policy)  # entered 1 h ago, but breached 10 min ago
    assert s.state is ES.WARNING and not moved
    s, moved = emergency_step(s, Tick(at_ms=50 * MIN + HOUR), policy)
    assert s.state is ES.NORMAL


def test_critical_steps_down_through_warning() -> None:
    policy = POLICY.model_copy(update={"recovery_requires_new_high": False})
    s, _ = run([VenueHealth(at_ms=0, condition="ban", active=True)], policy)
    assert s.state is ES.CRITICAL
    s, _ = emergency_step(s, VenueHealth(at_ms=MIN, condition="ban", active=False), policy)
    s, moved = emergency_step(s, Tick(at_ms=MIN + HOUR), policy)
    assert s.state is ES.WARNING and moved[0].cause is Cause.RECOVERY
    s, moved = emergency_step(s, Tick(at_ms=MIN + HOUR + 1), policy)
    assert s.state is ES.WARNING and not moved  # WARNING needs its own cool-off
    s, moved = emergency_step(s, Tick(at_ms=MIN + 2 * HOUR), policy)
    assert s.state is ES.NORMAL


def test_halted_is_left_only_by_an_operator() -> None:
    s, _ = run([equity(0, "1000"), equity(1, "700")])
    assert s.state is ES.HALTED
    s, moved = emergency_step(s, equity(2, "2000"), POLICY)
    s, moved = emergency_step(s, Tick(at_ms=100 * DAY_MS), POLICY)
    assert s.state is ES.HALTED and not moved
    s, moved = emergency_step(s, op(100 * DAY_MS + 1, ES.NORMAL, "flattened, reviewed"), POLICY)
    assert s.state is ES.NORMAL
    (t,) = moved
    assert t.cause is Cause.OPERATOR and t.operator == "alice" and "reviewed" in t.reason


def test_operator_de_escalation_acknowledges_the_losses() -> None:
    s, _ = run([equity(0, "1000"), equity(1, "850"), *(loss(i) for i in range(2, 7))])
    assert s.state is ES.CRITICAL
    s, _ = emergency_step(s, op(10, ES.NORMAL), POLICY)
    assert s.equity_peak == D(850) and s.losing_streak == 0 and s.day_realized == 0
    s, moved = emergency_step(s, Tick(at_ms=11), POLICY)
    assert s.state is ES.NORMAL and not moved
    # A fact still true re-escalates at the next event.
    s, _ = emergency_step(s, VenueHealth(at_ms=12, condition="ban", active=True), POLICY)
    s, _ = emergency_step(s, op(13, ES.NORMAL), POLICY)
    assert s.venue_down == {"ban": 12}
    s, moved = emergency_step(s, Tick(at_ms=14), POLICY)
    assert s.state is ES.CRITICAL and moved[0].rule == "venue_ban"


def test_operator_can_escalate_and_a_same_state_command_is_nothing() -> None:
    s, moved = emergency_step(EssState(), op(5, ES.HALTED, "manual halt"), POLICY)
    assert s.state is ES.HALTED and moved[0].cause is Cause.OPERATOR
    s2, moved = emergency_step(s, op(6, ES.HALTED), POLICY)
    assert s2.state is ES.HALTED and not moved


def test_a_restart_resumes_the_state() -> None:
    s, _ = run([equity(0, "1000"), equity(1, "940")])
    resumed = EssState.model_validate_json(s.model_dump_json())
    assert resumed == s and resumed.state is ES.WARNING


def test_table_shape() -> None:
    assert set(TRANSITIONS) == set(ES)
    for src, moves in TRANSITIONS.items():
        assert src not in moves
        for dst, causes in moves.items():
            assert Cause.OPERATOR in causes
            if SEVERITY[dst] > SEVERITY[src]:
                assert Cause.RULE in causes and Cause.RECOVERY not in causes
            else:
                assert Cause.RULE not in causes
                assert (Cause.RECOVERY in causes) == (
                    SEVERITY[src] - SEVERITY[dst] == 1 and src is not ES.HALTED
                )
    assert all(causes == {Cause.OPERATOR} for causes in TRANSITIONS[ES.HALTED].values())


def test_the_table_guards_every_move() -> None:
    from trading.emergency import IllegalEmergencyTransition, _move

    halted = EssState(state=ES.HALTED)
    with pytest.raises(IllegalEmergencyTransition, match="HALTED → NORMAL is not a legal recovery move"):
        _move(halted, ES.NORMAL, Cause.RECOVERY, rule="recovery", reason="x", now=1)
    with pytest.raises(IllegalEmergencyTransition):
        _move(EssState(state=ES.CRITICAL), ES.NORMAL, Cause.RECOVERY, rule="recovery", reason="x", now=1)
    with pytest.raises(IllegalEmergencyTransition):
        _move(EssState(state=ES.WARNING), ES.NORMAL, Cause.RULE, rule="drawdown", reason="x", now=1)


def test_breaches_lists_everything_worst_first() -> None:
    s, _ = run([equity(0, "1000"), equity(1, "850"), loss(2, "-60")])
    found = breaches(s, POLICY)
    assert [(b.rule, b.level) for b in found] == [(Rule.DRAWDOWN, ES.CRITICAL), (Rule.DAILY_LOSS, ES.WARNING)]


# ------------------------------------------------------------------------------------------- properties
def _events() -> st.SearchStrategy[tuple[int, EmergencyEvent]]:
    """(time step, event) pairs; times are filled in by the test (mostly forward, sometimes late)."""
    pnl = st.integers(-80, 60).map(D)
    return st.one_of(
        st.builds(lambda p, s: ("trade", p, s), pnl, st.booleans()),
        st.builds(lambda f: ("order", f), st.booleans()),
        st.builds(lambda c, a: ("venue", c, a), st.sampled_from(["ban", "outage"]), st.booleans()),
        st.builds(lambda e: ("equity", e), st.integers(600, 1400).map(D)),
        st.builds(lambda to: ("operator", to), st.sampled_from(list(ES))),
        st.just(("tick",)),
    )


def _make(spec: tuple, at: int) -> EmergencyEvent:
    kind = spec[0]
    if kind == "trade":
        return TradeClosed(at_ms=at, realized_pnl=spec[1], stop_out=spec[2])
    if kind == "order":
        return OrderOutcome(at_ms=at, failed=spec[1])
    if kind == "venue":
        return VenueHealth(at_ms=at, condition=spec[1], active=spec[2])
    if kind == "equity":
        return EquityMark(at_ms=at, equity=spec[1])
    if kind == "operator":
        return OperatorCommand(at_ms=at, to=spec[1], reason="test")
    return Tick(at_ms=at)


sequences = st.lists(st.tuples(_events(), st.integers(-120, 1800)), max_size=60)
policies = st.builds(
    lambda cool, high, ban, outage: EmergencyPolicy(
        cool_off_seconds=cool, recovery_requires_new_high=high, venue_ban_level=ban, venue_outage_level=outage
    ),
    st.sampled_from([0, 60, 600, 3600]),
    st.booleans(),
    st.sampled_from(list(ES)),
    st.sampled_from(list(ES)),
)
starts = st.sampled_from(list(ES))


def _check_step(
    before: EssState, event: EmergencyEvent, after: EssState, moved: list[Transition], policy
) -> None:
    assert len(moved) <= 1
    if not moved:
        assert after.state is before.state
        return
    (t,) = moved
    # Transitions follow the legal table, carry a reason, and chain.
    assert t.cause in TRANSITIONS[t.from_state][t.to_state]
    assert t.reason.strip() and t.rule.strip()
    assert t.from_state is before.state and t.to_state is after.state
    assert t.at_ms == after.clock_ms == after.entered_ms
    # HALTED is never left without an explicit operator transition.
    if before.state is ES.HALTED:
        assert isinstance(event, OperatorCommand) and t.cause is Cause.OPERATOR
    if isinstance(event, OperatorCommand):
        assert t.cause is Cause.OPERATOR and t.to_state is event.to
        return
    if SEVERITY[t.to_state] > SEVERITY[t.from_state]:
        assert t.cause is Cause.RULE and t.breaches and t.breaches[0].level is t.to_state
        assert t.breaches[0].rule.value == t.rule
    else:
        # No automatic de-escalation before the cool-off, and only one step down.
        assert t.cause is Cause.RECOVERY
        assert SEVERITY[t.from_state] - SEVERITY[t.to_state] == 1
        assert t.at_ms - before.entered_ms >= policy.cool_off_seconds * 1000
        assert all(SEVERITY[b.level] <= SEVERITY[t.to_state] for b in breaches(after, policy))


@settings(max_examples=200, deadline=None)
@given(sequences, policies, starts)
@example(  # a loss, then a win stamped a second earlier: recovered at the state's clock, not the event's
    seq=[(("trade", Decimal("-50"), False), 1), (("trade", Decimal("1"), False), -1)],
    policy=EmergencyPolicy(
        cool_off_seconds=0,
        recovery_requires_new_high=False,
        venue_ban_level=ES.NORMAL,
        venue_outage_level=ES.NORMAL,
    ),
    start=ES.NORMAL,
)
def test_random_sequences_keep_the_rules(seq, policy: EmergencyPolicy, start: ES) -> None:
    ess = EssState(state=start)
    at = 0
    # The test's own record, kept apart from the module's: the last time a breach at each severity
    # was seen (before or after an event), and whether a new equity high came since the last move.
    seen: dict[int, int] = {}
    high = False
    for spec, step in seq:
        at = max(0, at + step * 1000)
        event = _make(spec, at)
        after, moved = emergency_step(ess, event, policy)
        _check_step(ess, event, after, moved, policy)
        assert EssState.model_validate_json(after.model_dump_json()) == after
        # an event older than the state's clock is applied at the clock (time never runs back), so the
        # record below keeps the module's time, not the event's
        now = after.clock_ms
        if isinstance(event, EquityMark) and (ess.equity_peak is None or event.equity >= ess.equity_peak):
            high = True
        if moved and moved[0].cause is Cause.RECOVERY:
            left = SEVERITY[moved[0].from_state]
            quiet_from = left if moved[0].to_state is not ES.NORMAL else 1
            last = max((t for sev, t in seen.items() if sev >= quiet_from), default=None)
            assert last is None or now - last >= policy.cool_off_seconds * 1000
            if moved[0].to_state is ES.NORMAL and policy.recovery_requires_new_high:
                assert high
        if moved and moved[0].cause is Cause.OPERATOR and SEVERITY[moved[0].to_state] < SEVERITY[ess.state]:
            seen.clear()  # acknowledged by the operator
        elif not isinstance(event, OperatorCommand):
            for b in (*breaches(ess, policy), *breaches(after, policy)):
                seen[SEVERITY[b.level]] = now
        if moved:
            high = False
        ess = after


@settings(max_examples=200, deadline=None)
@given(sequences, policies)
def test_halted_stays_halted_without_an_operator(seq, policy: EmergencyPolicy) -> None:
    ess = EssState(state=ES.HALTED)
    at = 0
    for spec, step in seq:
        if spec[0] == "operator":
            continue
        at = max(0, at + step * 1000)
        ess, _ = emergency_step(ess, _make(spec, at), policy)
        assert ess.state is ES.HALTED


@settings(max_examples=100, deadline=None)
@given(sequences, policies, st.integers(0, 60))
def test_a_restart_anywhere_changes_nothing(seq, policy: EmergencyPolicy, cut: int) -> None:
    events = []
    at = 0
    for spec, step in seq:
        at = max(0, at + step * 1000)
        events.append(_make(spec, at))
    whole, moved = emergency_run(EssState(), events, policy)
    first, moved_a = emergency_run(EssState(), events[:cut], policy)
    resumed = EssState.model_validate_json(first.model_dump_json())
    second, moved_b = emergency_run(resumed, events[cut:], policy)
    assert second == whole and moved_a + moved_b == moved

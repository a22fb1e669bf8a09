"""The risk layer as one composition: the governor's `decide` first, then the emergency stop, protections,
heat, concentration and allocation in that order, each refusal and cut naming its gate and figures;
`observe` folding what happened into the state; and properties over random books and requests (off means
`decide`, a cluster never passes its limit in any order of grants, HALTED holds without an operator)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from trading.allocation import AllocationPolicy, allocate
from trading.concentration import Clusters, ConcentrationPolicy, exposures_of, net_exposure
from trading.emergency import (
    EmergencyPolicy,
    EquityMark,
    OperatorCommand,
    OrderOutcome,
    Tick,
    VenueHealth,
)
from trading.governor import (
    Denial,
    EmergencyState,
    Gate,
    Grant,
    PortfolioBook,
    Reservation,
    ReservationRequest,
    RiskPolicy,
    apply_grant,
    decide,
    release,
)
from trading.intents import Side
from trading.protections import ProtectionPolicy
from trading.records import ClosedTrade
from trading.risk import (
    ClosedTradeEvent,
    RiskEvent,
    RiskLayerPolicy,
    RiskState,
    assess,
    decide_with_risk,
    observe,
    with_allocation,
    with_clusters,
)

D = Decimal
ES = EmergencyState
L, S = Side.LONG, Side.SHORT
HOUR = 3_600_000
T0 = 1_700_000_000_000  # an arbitrary moment (ms); day boundaries do not matter here
POLICY = RiskPolicy(allowlist=("*",), max_exec_per_hour=100, max_exec_per_5min=100, symbol_cooldown_seconds=0)
OFF = RiskLayerPolicy.off()
MAJORS = Clusters(groups=(("BTCUSDT", "ETHUSDT", "SOLUSDT"),))
_ids = iter(range(1, 10**9))


def req(symbol: str = "BTCUSDT", side: Side = L, notional: str | int = 200, holder: str | None = None):
    return ReservationRequest(
        holder_id=holder or f"h{next(_ids)}", symbol=symbol, side=side, notional_usdt=D(notional)
    )


def held(*items: tuple[str, Side, int]) -> PortfolioBook:
    book = PortfolioBook()
    for symbol, side, notional in items:
        r = req(symbol, side, notional)
        book.reservations[r.holder_id] = Reservation(
            holder_id=r.holder_id, symbol=symbol, side=side, notional_usdt=D(notional), reserved_at_ms=0
        )
    return book


def trade(symbol: str, closed: int, pnl: str = "-5", reason: str = "stop_loss") -> ClosedTrade:
    return ClosedTrade(
        trade_id=f"t{next(_ids)}",
        symbol=symbol,
        side=L,
        strategy="s",
        source="model",
        quantity=D(1),
        entry_price=D(100),
        exit_price=D(100) + D(pnl),
        opened_at_ms=max(0, closed - HOUR),
        closed_at_ms=closed,
        realized_pnl=D(pnl),
        gross_pnl=D(pnl),
        fees=D(0),
        exit_reason=reason,
    )


def only(**parts) -> RiskLayerPolicy:
    """The risk layer with only the named parts on."""
    return OFF.model_copy(update=parts)


def losing_streak(n: int, risk: RiskLayerPolicy, state: RiskState | None = None) -> RiskState:
    state = state or RiskState()
    for k in range(n):
        state, _ = observe(state, risk, ClosedTradeEvent(trade=trade("XRPUSDT", T0 + k)), T0 + k)
    return state


# ------------------------------------------------------------------------------------------ the gates
def test_emergency_warning_cuts_the_size_and_says_so() -> None:
    risk = only(emergency=EmergencyPolicy())
    state = losing_streak(3, risk)
    assert state.ess.state is ES.WARNING
    verdict = assess(PortfolioBook(), POLICY, risk, state, req(notional=200), T0 + HOUR)
    grant = verdict.decision
    assert isinstance(grant, Grant) and grant.notional_usdt == D(100) and grant.reduced_from == D(200)
    (cut,) = verdict.cuts
    assert cut.gate is Gate.EMERGENCY and (cut.from_usdt, cut.to_usdt) == (D(200), D(100))
    assert "WARNING cuts sizes ×0.5: 200 → 100" in cut.reason
    # A cut below the smallest grant is a refusal by the same gate, with the figures.
    small = decide_with_risk(PortfolioBook(), POLICY, risk, state, req(notional=8), T0 + HOUR)
    assert isinstance(small, Denial) and small.gate is Gate.EMERGENCY
    assert "8 → 4.0 USDT is below the smallest grant 5" in small.reason


@pytest.mark.parametrize(("streak", "to"), [(5, ES.CRITICAL)])
def test_emergency_critical_refuses_naming_the_rule(streak: int, to: EmergencyState) -> None:
    risk = only(emergency=EmergencyPolicy())
    state = losing_streak(streak, risk)
    assert state.ess.state is to and state.last_transition is not None
    denial = decide_with_risk(PortfolioBook(), POLICY, risk, state, req(), T0 + HOUR)
    assert isinstance(denial, Denial) and denial.gate is Gate.EMERGENCY
    assert "CRITICAL" in denial.reason and "5 losing trades in a row ≥ 5" in denial.reason


def test_halted_refuses_and_only_an_operator_leaves_it() -> None:
    risk = only(emergency=EmergencyPolicy())
    state, moved = observe(RiskState(), risk, EquityMark(at_ms=T0, equity=D(10_000)), T0)
    state, moved = observe(state, risk, EquityMark(at_ms=T0 + 1, equity=D(7_000)), T0 + 1)
    assert state.ess.state is ES.HALTED and moved[0].rule == "drawdown" and "30.00 %" in moved[0].reason
    denial = decide_with_risk(PortfolioBook(), POLICY, risk, state, req(), T0 + 2)
    assert isinstance(denial, Denial) and denial.gate is Gate.EMERGENCY and "HALTED" in denial.reason
    state, _ = observe(state, risk, EquityMark(at_ms=T0 + 10 * HOUR, equity=D(20_000)), T0 + 10 * HOUR)
    assert state.ess.state is ES.HALTED  # a new high is not an operator
    cmd = OperatorCommand(at_ms=T0 + 11 * HOUR, to=ES.NORMAL, reason="looked at it", operator="ann")
    state, moved = observe(state, risk, cmd, T0 + 11 * HOUR)
    assert state.ess.state is ES.NORMAL and moved[0].operator == "ann"
    assert isinstance(decide_with_risk(PortfolioBook(), POLICY, risk, state, req(), T0 + 12 * HOUR), Grant)


def test_protection_lock_refuses_with_its_rule() -> None:
    risk = only(protections=ProtectionPolicy())
    state = RiskState()
    for k in (0, 1):  # two stop-outs within the hour
        state, _ = observe(state, risk, ClosedTradeEvent(trade=trade("ETHUSDT", T0 + k * 60_000)), T0)
    denial = decide_with_risk(PortfolioBook(), POLICY, risk, state, req("ETHUSDT"), T0 + 120_000)
    assert isinstance(denial, Denial) and denial.gate is Gate.SYMBOL_PROTECTION
    assert "stop_out_guard lock for 3540 s more" in denial.reason and "2 stop-outs" in denial.reason
    # Other symbols are free; the lock ends when it says.
    assert isinstance(decide_with_risk(PortfolioBook(), POLICY, risk, state, req("BTCUSDT"), T0), Grant)
    later = T0 + 60_000 + 3600_000
    assert isinstance(decide_with_risk(PortfolioBook(), POLICY, risk, state, req("ETHUSDT"), later), Grant)


def test_heat_counts_the_books_entries() -> None:
    risk = only(concentration=ConcentrationPolicy(max_entries_per_window=2, heat_window_seconds=900))
    book = PortfolioBook()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        r = req(symbol, notional=10)
        apply_grant(book, r, decide(book, POLICY, r, T0), T0)
    denial = decide_with_risk(book, POLICY, risk, RiskState(), req("SOLUSDT", notional=10), T0 + 899_999)
    assert isinstance(denial, Denial) and denial.gate is Gate.HEAT
    assert denial.reason == "2 entries across the book in the last 900 s (limit 2)"
    assert isinstance(
        decide_with_risk(book, POLICY, risk, RiskState(), req("SOLUSDT", notional=10), T0 + 900_000), Grant
    )


def test_cluster_share_shrinks_then_refuses_naming_the_cluster() -> None:
    risk = only(concentration=ConcentrationPolicy())  # symbol 25 % (500), cluster 50 % (1000) of 2000
    state = with_clusters(RiskState(), MAJORS, T0)
    book = held(("BTCUSDT", L, 200), ("ETHUSDT", L, 200), ("XRPUSDT", L, 200))
    policy = POLICY.model_copy(update={"max_notional_per_trade_usdt": D(700)})
    verdict = assess(book, policy, risk, state, req("SOLUSDT", L, 700), T0)
    assert isinstance(verdict.decision, Grant) and verdict.decision.notional_usdt == D(500)
    assert (
        verdict.cuts[0].gate is Gate.SYMBOL_CONCENTRATION
    )  # the symbol's 500 is tighter than the cluster's 600
    book = held(("BTCUSDT", L, 500), ("ETHUSDT", L, 400))
    verdict = assess(book, policy, risk, state, req("SOLUSDT", L, 300), T0)
    assert isinstance(verdict.decision, Grant) and verdict.decision.notional_usdt == D(100)
    (cut,) = verdict.cuts
    assert cut.gate is Gate.CLUSTER_CONCENTRATION
    assert "cluster ['BTCUSDT', 'ETHUSDT', 'SOLUSDT']: net exposure 900 USDT, limit 1000.0" in cut.reason
    full = held(("BTCUSDT", L, 500), ("ETHUSDT", L, 500))
    denial = decide_with_risk(full, policy, risk, state, req("SOLUSDT", L, 200), T0)
    assert isinstance(denial, Denial) and denial.gate is Gate.CLUSTER_CONCENTRATION
    assert "['BTCUSDT', 'ETHUSDT', 'SOLUSDT']" in denial.reason and "1000 → 1200" in denial.reason
    # A hedge is not adding: granted whole.
    assert decide_with_risk(full, policy, risk, state, req("SOLUSDT", S, 200), T0).notional_usdt == D(200)


def test_allocation_cap_per_symbol() -> None:
    risk = only(allocation=AllocationPolicy())
    targets = allocate({"BTCUSDT": 0.02, "ETHUSDT": 0.04, "DOGEUSDT": None}, D(600), AllocationPolicy())
    state = with_allocation(RiskState(), targets, T0)
    assert state.allocation == {"BTCUSDT": D("150.00"), "DOGEUSDT": D(0), "ETHUSDT": D("150.00")}
    verdict = assess(PortfolioBook(), POLICY, risk, state, req("BTCUSDT", notional=200), T0)
    assert verdict.decision.notional_usdt == D("150.00") and verdict.cuts[0].gate is Gate.ALLOCATION
    assert "BTCUSDT: allocation cap 150.00 USDT, 0 held: 200 → 150.00 USDT" in verdict.cuts[0].reason
    for symbol in ("DOGEUSDT", "SOLUSDT"):  # no usable volatility / not allocated at all: nothing
        denial = decide_with_risk(PortfolioBook(), POLICY, risk, state, req(symbol), T0)
        assert isinstance(denial, Denial) and denial.gate is Gate.ALLOCATION
        assert "is below the smallest grant" in denial.reason
    # Before any targets exist, there is no cap.
    assert decide_with_risk(
        PortfolioBook(), POLICY, risk, RiskState(), req("SOLUSDT"), T0
    ).notional_usdt == D(200)


def test_gates_in_order_and_governor_first() -> None:
    risk = RiskLayerPolicy(concentration=ConcentrationPolicy(max_entries_per_window=1))
    state = losing_streak(5, risk)  # CRITICAL, and XRPUSDT locked by its stop-outs
    book = held(("BTCUSDT", L, 100))
    book.executions_ms["BTCUSDT"] = [T0]
    # The governor's own refusal comes first and is returned unchanged.
    again = req("BTCUSDT")
    assert decide_with_risk(book, POLICY, risk, state, again, T0) == decide(book, POLICY, again, T0)
    assert decide(book, POLICY, again, T0).gate is Gate.SYMBOL_OPEN
    # Then the emergency stop before the protection lock and the heat.
    now = T0 + 10  # after the five trades closed
    assert decide_with_risk(book, POLICY, risk, state, req("XRPUSDT"), now).gate is Gate.EMERGENCY
    calm = state.model_copy(update={"ess": state.ess.model_copy(update={"state": ES.NORMAL})})
    assert decide_with_risk(book, POLICY, risk, calm, req("XRPUSDT"), now).gate is Gate.SYMBOL_PROTECTION
    assert decide_with_risk(book, POLICY, risk, calm, req("ETHUSDT"), now).gate is Gate.HEAT


def test_repeats_and_adoptions_keep_their_answer_in_an_emergency() -> None:
    risk = RiskLayerPolicy()
    state = losing_streak(5, risk)
    book = PortfolioBook()
    r = req("BTCUSDT", notional=150)
    apply_grant(book, r, decide(book, POLICY, r, T0), T0)
    again = decide_with_risk(book, POLICY, risk, state, r, T0 + 1)
    assert isinstance(again, Grant) and again.notional_usdt == D(150)
    adopt = ReservationRequest(
        holder_id="adopt", symbol="ETHUSDT", side=L, notional_usdt=D(90), adoption=True
    )
    assert isinstance(decide_with_risk(book, POLICY, risk, state, adopt, T0 + 1), Grant)


# ------------------------------------------------------------------------------------------ observing
def test_observe_folds_events_and_keeps_recent_trades() -> None:
    risk = RiskLayerPolicy()
    state, moved = observe(RiskState(), risk, OrderOutcome(at_ms=T0, failed=True), T0)
    assert moved == [] and state.ess.orders == ((T0, True),)
    state, _ = observe(state, risk, VenueHealth(at_ms=T0, condition="ban", active=True), T0)
    assert state.ess.state is ES.CRITICAL and state.last_transition.rule == "venue_ban"
    state, _ = observe(state, risk, ClosedTradeEvent(trade=trade("ETHUSDT", T0)), T0)
    assert [t.symbol for t in state.trades["ETHUSDT"]] == ["ETHUSDT"]
    later = T0 + risk.protections.history_ms + 1
    state, _ = observe(state, risk, Tick(at_ms=later), later)
    assert state.trades == {}  # older than any lock could use
    # Parts switched off keep nothing and never move.
    quiet, moved = observe(RiskState(), OFF, ClosedTradeEvent(trade=trade("ETHUSDT", T0)), T0)
    assert quiet == RiskState() and moved == []


def test_state_and_policy_are_serializable_and_validated() -> None:
    risk = RiskLayerPolicy()
    state = with_clusters(losing_streak(4, risk), MAJORS, T0)
    state = with_allocation(state, allocate({"BTCUSDT": 0.01}, D(1000), AllocationPolicy()), T0)
    assert RiskState.model_validate_json(state.model_dump_json()) == state
    assert RiskLayerPolicy.model_validate_json(risk.model_dump_json()) == risk
    event = TypeAdapter(RiskEvent).validate_python({"kind": "equity", "at_ms": 5, "equity": "10"})
    assert isinstance(event, EquityMark)
    with pytest.raises(ValidationError, match="correlation_threshold"):
        RiskLayerPolicy(correlation_threshold=2)
    with pytest.raises(ValidationError, match="max_cluster_share"):
        RiskLayerPolicy.model_validate(
            {"concentration": {"max_symbol_share": "0.5", "max_cluster_share": "0.3"}}
        )


# ------------------------------------------------------------------------------------------ properties
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
sides = st.sampled_from([L, S])
notionals = st.integers(1, 400).map(D)
requests = st.builds(
    lambda s, side, n, k: ReservationRequest(
        holder_id=f"r{next(_ids)}", symbol=s, side=side, notional_usdt=n, kill_score=k
    ),
    st.sampled_from(SYMBOLS),
    sides,
    notionals,
    st.sampled_from([0.0, 0.5, 0.9]),
)


@st.composite
def books(draw) -> PortfolioBook:
    book = PortfolioBook(emergency=draw(st.sampled_from(list(ES))))
    for k, (symbol, side, n) in enumerate(
        draw(st.lists(st.tuples(st.sampled_from(SYMBOLS), sides, notionals), max_size=6))
    ):
        book.reservations[f"b{k}"] = Reservation(
            holder_id=f"b{k}", symbol=symbol, side=side, notional_usdt=n, reserved_at_ms=0
        )
    for symbol in draw(st.lists(st.sampled_from(SYMBOLS), max_size=5)):
        book.executions_ms.setdefault(symbol, []).append(T0 - draw(st.integers(0, 2 * HOUR)))
    for symbol in draw(st.lists(st.sampled_from(SYMBOLS), max_size=2)):
        book.cooldown_until_ms[symbol] = T0 + draw(st.integers(-60_000, 60_000))
    return book


governor_policies = st.builds(
    lambda n, per, total, hour: RiskPolicy(
        allowlist=("*",),
        max_open_positions=n,
        max_notional_per_trade_usdt=D(per),
        max_total_notional_usdt=D(per + total),
        max_exec_per_hour=hour,
    ),
    st.integers(1, 8),
    st.integers(50, 400),
    st.integers(0, 2000),
    st.integers(0, 4),
)
# Everything on, but nothing measured yet and shares that cannot bind: the same as everything off.
permissive = RiskLayerPolicy(
    concentration=ConcentrationPolicy(max_symbol_share=D(1), max_cluster_share=D(1)), allocation=None
)


@settings(max_examples=300, deadline=None)
@given(books(), governor_policies, requests, st.sampled_from([OFF, permissive]), st.booleans())
def test_with_the_risk_layer_off_it_is_decide(
    book: PortfolioBook, policy: RiskPolicy, r: ReservationRequest, risk: RiskLayerPolicy, clustered: bool
) -> None:
    state = with_clusters(RiskState(), MAJORS, T0) if clustered else RiskState()
    assert decide_with_risk(book, policy, risk, state, r, T0) == decide(book, policy, r, T0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(requests, min_size=1, max_size=25),
    st.sampled_from([D("0.1"), D("0.25"), D("0.5")]),
    st.booleans(),
    st.data(),
)
def test_a_cluster_never_passes_its_limit_in_any_order(reqs, share: Decimal, releases: bool, data) -> None:
    """Without releases every cluster and symbol stays within its limit whatever the order of the
    grants; with releases (a released hedge may leave a cluster above it) a grant never takes one
    further past max(its net before, its limit)."""
    policy = RiskPolicy(
        allowlist=("*",),
        max_open_positions=50,
        max_exec_per_hour=100,
        max_exec_per_5min=100,
        symbol_cooldown_seconds=0,
        kill_score_open_threshold=1,
        max_total_notional_usdt=D(2000),
    )
    risk = only(concentration=ConcentrationPolicy(max_symbol_share=share / 2, max_cluster_share=share))
    state = with_clusters(RiskState(), MAJORS, T0)
    limits = {MAJORS.groups[0]: share * 2000, **{(s,): share / 2 * 2000 for s in SYMBOLS}}
    book = PortfolioBook()
    for k, r in enumerate(data.draw(st.permutations(reqs))):
        now = T0 + k
        before = {m: abs(net_exposure(exposures_of(book), m)) for m in limits}
        decision = decide_with_risk(book, policy, risk, state, r, now)
        if isinstance(decision, Grant):
            apply_grant(book, r, decision, now)
        for members, limit in limits.items():
            net = abs(net_exposure(exposures_of(book), members))
            assert net <= max(before[members], limit)
            if not releases:
                assert net <= limit
        if releases and book.reservations and data.draw(st.booleans()):
            release(book, policy, data.draw(st.sampled_from(sorted(book.reservations))), now)


ess_events = st.one_of(
    st.builds(
        lambda p, s, r: ("trade", p, s, r), st.integers(-80, 60), st.sampled_from(SYMBOLS), st.booleans()
    ),
    st.builds(lambda f: ("order", f), st.booleans()),
    st.builds(lambda c, a: ("venue", c, a), st.sampled_from(["ban", "outage"]), st.booleans()),
    st.builds(lambda e: ("equity", e), st.integers(5_000, 30_000)),
    st.just(("tick",)),
)


def _event(spec: tuple, at: int) -> object:
    kind = spec[0]
    if kind == "trade":
        reason = "stop_loss" if spec[3] else "take_profit"
        return ClosedTradeEvent(trade=trade(spec[2], at, str(spec[1]), reason))
    if kind == "order":
        return OrderOutcome(at_ms=at, failed=spec[1])
    if kind == "venue":
        return VenueHealth(at_ms=at, condition=spec[1], active=spec[2])
    if kind == "equity":
        return EquityMark(at_ms=at, equity=D(spec[1]))
    return Tick(at_ms=at)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(ess_events, st.integers(0, 6 * HOUR)), max_size=40), requests)
def test_halted_is_never_left_without_an_operator(events, r: ReservationRequest) -> None:
    risk = RiskLayerPolicy(emergency=EmergencyPolicy(cool_off_seconds=0, recovery_requires_new_high=False))
    state, _ = observe(RiskState(), risk, EquityMark(at_ms=T0, equity=D(10_000)), T0)
    state, _ = observe(state, risk, EquityMark(at_ms=T0, equity=D(5_000)), T0)
    assert state.ess.state is ES.HALTED
    now = T0
    for spec, gap in events:
        now += gap
        state, moved = observe(state, risk, _event(spec, now), now)
        assert state.ess.state is ES.HALTED and moved == []
        denial = decide_with_risk(PortfolioBook(), POLICY, risk, state, r, now)
        assert isinstance(denial, Denial)
        if isinstance(decide(PortfolioBook(), POLICY, r, now), Grant):  # else the governor's own refusal
            assert denial.gate is Gate.EMERGENCY

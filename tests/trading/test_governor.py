"""The portfolio gates, hit directly: every gate denies with its name, and no sequence of requests and
releases can exceed the slot or notional limits."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.governor import (
    FIVE_MIN_MS,
    Denial,
    EmergencyState,
    Gate,
    Grant,
    PortfolioBook,
    Reservation,
    ReservationRequest,
    RiskPolicy,
    adjust,
    apply_grant,
    decide,
    prune,
    release,
    restore_reservation,
)
from trading.intents import Side

ALL = RiskPolicy(allowlist=("*",), max_exec_per_hour=100, max_exec_per_5min=100, symbol_cooldown_seconds=0)


def req(holder: str, symbol: str = "BTCUSDT", notional: str = "100", kill: float = 0.0) -> ReservationRequest:
    return ReservationRequest(
        holder_id=holder, symbol=symbol, side=Side.LONG, notional_usdt=Decimal(notional), kill_score=kill
    )


def take(book: PortfolioBook, policy: RiskPolicy, r: ReservationRequest, now: int = 0) -> Grant | Denial:
    d = decide(book, policy, r, now)
    if isinstance(d, Grant):
        apply_grant(book, r, d, now)
    return d


def gate_of(d: Grant | Denial) -> Gate | None:
    return d.gate if isinstance(d, Denial) else None


def test_slots_are_a_hard_limit() -> None:
    book = PortfolioBook()
    policy = ALL.model_copy(update={"max_open_positions": 3})
    decisions = [take(book, policy, req(f"h{i}", f"S{i}USDT", "10")) for i in range(5)]
    assert [gate_of(d) for d in decisions] == [
        None,
        None,
        None,
        Gate.MAX_OPEN_POSITIONS,
        Gate.MAX_OPEN_POSITIONS,
    ]
    assert "3/3" in decisions[3].reason  # type: ignore[union-attr]
    release(book, policy, "h0", 1)
    assert isinstance(take(book, policy, req("h9", "S9USDT", "10"), 2), Grant)


def test_each_gate_names_itself() -> None:
    book = PortfolioBook()
    assert gate_of(decide(book, RiskPolicy(kill_switch=True), req("a"), 0)) is Gate.KILL_SWITCH
    assert gate_of(decide(book, RiskPolicy(), req("a", "ETHUSDT"), 0)) is Gate.ALLOWLIST
    assert gate_of(decide(book, RiskPolicy(), req("a", kill=0.9), 0)) is Gate.KILL_SCORE
    assert isinstance(decide(book, RiskPolicy(), req("a", kill=0.84), 0), Grant)
    halted = PortfolioBook(emergency=EmergencyState.HALTED)
    assert gate_of(decide(halted, RiskPolicy(), req("a"), 0)) is Gate.EMERGENCY


def test_one_position_per_symbol_and_repeat_is_idempotent() -> None:
    book = PortfolioBook()
    first = take(book, ALL, req("a"))
    assert isinstance(first, Grant)
    assert gate_of(take(book, ALL, req("b"))) is Gate.SYMBOL_OPEN
    again = take(book, ALL, req("a"))
    assert again == first and len(book.reservations) == 1


def test_adoption_passes_the_limits_but_never_takes_a_managed_symbol() -> None:
    """A venue position is adopted even into a full portfolio (it exists whatever the limits say), but
    not when a live workflow already holds its symbol: two managers would close it twice."""
    book = PortfolioBook()
    policy = ALL.model_copy(update={"max_open_positions": 1})
    assert isinstance(take(book, policy, req("a")), Grant)
    adopt_eth = req("adopted-eth", "ETHUSDT").model_copy(update={"adoption": True})
    over = take(book, policy, adopt_eth)
    assert isinstance(over, Grant) and over.over_limit is not None
    adopt_btc = req("adopted-btc").model_copy(update={"adoption": True})
    denied = take(book, policy, adopt_btc)
    assert gate_of(denied) is Gate.SYMBOL_OPEN and "managed by a" in denied.reason  # type: ignore[union-attr]
    assert sorted(book.reservations) == ["a", "adopted-eth"]


def test_per_trade_cap_reduces_and_total_budget_fills_up() -> None:
    book = PortfolioBook()
    policy = ALL.model_copy(
        update={"max_notional_per_trade_usdt": Decimal(200), "max_total_notional_usdt": Decimal(450)}
    )
    g1 = take(book, policy, req("a", "AUSDT", "500"))
    assert isinstance(g1, Grant) and g1.notional_usdt == 200 and g1.reduced_from == 500
    take(book, policy, req("b", "BUSDT", "200"))
    g3 = take(book, policy, req("c", "CUSDT", "200"))
    assert isinstance(g3, Grant) and g3.notional_usdt == 50
    assert gate_of(take(book, policy, req("d", "DUSDT", "200"))) is Gate.TOTAL_NOTIONAL
    assert book.total_notional == 450


def test_rate_limits_and_cooldown() -> None:
    policy = RiskPolicy(max_exec_per_5min=2, max_exec_per_hour=3, symbol_cooldown_seconds=60)
    book = PortfolioBook()
    t = 0
    for i in range(2):
        assert isinstance(take(book, policy, req(f"h{i}"), t), Grant)
        release(book, policy, f"h{i}", t)
        assert gate_of(decide(book, policy, req("x"), t + 59_000)) is Gate.COOLDOWN
        t += 61_000
    assert gate_of(decide(book, policy, req("x"), t)) is Gate.RATE_5MIN
    t += FIVE_MIN_MS
    assert isinstance(take(book, policy, req("h2"), t), Grant)
    release(book, policy, "h2", t)
    assert gate_of(decide(book, policy, req("x"), t + FIVE_MIN_MS)) is Gate.RATE_HOUR
    prune(book, t + 2 * 3_600_000)
    assert book.executions_ms == {} and book.cooldown_until_ms == {}


def test_release_is_exactly_once_and_adjust_only_shrinks() -> None:
    book = PortfolioBook()
    take(book, ALL, req("a", notional="150"))
    assert adjust(book, "a", Decimal("120")) and book.total_notional == 120
    assert not adjust(book, "a", Decimal("500")) and book.total_notional == 120
    assert release(book, ALL, "a", 0) is not None
    assert release(book, ALL, "a", 0) is None
    assert book.total_notional == 0


def test_policy_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="max_total_notional_usdt"):
        RiskPolicy(max_notional_per_trade_usdt=Decimal(500), max_total_notional_usdt=Decimal(100))
    with pytest.raises(ValueError, match="max_open_positions"):
        RiskPolicy(max_open_positions=0)


ops = st.lists(
    st.tuples(st.sampled_from(["req", "rel"]), st.integers(0, 40), st.integers(1, 400)), max_size=200
)


@settings(max_examples=200, deadline=None)
@given(ops, st.integers(1, 12), st.integers(50, 3000))
def test_no_sequence_exceeds_the_limits(seq: list[tuple[str, int, int]], slots: int, total: int) -> None:
    policy = ALL.model_copy(
        update={
            "max_open_positions": slots,
            "max_notional_per_trade_usdt": Decimal(min(200, total)),
            "max_total_notional_usdt": Decimal(total),
        }
    )
    book = PortfolioBook()
    for step, (op, n, size) in enumerate(seq):
        if op == "req":
            take(book, policy, req(f"h{n}", f"S{n % 17}USDT", str(size)), step)
        else:
            release(book, policy, f"h{n}", step)
        assert len(book.reservations) <= slots
        assert book.total_notional <= policy.max_total_notional_usdt
        symbols = [r.symbol for r in book.reservations.values()]
        assert len(symbols) == len(set(symbols))


index_ops = st.lists(
    st.tuples(st.sampled_from(["grant", "restore", "adjust", "release", "assign"]), st.integers(0, 9)),
    max_size=60,
)


@given(index_ops)
def test_the_books_index_agrees_with_its_reservations(seq: list[tuple[str, int]]) -> None:
    """total_notional and holder_of are kept as the book changes (5,000 admissions summed the book
    once per decision); a reservation added around the functions that keep them (`assign`) is seen too."""
    book = PortfolioBook()
    for step, (op, n) in enumerate(seq):
        holder, symbol, size = f"h{n}", f"S{n % 4}USDT", Decimal(10 + step)
        if op == "grant":
            apply_grant(book, req(holder, symbol), Grant(holder_id=holder, notional_usdt=size), step)
        elif op == "restore":
            restore_reservation(book, holder, symbol, Side.SHORT, size, step)
        elif op == "adjust":
            adjust(book, holder, Decimal(n))
        elif op == "release":
            release(book, ALL, holder, step)
        elif holder not in book.reservations:  # added around the functions (tests and bench do)
            book.reservations[holder] = Reservation(
                holder_id=holder, symbol=symbol, side=Side.LONG, notional_usdt=size, reserved_at_ms=step
            )
        held = list(book.reservations.values())
        assert book.total_notional == sum((r.notional_usdt for r in held), Decimal(0))
        for s in {f"S{k}USDT" for k in range(4)}:
            assert book.holder_of(s) == next((r for r in held if r.symbol == s), None)

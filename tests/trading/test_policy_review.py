"""The policy review's adviser (trading/policy_review.py): what it proposes from which facts, and that a
proposal is applied whole, validated, and only onto the policy it was made from."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading.emergency import Cause, EmergencyState, Transition
from trading.policy_review import (
    HEAT,
    SIZE_FACTOR,
    PolicyChange,
    ReviewFacts,
    apply_changes,
    propose,
    stale_changes,
    worst_state,
)
from trading.risk import RiskLayerPolicy

D = Decimal
ES = EmergencyState
BASE = RiskLayerPolicy()  # warning_size_factor 0.5, heat 5 per window


def facts(trades: int = 6, pnl: str = "0", now: ES = ES.NORMAL, worst: ES = ES.NORMAL) -> ReviewFacts:
    return ReviewFacts(
        window_hours=24, trades=trades, net_pnl_usdt=D(pnl), ess_now=now, ess_worst=worst, moves=0
    )


def knobs(policy: RiskLayerPolicy) -> tuple[Decimal, int]:
    assert policy.emergency is not None and policy.concentration is not None
    assert policy.concentration.max_entries_per_window is not None
    return policy.emergency.warning_size_factor, policy.concentration.max_entries_per_window


def test_trouble_tightens_both_knobs_with_the_reason() -> None:
    p = propose(BASE, facts(worst=ES.CRITICAL, now=ES.WARNING), BASE)
    assert [(c.path, c.old, c.new) for c in p.changes] == [(SIZE_FACTOR, D("0.5"), D("0.25")), (HEAT, 5, 2)]
    assert all("CRITICAL" in c.reason for c in p.changes)
    assert knobs(apply_changes(BASE, p.changes)) == (D("0.25"), 2)


def test_losing_trades_tighten_only_when_there_are_enough_of_them() -> None:
    assert propose(BASE, facts(trades=6, pnl="-1"), BASE).changes
    assert not propose(BASE, facts(trades=4, pnl="-100"), BASE).changes  # 4 trades are not a record


def test_recovery_restores_what_was_tightened_and_nothing_more() -> None:
    tight = apply_changes(BASE, propose(BASE, facts(worst=ES.HALTED), BASE).changes)
    back = propose(tight, facts(pnl="12", worst=ES.WARNING), BASE)
    assert [(c.path, c.new) for c in back.changes] == [(SIZE_FACTOR, D("0.5")), (HEAT, 5)]
    assert knobs(apply_changes(tight, back.changes)) == knobs(BASE)
    assert not propose(BASE, facts(pnl="12"), BASE).changes  # nothing is tighter than the baseline
    assert not propose(tight, facts(pnl="12", now=ES.WARNING, worst=ES.WARNING), BASE).changes


@given(st.lists(st.sampled_from([ES.CRITICAL, ES.HALTED]), max_size=12))
def test_repeated_tightening_stops_at_the_floors_and_stays_valid(rounds: list[ES]) -> None:
    policy = BASE
    for worst in rounds:
        policy = apply_changes(policy, propose(policy, facts(worst=worst), BASE).changes)
    size, heat = knobs(policy)
    assert size >= D("0.1") and heat >= 1


def test_a_proposal_is_stale_once_the_policy_changed_and_a_part_that_is_off_refuses_it() -> None:
    changes = propose(BASE, facts(worst=ES.CRITICAL), BASE).changes
    assert stale_changes(BASE, changes) == []
    edited = BASE.model_copy(
        update={"emergency": BASE.emergency.model_copy(update={"warning_size_factor": D("0.3")})}
    )  # type: ignore[union-attr]
    assert stale_changes(edited, changes) == ["emergency.warning_size_factor is 0.3, not 0.5"]
    with pytest.raises(ValueError, match="concentration part is off"):
        apply_changes(BASE.model_copy(update={"concentration": None}), changes)
    with pytest.raises(ValueError):  # validated whole: a size factor above 1 is not a policy
        apply_changes(BASE, (PolicyChange(path=SIZE_FACTOR, old=D("0.5"), new=D(2), reason="x"),))


def move(at_ms: int, src: ES, dst: ES) -> Transition:
    return Transition(
        from_state=src, to_state=dst, cause=Cause.RULE, rule="losing_streak", reason="r", at_ms=at_ms
    )


def test_the_worst_state_of_the_window_counts_the_state_it_began_in() -> None:
    moves = [move(100, ES.NORMAL, ES.CRITICAL), move(200, ES.CRITICAL, ES.WARNING)]
    assert worst_state(ES.WARNING, moves, since_ms=150) == (ES.CRITICAL, 1)  # CRITICAL when the window began
    assert worst_state(ES.WARNING, moves, since_ms=50) == (ES.CRITICAL, 2)
    assert worst_state(ES.NORMAL, [], since_ms=0) == (ES.NORMAL, 0)

"""The policy review: an adviser that reads what happened and proposes a change of the risk layer's policy
as a diff with its reasons. It never decides anything itself: a proposal changes the policy only when an
operator approves it (PolicyReviewWorkflow → the portfolio's validated `set_risk_policy` update), and a
proposal made from an older policy than the one in force is refused as stale.

`propose(policy, facts, baseline)` — pure, deterministic:

* **Tighten** after trouble: the emergency stop reached CRITICAL or HALTED in the window, or the window's
  closed trades (at least `min_trades`) lost money. New sizes under WARNING are halved again
  (`emergency.warning_size_factor`, not below 0.1) and, when heat is on, the entries allowed per window
  are halved (`concentration.max_entries_per_window`, not below 1).
* **Restore** after recovery: the stop is NORMAL and went no higher than WARNING in the window, the
  window's trades (at least `min_trades`) made money, and a tightened knob is below its `baseline`
  value: it goes back to the baseline.
* Otherwise nothing: an empty proposal.

`apply_changes` writes a proposal into a policy (validated whole, so a change can never produce an
invalid policy), and `stale_changes` names the changes whose old value is no longer the one in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trading.emergency import SEVERITY, EmergencyState, Transition
from trading.risk import RiskLayerPolicy

ES = EmergencyState
SIZE_FACTOR = ("emergency", "warning_size_factor")
HEAT = ("concentration", "max_entries_per_window")
MIN_SIZE_FACTOR = Decimal("0.1")


class ReviewFacts(BaseModel):
    """What the review reads: the journal's trades closed in the window and the stop's moves there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_hours: float = Field(gt=0)
    trades: int = Field(ge=0)
    net_pnl_usdt: Decimal
    ess_now: EmergencyState
    ess_worst: EmergencyState  # the highest state the stop was in during the window
    moves: int = Field(ge=0)  # moves of the stop in the window


class PolicyChange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: tuple[str, str]  # (part, field) of RiskLayerPolicy
    old: int | Decimal
    new: int | Decimal
    reason: str = Field(min_length=1)

    @property
    def name(self) -> str:
        return ".".join(self.path)


class Proposal(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    facts: ReviewFacts
    changes: tuple[PolicyChange, ...] = ()
    summary: str

    def as_markdown(self) -> str:
        lines = [f"**Policy review: {self.summary}**", ""]
        lines += [f"- `{c.name}`: {c.old} → {c.new} ({c.reason})" for c in self.changes]
        return "\n".join(lines)


def _get(policy: RiskLayerPolicy, path: tuple[str, str]) -> Any:
    part = getattr(policy, path[0])
    return None if part is None else getattr(part, path[1])


def propose(
    policy: RiskLayerPolicy, facts: ReviewFacts, baseline: RiskLayerPolicy, min_trades: int = 5
) -> Proposal:
    """See the module docstring."""
    enough = facts.trades >= min_trades
    trouble = SEVERITY[facts.ess_worst] >= SEVERITY[ES.CRITICAL]
    losing = enough and facts.net_pnl_usdt < 0
    recovered = (
        facts.ess_now is ES.NORMAL
        and SEVERITY[facts.ess_worst] <= SEVERITY[ES.WARNING]
        and enough
        and facts.net_pnl_usdt > 0
    )
    why = (
        f"the emergency stop reached {facts.ess_worst.value}"
        if trouble
        else f"{facts.trades} trades lost {-facts.net_pnl_usdt} USDT"
    )
    window = f"in the last {facts.window_hours:g} h"
    changes: list[PolicyChange] = []
    size, heat = _get(policy, SIZE_FACTOR), _get(policy, HEAT)
    if trouble or losing:
        if size is not None and size > MIN_SIZE_FACTOR:
            new = max(MIN_SIZE_FACTOR, size / 2)
            changes.append(PolicyChange(path=SIZE_FACTOR, old=size, new=new, reason=f"{why} {window}"))
        if heat is not None and heat > 1:
            changes.append(PolicyChange(path=HEAT, old=heat, new=max(1, heat // 2), reason=f"{why} {window}"))
        summary = f"tighten: {why} {window}" if changes else f"no change: {why}, but already at the floor"
    elif recovered:
        made = f"the stop stayed at or below WARNING and {facts.trades} trades made {facts.net_pnl_usdt} USDT"
        for path in (SIZE_FACTOR, HEAT):
            now, base = _get(policy, path), _get(baseline, path)
            if now is not None and base is not None and now < base:
                changes.append(PolicyChange(path=path, old=now, new=base, reason=f"{made} {window}"))
        summary = (
            f"restore: {made} {window}" if changes else "no change: nothing is tighter than the baseline"
        )
    else:
        summary = (
            f"no change: {facts.trades} trades, net {facts.net_pnl_usdt} USDT, stop {facts.ess_now.value}"
        )
    return Proposal(facts=facts, changes=tuple(changes), summary=summary)


def worst_state(
    now: EmergencyState, transitions: Sequence[Transition], since_ms: int
) -> tuple[EmergencyState, int]:
    """The highest state the stop was in since `since_ms` (the state it was in then included), and how
    many moves it made since (`transitions` in order)."""
    recent = [t for t in transitions if t.at_ms >= since_ms]
    states = [now, *(t.to_state for t in recent), *(t.from_state for t in recent[:1])]
    return max(states, key=SEVERITY.__getitem__), len(recent)


def stale_changes(policy: RiskLayerPolicy, changes: tuple[PolicyChange, ...]) -> list[str]:
    """The changes whose old value is not the one in force (the policy was edited since the proposal)."""
    return [
        f"{c.name} is {_get(policy, c.path)}, not {c.old}" for c in changes if _get(policy, c.path) != c.old
    ]


def apply_changes(policy: RiskLayerPolicy, changes: tuple[PolicyChange, ...]) -> RiskLayerPolicy:
    """The policy with the changes written in, validated whole (raises ValueError when invalid)."""
    raw = policy.model_dump(mode="json")
    for c in changes:
        part = raw.get(c.path[0])
        if part is None:
            raise ValueError(f"{c.name}: the {c.path[0]} part is off")
        part[c.path[1]] = c.new if not isinstance(c.new, Decimal) else str(c.new)
    return RiskLayerPolicy.model_validate(raw)

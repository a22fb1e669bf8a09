"""The risk layer as one pure composition: the governor's gates, then the emergency stop, protections,
heat, concentration and capital allocation, in a fixed order.

`assess(book, policy, risk, state, req, now_ms)` first asks `trading.governor.decide` exactly as the
portfolio does today, and returns its answer unchanged when it denies, when the holder already holds a
reservation (a repeated request gets its original answer) or when the request is an adoption (a venue
position exists whatever the limits say). A grant then passes the new gates, in this order:

1. emergency stop (`risk.emergency`): CRITICAL or HALTED deny (`Gate.EMERGENCY`, with the transition
   that led there); WARNING multiplies the size by `warning_size_factor`;
2. symbol protections (`risk.protections`): a locked symbol is denied (`Gate.SYMBOL_PROTECTION`);
3. heat (`risk.concentration.max_entries_per_window`): entries across the book in the window
   (`Gate.HEAT`);
4. concentration (`risk.concentration` shares): the grant shrinks to the room its symbol and its
   correlated cluster have left, or is denied (`Gate.SYMBOL_CONCENTRATION`, `Gate.CLUSTER_CONCENTRATION`);
5. allocation (`risk.allocation`, once `state.allocation` holds targets): the grant shrinks to the
   symbol's notional cap less what it holds, or is denied (`Gate.ALLOCATION`). A symbol without a target
   gets none (the allocation was not asked about it).

A size cut below the policy's `min_grant_usdt` is a denial by the gate that cut it. Every denial and
every cut names its gate and its figures. `decide_with_risk` is `assess(...).decision`; with every risk
policy off it is `decide`.

`observe(state, risk, event, now_ms)` folds what happened into the state: closed trades (the ESS and the
protections), order outcomes, venue health, equity marks, ticks and operator commands (the ESS, through
`emergency_step`, returning its transitions with their reasons). Heat counts the book's own entry times
(`PortfolioBook.executions_ms`, one hour kept; the heat window is at most one hour), so the state does
not keep a second copy that could disagree with the book.

Everything here is a small serializable value; nothing reads a clock or does I/O (time is an argument).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from trading.allocation import AllocationPolicy, AllocationTarget
from trading.balance import AccountBalance, BalancePolicy, balance_room, margin_refusal
from trading.concentration import (
    Clusters,
    ConcentrationPolicy,
    Exposure,
    check_concentration,
    concentration_room,
    entry_times,
    exposures_of,
    heat,
    net_exposure,
)
from trading.emergency import (
    EmergencyEvent,
    EmergencyPolicy,
    EquityMark,
    EssState,
    OperatorCommand,
    OrderOutcome,
    Tick,
    TradeClosed,
    Transition,
    VenueHealth,
    allows_entries,
    emergency_step,
    size_factor,
)
from trading.governor import (
    Decision,
    Denial,
    Gate,
    Grant,
    PortfolioBook,
    ReservationRequest,
    RiskPolicy,
    decide,
)
from trading.protections import ProtectionPolicy, symbol_lock
from trading.records import ClosedTrade

__all__ = [
    "ClosedTradeEvent",
    "RiskEvent",
    "RiskLayerPolicy",
    "RiskState",
    "RiskVerdict",
    "SizeCut",
    "assess",
    "decide_with_risk",
    "observe",
    "with_allocation",
    "with_caps",
    "with_clusters",
]

ZERO = Decimal(0)


class RiskLayerPolicy(BaseModel):
    """The thresholds of the risk layer, each part validated by its own model. None switches a part
    off; `off()` switches everything off (the governor alone, as today)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    emergency: EmergencyPolicy | None = Field(default_factory=EmergencyPolicy)
    protections: ProtectionPolicy | None = Field(default_factory=ProtectionPolicy)
    # Heat on by default: five entries across the book within 15 minutes are one bet on the market.
    concentration: ConcentrationPolicy | None = Field(
        default_factory=lambda: ConcentrationPolicy(max_entries_per_window=5)
    )
    allocation: AllocationPolicy | None = Field(default_factory=AllocationPolicy)
    # Sizing from the venue's equity (the balance tracker's readings); off by default: sizes then come
    # from the settings' figures and the governor's absolute limits alone.
    balance: BalancePolicy | None = None
    # Symbols whose returns correlate at least this much form one cluster (`correlation_clusters`).
    correlation_threshold: float = Field(0.8, ge=-1, le=1)

    @classmethod
    def off(cls) -> RiskLayerPolicy:
        return cls(emergency=None, protections=None, concentration=None, allocation=None, balance=None)


class ClosedTradeEvent(BaseModel):
    """A closed trade, whole: the ESS takes its PnL and stop-out, the protections keep it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["closed_trade"] = "closed_trade"
    trade: ClosedTrade

    @property
    def at_ms(self) -> int:
        return self.trade.closed_at_ms


RiskEvent = Annotated[
    ClosedTradeEvent
    | TradeClosed
    | OrderOutcome
    | VenueHealth
    | EquityMark
    | OperatorCommand
    | Tick
    | AccountBalance,
    Field(discriminator="kind"),
]


class RiskState(BaseModel):
    """What the risk layer knows besides the book. JSON-serializable: its owner (the portfolio, the
    backtester) carries it across restarts, so no lock or emergency is lost by one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ess: EssState = Field(default_factory=EssState)
    last_transition: Transition | None = None  # why the ESS is where it is (named in its denials)
    # Per symbol, the trades closed within the protections' history, by close time.
    trades: dict[str, tuple[ClosedTrade, ...]] = Field(default_factory=dict)
    clusters: Clusters = Field(default_factory=Clusters)
    clusters_at_ms: int | None = None
    allocation: dict[str, Decimal] | None = None  # symbol → notional cap; None: no targets yet
    allocation_at_ms: int | None = None
    balance: AccountBalance | None = None  # the venue's latest account reading


class SizeCut(BaseModel):
    """A grant made smaller by a gate, with the figures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate: Gate
    from_usdt: Decimal
    to_usdt: Decimal
    reason: str


class RiskVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Decision
    cuts: tuple[SizeCut, ...] = ()


# ------------------------------------------------------------------------------------------------ gates
def decide_with_risk(
    book: PortfolioBook,
    policy: RiskPolicy,
    risk: RiskLayerPolicy,
    state: RiskState,
    req: ReservationRequest,
    now_ms: int,
) -> Decision:
    """`decide`, then the risk gates (see the module docstring). Does not change the book or the state."""
    return assess(book, policy, risk, state, req, now_ms).decision


def assess(
    book: PortfolioBook,
    policy: RiskPolicy,
    risk: RiskLayerPolicy,
    state: RiskState,
    req: ReservationRequest,
    now_ms: int,
) -> RiskVerdict:
    """The decision and the size cuts that made it (see the module docstring)."""
    decision = decide(book, policy, req, now_ms)
    if isinstance(decision, Denial) or req.adoption or req.holder_id in book.reservations:
        return RiskVerdict(decision=decision)
    notional = decision.notional_usdt
    cuts: list[SizeCut] = []

    def deny(gate: Gate, reason: str) -> RiskVerdict:
        return RiskVerdict(
            decision=Denial(holder_id=req.holder_id, gate=gate, reason=reason), cuts=tuple(cuts)
        )

    def too_small(gate: Gate, to: Decimal, why: str) -> RiskVerdict | None:
        if to < policy.min_grant_usdt:
            return deny(
                gate, f"{why}: {notional} → {to} USDT is below the smallest grant {policy.min_grant_usdt}"
            )
        cuts.append(
            SizeCut(gate=gate, from_usdt=notional, to_usdt=to, reason=f"{why}: {notional} → {to} USDT")
        )
        return None

    if risk.emergency is not None:  # 1. the emergency stop
        ess = state.ess.state
        if not allows_entries(ess):
            why = state.last_transition.reason if state.last_transition is not None else "no move recorded"
            return deny(Gate.EMERGENCY, f"automatic emergency stop is {ess.value}: no new entries ({why})")
        factor = size_factor(ess, risk.emergency)
        if factor < 1:
            scaled = notional * factor
            if out := too_small(Gate.EMERGENCY, scaled, f"emergency stop {ess.value} cuts sizes ×{factor}"):
                return out
            notional = scaled

    if risk.balance is not None and state.balance is not None:  # 1b. the venue's equity and margin
        if why := margin_refusal(state.balance, risk.balance):
            return deny(Gate.MARGIN_RATIO, why)
        room, figures = balance_room(state.balance, risk.balance, book.total_notional)
        if notional > room:
            if out := too_small(Gate.EQUITY, room, figures):
                return out
            notional = room

    if risk.protections is not None:  # 2. symbol protections
        lock = symbol_lock(req.symbol, state.trades.get(req.symbol, ()), risk.protections, now_ms)
        if lock is not None:
            left = (lock.until_ms - now_ms) / 1000
            return deny(
                Gate.SYMBOL_PROTECTION, f"{lock.rule.value} lock for {left:.0f} s more: {lock.reason}"
            )

    conc = risk.concentration
    if conc is not None:
        if conc.max_entries_per_window is not None:  # 3. heat
            n = heat(entry_times(book), now_ms, conc.heat_window_seconds)
            if n >= conc.max_entries_per_window:
                return deny(
                    Gate.HEAT,
                    f"{n} entries across the book in the last {conc.heat_window_seconds} s "
                    f"(limit {conc.max_entries_per_window})",
                )
        # 4. concentration: the symbol's and its cluster's share of the total budget
        exposures = exposures_of(book)
        budget = policy.max_total_notional_usdt
        room, gate = concentration_room(exposures, state.clusters, req.symbol, req.side, conc, budget)
        if gate is not None and notional > room:
            if room < policy.min_grant_usdt:
                request = Exposure(symbol=req.symbol, side=req.side, notional_usdt=notional)
                refusal = check_concentration(exposures, state.clusters, request, conc, budget)
                if refusal is not None:  # always, as the room is below the request: its words and figures
                    return deny(refusal.gate, refusal.reason)
                return deny(gate, _share_text(gate, exposures, state.clusters, req, conc, budget))
            if out := too_small(gate, room, _share_text(gate, exposures, state.clusters, req, conc, budget)):
                return out
            notional = room

    if risk.allocation is not None and state.allocation is not None:  # 5. the allocation's cap
        cap = state.allocation.get(req.symbol, ZERO)
        held = sum((r.notional_usdt for r in book.reservations.values() if r.symbol == req.symbol), ZERO)
        room = cap - held
        if notional > room:
            why = f"{req.symbol}: allocation cap {cap} USDT, {held} held"
            if out := too_small(Gate.ALLOCATION, max(room, ZERO), why):
                return out
            notional = room

    if not cuts:
        return RiskVerdict(decision=decision)
    grant = Grant(
        holder_id=req.holder_id,
        notional_usdt=notional,
        reduced_from=req.notional_usdt if notional < req.notional_usdt else None,
        exit_profile=decision.exit_profile,
    )
    return RiskVerdict(decision=grant, cuts=tuple(cuts))


def _share_text(
    gate: Gate,
    exposures: list[Exposure],
    clusters: Clusters,
    req: ReservationRequest,
    conc: ConcentrationPolicy,
    budget: Decimal,
) -> str:
    if gate is Gate.SYMBOL_CONCENTRATION:
        members, share, what = (req.symbol,), conc.max_symbol_share, req.symbol
    else:
        members = clusters.members(req.symbol)
        share, what = conc.max_cluster_share, f"cluster {list(members)}"
    net = net_exposure(exposures, members)
    assert share is not None  # the gate that limits is one that is on
    limit = share * budget
    return f"{what}: net exposure {net} USDT, limit {limit} ({share} of {budget}) for a {req.side.value}"


# ------------------------------------------------------------------------------------------------ state
def observe(
    state: RiskState, risk: RiskLayerPolicy, event: RiskEvent, now_ms: int
) -> tuple[RiskState, list[Transition]]:
    """The state after `event` and the ESS transitions it caused. `now_ms` is the owner's time: trades
    older than the protections' history are dropped then (they can no longer lock anything)."""
    changes: dict[str, object] = {}
    moved: list[Transition] = []
    if isinstance(event, AccountBalance):
        if state.balance is None or event.at_ms >= state.balance.at_ms:  # an older reading never wins
            changes["balance"] = event
        ess_event: EmergencyEvent = EquityMark(at_ms=event.at_ms, equity=event.equity)
    elif isinstance(event, ClosedTradeEvent):
        trade = event.trade
        if risk.protections is not None:
            kept = tuple(
                sorted(
                    (*state.trades.get(trade.symbol, ()), trade),
                    key=lambda t: (t.closed_at_ms, t.trade_id),
                )
            )
            changes["trades"] = {**state.trades, trade.symbol: kept}
        ess_event = TradeClosed.from_trade(trade)
    else:
        ess_event = event
    if risk.emergency is not None:
        ess, moved = emergency_step(state.ess, ess_event, risk.emergency)
        changes["ess"] = ess
        if moved:
            changes["last_transition"] = moved[-1]
    if risk.protections is not None:
        changes["trades"] = _recent(changes.get("trades", state.trades), now_ms - risk.protections.history_ms)  # type: ignore[arg-type]
    return (state.model_copy(update=changes) if changes else state), moved


def _recent(
    trades: Mapping[str, tuple[ClosedTrade, ...]], since_ms: int
) -> dict[str, tuple[ClosedTrade, ...]]:
    out = {}
    for symbol, ts in trades.items():
        kept = (
            ts
            if not ts or ts[0].closed_at_ms > since_ms
            else tuple(t for t in ts if t.closed_at_ms > since_ms)
        )
        if kept:
            out[symbol] = kept
    return out


def with_clusters(state: RiskState, clusters: Clusters, at_ms: int) -> RiskState:
    """The state with new correlation clusters (a validated update, or the backtest's own refresh)."""
    return state.model_copy(update={"clusters": clusters, "clusters_at_ms": at_ms})


def with_allocation(state: RiskState, targets: Mapping[str, AllocationTarget], at_ms: int) -> RiskState:
    """The state with new per-symbol notional caps, from `trading.allocation.allocate`."""
    return with_caps(state, {s: t.notional_usdt for s, t in targets.items()}, at_ms)


def with_caps(state: RiskState, caps: Mapping[str, Decimal], at_ms: int) -> RiskState:
    """The state with these per-symbol notional caps (symbol → USDT)."""
    return state.model_copy(update={"allocation": dict(sorted(caps.items())), "allocation_at_ms": at_ms})

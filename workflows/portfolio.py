"""PortfolioWorkflow: the singleton that makes every shared limit atomic.

Reservation requests arrive as signals (a burst of a thousand cannot hit the server's cap of ten
in-flight updates per workflow), are decided one after another in arrival order by the pure gates,
and each holder is answered by a signal back. Releases are idempotent; holders that stopped without
releasing (terminated, timed out) are found by a periodic check and freed.

The singleton must never fail: a failed one is started again EMPTY by the next position's
signal-with-start, and every limit resets (the old system's audit found 17 open positions under a limit
of 10). So a failed holder check, delivery or projection is logged, counted
(`quantum_portfolio_step_failures`) and tried again later; and a fresh run (not its own
continue-as-new) rebuilds its book from the running positions before it decides anything.

This module holds the workflow class itself: its run and its messages (signals, operator updates, the
`state` query). The rest are mixins, one module each: the fields they share and the patch ids with
the versioning rule (workflows/portfolio_base.py), the main loop with its projection and
continue-as-new (portfolio_loop.py), the decisions (portfolio_decisions.py), the holders: flattens,
the holder check and a fresh run's rebuild (portfolio_holders.py), and the risk layer with its
emergency stop (portfolio_risk.py).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from trading.governor import (
        Denial,
        EmergencyState,
        Grant,
        PortfolioBook,
        ReservationRequest,
        RiskPolicy,
        adjust,
        release,
    )
    from trading.market_inputs import MarketInputs, with_market_inputs
    from trading.policy_review import PolicyChange, apply_changes, stale_changes
    from trading.risk import RiskLayerPolicy, RiskState
    from workflows.messages import (
        AdjustRequest,
        AdmitBatch,
        AdmitIntent,
        EssCommand,
        EssMove,
        FlattenRequest,
        KillSwitchRequest,
        PendingFlatten,
        PortfolioInput,
        PortfolioView,
        ReleaseRequest,
        parse_message,
    )
    from workflows.portfolio_admission import PortfolioAdmission
    from workflows.portfolio_base import (
        PATCH_REBUILD,
        PATCH_RESTORE,
        PATCH_TIMERS,
        PROJECTION_INTERVAL_S,
        PortfolioBase,
    )
    from workflows.portfolio_decisions import PortfolioDecisions
    from workflows.portfolio_holders import PortfolioHolders
    from workflows.portfolio_loop import PortfolioLoop
    from workflows.portfolio_risk import PortfolioRisk


# The handlers (run, signals, updates, the query) stay in this class's own body: the SDK is not relied
# on to find decorated handlers on base classes.
@workflow.defn(name="PortfolioWorkflow", sandboxed=False)  # see PositionWorkflow
class PortfolioWorkflow(
    PortfolioLoop, PortfolioDecisions, PortfolioAdmission, PortfolioHolders, PortfolioRisk, PortfolioBase
):
    @workflow.init
    def __init__(self, inp: PortfolioInput) -> None:
        self.input = inp
        self.policy = inp.policy or RiskPolicy()
        self.book = inp.book or PortfolioBook()
        self.pending: list[ReservationRequest] = list(inp.pending)
        self.last_decisions: list[Grant | Denial] = []
        self.granted_total = inp.granted_total
        self.denied_total = inp.denied_total
        self._flattens: list[PendingFlatten] = list(inp.flattens)
        # The risk layer (None: the governor's gates alone, as before it existed).
        self.risk: RiskLayerPolicy | None = inp.risk
        self.risk_state = inp.risk_state or RiskState()
        self.ess_moves: list[EssMove] = list(inp.ess_moves)
        self._ess_unpublished: list[EssMove] = list(inp.ess_unpublished)
        self._ess_publishing: asyncio.Future[None] | None = None
        self._risk_seen: list[str] = list(inp.risk_seen)
        # A fresh run (not its own continue-as-new) knows nothing of the slots running positions hold
        # until it has rebuilt its book: until then nothing is decided.
        self._book_known = workflow.info().continued_run_id is not None
        # Released, or filled below the grant, while the book was being rebuilt: applied to what it finds.
        self._released_early: set[str] = set()
        self._adjusted_early: dict[str, Decimal] = {}
        self._deliveries: list[asyncio.Future[None]] = []
        self.admissions: list[AdmitIntent] = list(inp.admissions)
        self._starting: set[str] = set()
        self._starts: list[asyncio.Future[None]] = []
        self._refusing: list[asyncio.Future[None]] = []
        self._sliced = False  # admissions decided a slice at a time (PATCH_ADMIT_IN_SLICES)
        self._projections: list[asyncio.Future[None]] = []
        self._dirty = True
        self._projected_at = -PROJECTION_INTERVAL_S  # the loop on the clock (before PATCH_TIMERS)
        self._check_due = False  # the holder check's timer fired (PATCH_TIMERS)
        self._projection_resting = False  # a projection was written less than its interval ago
        self._rest: asyncio.Future[None] | None = None
        self._meter = workflow.metric_meter()
        self._allow = self._meter.create_counter("quantum_govern_allow", "reservations granted")
        self._deny = self._meter.create_counter("quantum_govern_deny", "reservations denied, by gate")
        self._slots = self._meter.create_gauge("quantum_portfolio_slots_used", "position slots in use")
        self._open = self._meter.create_gauge("quantum_open_positions", "positions holding a reservation")
        self._adopted_over = self._meter.create_counter(
            "quantum_adoption_over_limit", "venue positions adopted beyond a limit (operator alert)"
        )
        self._notional = self._meter.create_gauge_float(
            "quantum_portfolio_notional_used_usdt", "reserved notional"
        )
        self._step_failures = self._meter.create_counter(
            "quantum_portfolio_step_failures", "portfolio steps that failed and are tried again, by step"
        )
        self._ess_gauge = self._meter.create_gauge(
            "quantum_ess_state", "automatic emergency stop: 0 NORMAL, 1 WARNING, 2 CRITICAL, 3 HALTED"
        )
        self._ess_transitions = self._meter.create_counter(
            "quantum_ess_transitions", "moves of the automatic emergency stop, by target state and rule"
        )

    @workflow.run
    async def run(self, inp: PortfolioInput) -> None:
        if not self._book_known:
            # Fresh: the singleton failed or was terminated and a position's signal-with-start began this
            # run with an empty book, while running positions still hold their slots.
            if workflow.patched(PATCH_REBUILD):
                if workflow.patched(PATCH_RESTORE):
                    await self._restore_previous_run()
                await self._rebuild_book()
            self._book_known = True
            self._released_early.clear()
            self._adjusted_early.clear()
        if workflow.patched(PATCH_TIMERS):
            await self._run_on_timers(inp)
        else:
            await self._run_on_clock(inp)

    # ------------------------------------------------------------------ messages
    @workflow.signal(name="risk_event")
    def risk_event(self, raw: dict) -> None:
        """A measured fact for the risk layer: a closed trade (from the journal activity), an account
        reading (the balance tracker), an order's outcome or the venue's health (an exchange worker's
        `risk_events`). A closed trade heard twice counts once."""
        self._hear(raw)

    @workflow.signal(name="risk_events")
    def risk_events(self, raw: dict) -> None:
        """Several risk events at once, in order (`{"events": [...]}`)."""
        events = raw.get("events") if isinstance(raw, dict) else None
        if not isinstance(events, list):
            self._step_failed("risk_event", None)
            workflow.logger.error('risk_events dropped: expected {"events": [...]}')
            return
        for event in events:
            self._hear(event)

    @workflow.signal(name="request_reservation")
    def request_reservation(self, req: ReservationRequest) -> None:
        self.pending.append(req)

    @workflow.signal(name="admit_intents")
    def admit_intents(self, raw: dict) -> None:
        """Trade intents to decide before any workflow exists for them (workflows/portfolio_admission.py;
        sent by workers/admission.py, which checks them first: a signal cannot answer an error)."""
        try:
            batch = parse_message(AdmitBatch, raw)
        except ValueError as err:
            self._step_failed("admit_intents", None)
            workflow.logger.error("admit_intents dropped: %s", err)
            return
        self.admissions.extend(batch.intents)

    @workflow.signal(name="release_reservation")
    def release_reservation(self, req: ReleaseRequest) -> None:
        if not self._book_known:
            self._released_early.add(req.holder_id)
        release(self.book, self.policy, req.holder_id, self._now_ms(), cooldown=req.cooldown)
        # A request still waiting from the same holder must not be granted after its release.
        self.pending = [p for p in self.pending if p.holder_id != req.holder_id]
        self._changed()

    @workflow.signal(name="reconciled")
    def reconciled(self, fixes: int) -> None:
        if not self.book.reconciled:
            workflow.logger.info("startup reconcile done (%d fixes): new entries allowed", fixes)
        self.book.reconciled = True
        self._changed()

    @workflow.signal(name="adjust_reservation")
    def adjust_reservation(self, req: AdjustRequest) -> None:
        if not self._book_known:
            self._adjusted_early[req.holder_id] = req.notional_usdt
        adjust(self.book, req.holder_id, req.notional_usdt)
        self._changed()

    # Operator updates take raw JSON and are parsed in their validators, so a bad field is rejected
    # with its name before anything reaches history.
    @workflow.update(name="set_policy")
    def set_policy(self, raw: dict) -> RiskPolicy:
        """Change the fields given; the others keep their current values (so a concurrent kill switch
        is never undone by a policy edit made from an older copy)."""
        self.policy = self._patched_policy(raw)
        self._changed()
        return self.policy

    @set_policy.validator
    def _validate_policy(self, raw: dict) -> None:
        self._patched_policy(raw)

    def _patched_policy(self, raw: object) -> RiskPolicy:
        if not isinstance(raw, dict):
            raise ValueError("policy: expected a JSON object of the fields to change")
        unknown = sorted(set(raw) - set(RiskPolicy.model_fields))
        if unknown:
            raise ValueError(f"policy: unknown field(s) {', '.join(unknown)}")
        return parse_message(RiskPolicy, {**self.policy.model_dump(), **raw})

    @workflow.update(name="set_kill_switch")
    def set_kill_switch(self, raw: dict) -> RiskPolicy:
        req = parse_message(KillSwitchRequest, raw)
        self.policy = self.policy.model_copy(update={"kill_switch": req.on})
        workflow.logger.warning("kill switch %s: %s", "ON" if req.on else "off", req.reason)
        self._changed()
        return self.policy

    @set_kill_switch.validator
    def _validate_kill_switch(self, raw: dict) -> None:
        parse_message(KillSwitchRequest, raw)

    @workflow.update(name="set_emergency_state")
    def set_emergency_state(self, state: str) -> EmergencyState:
        if self._stop_on():  # one state: the stop's, moved explicitly
            self._operator_move(EssCommand(to=EmergencyState(state), reason="set_emergency_state"))
            return self.book.emergency
        self.book.emergency = EmergencyState(state)
        self._changed()
        return self.book.emergency

    @workflow.update(name="set_ess")
    def set_ess(self, raw: dict) -> list[EssMove]:
        """An operator's explicit move of the automatic emergency stop, with its reason (leaving HALTED
        is only this). Returns the moves it made (none when already there)."""
        return self._operator_move(parse_message(EssCommand, raw))

    @set_ess.validator
    def _validate_ess(self, raw: dict) -> None:
        parse_message(EssCommand, raw)
        if not self._stop_on():
            raise ValueError("set_ess: the automatic emergency stop is off (set_risk_policy turns it on)")

    @workflow.update(name="set_risk_policy")
    def set_risk_policy(self, raw: dict | None) -> RiskLayerPolicy | None:
        """Turn the risk layer on with these thresholds (fields of trading.risk.RiskLayerPolicy), or off
        with null. Its state (the stop's, the locks) is kept either way."""
        self.risk = self._parsed_risk(raw)
        if self._stop_on() and self.risk_state.ess.state is not self.book.emergency:
            # Turned on while an operator's emergency state stands: the stop starts from it.
            reason = f"risk layer turned on in emergency state {self.book.emergency.value}"
            self._operator_move(EssCommand(to=self.book.emergency, reason=reason))
        self._changed()
        self._show_details()
        return self.risk

    @set_risk_policy.validator
    def _validate_risk_policy(self, raw: dict | None) -> None:
        self._parsed_risk(raw)

    @workflow.update(name="apply_policy_changes")
    def apply_policy_changes(self, raw: dict) -> RiskLayerPolicy:
        """An approved policy-review proposal (PolicyReviewWorkflow): its changes, each checked against
        the value it was proposed from, in one step (an edit made since refuses it whole)."""
        self.risk = self._changed_policy(raw)
        self._changed()
        self._show_details()
        workflow.logger.warning("risk policy changed by an approved review: %s", raw.get("changes"))
        return self.risk

    @apply_policy_changes.validator
    def _validate_policy_changes(self, raw: dict) -> None:
        self._changed_policy(raw)

    def _changed_policy(self, raw: object) -> RiskLayerPolicy:
        if not isinstance(raw, dict) or not isinstance(raw.get("changes"), list):
            raise ValueError('policy changes: expected {"changes": [...]}')
        changes = tuple(parse_message(PolicyChange, c) for c in raw["changes"])
        if self.risk is None:
            raise ValueError("stale: the risk layer is off")
        if stale := stale_changes(self.risk, changes):
            raise ValueError(f"stale: {'; '.join(stale)}")
        return apply_changes(self.risk, changes)

    @workflow.update(name="set_market_inputs")
    def set_market_inputs(self, raw: dict) -> RiskState:
        """Correlation clusters and allocation caps from the scheduled refresh (MarketInputsWorkflow)."""
        self.risk_state = with_market_inputs(self.risk_state, self._parsed_inputs(raw))
        self._changed()
        return self.risk_state

    @set_market_inputs.validator
    def _validate_market_inputs(self, raw: dict) -> None:
        self._parsed_inputs(raw)

    def _parsed_inputs(self, raw: object) -> MarketInputs:
        inputs = parse_message(MarketInputs, raw)
        held = max(self.risk_state.clusters_at_ms or 0, self.risk_state.allocation_at_ms or 0)
        if inputs.at_ms < held:  # a refresh that ran late must not undo a newer one
            raise ValueError(f"market inputs of {inputs.at_ms} are older than those held ({held})")
        return inputs

    def _parsed_risk(self, raw: object) -> RiskLayerPolicy | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ValueError("risk policy: expected a JSON object (fields of RiskLayerPolicy) or null")
        return parse_message(RiskLayerPolicy, raw)

    @set_emergency_state.validator
    def _validate_emergency_state(self, state: str) -> None:
        if state not in EmergencyState.__members__:
            raise ValueError(f"state: must be one of {', '.join(EmergencyState.__members__)}")

    @workflow.update(name="emergency_flatten")
    async def emergency_flatten(self, raw: dict) -> list[str]:
        req = parse_message(FlattenRequest, raw)
        self.book.emergency = EmergencyState.HALTED
        if not self._book_known:  # a fresh run still reading the running positions: they are holders too
            await workflow.wait_condition(lambda: self._book_known)
        if self._stop_on() and self.risk_state.ess.state is not EmergencyState.HALTED:
            # The stop moves with it (or its next move would lift the halt); its own flatten names the same
            # holders, each told once.
            self._operator_move(EssCommand(to=EmergencyState.HALTED, reason=req.reason))
        holders = sorted(self.book.reservations)
        # Every holder of this moment (a position still entering included) is told until it lets go;
        # carried through continue-as-new.
        self._flattens.append(PendingFlatten(request=req, holders=holders))
        self._changed()
        return holders

    @emergency_flatten.validator
    def _validate_flatten(self, raw: dict) -> None:
        parse_message(FlattenRequest, raw)

    @workflow.query(name="state")
    def state(self) -> PortfolioView:
        return PortfolioView(
            policy=self.policy,
            book=self.book,
            slots_used=len(self.book.reservations),
            notional_used=self.book.total_notional,
            granted_total=self.granted_total,
            denied_total=self.denied_total,
            last_decisions=self.last_decisions,
            risk=self.risk,
            risk_state=self.risk_state if self.risk is not None else None,
            ess_moves=self.ess_moves,
        )

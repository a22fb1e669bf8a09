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

Versioning: portfolios run forever, so each change to the command sequence is behind `workflow.patched`
(the patch ids below); recorded histories and running portfolios keep replaying the first version.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from pydantic import TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from trading.emergency import SEVERITY, OperatorCommand, Tick, Transition
    from trading.governor import (
        Denial,
        EmergencyState,
        Gate,
        Grant,
        PortfolioBook,
        ReservationRequest,
        RiskPolicy,
        adjust,
        apply_grant,
        decide,
        held_notional,
        prune,
        release,
        restore_reservation,
    )
    from trading.market_inputs import MarketInputs, with_market_inputs
    from trading.policy_review import PolicyChange, apply_changes, stale_changes
    from trading.risk import ClosedTradeEvent, RiskEvent, RiskLayerPolicy, RiskState, assess, observe
    from workflows import calls
    from workflows.messages import (
        AdjustRequest,
        DecisionBatch,
        EssCommand,
        EssMove,
        FlattenRequest,
        KillSwitchRequest,
        PendingFlatten,
        PortfolioInput,
        PortfolioView,
        ReleaseRequest,
        RunningHolder,
        parse_message,
    )

PROJECTION_INTERVAL_S = 2.0
LAST_DECISIONS_KEPT = 50
REBUILD_PAUSE_S = 5.0
REBUILD_ROUNDS = 3  # a position that does not answer is asked again this often before the book goes on

# Patch ids (see the module docstring).
PATCH_SURVIVE = "portfolio-survives-failed-activities"
PATCH_REBUILD = "portfolio-rebuilds-book-on-fresh-start"
PATCH_FLATTEN = "portfolio-flatten-until-released"
PATCH_TIMERS = "portfolio-steps-on-timers"
PATCH_RISK = "portfolio-risk-layer"
PATCH_RESTORE = "portfolio-restores-previous-run"

ESS_MOVES_KEPT = 20  # in the view and the Web UI's details
RISK_SEEN_KEPT = 1000  # trade ids heard: a journal activity retried tells the same trade again
_RISK_EVENT: TypeAdapter[RiskEvent] = TypeAdapter(RiskEvent)


@workflow.defn(name="PortfolioWorkflow", sandboxed=False)  # see PositionWorkflow
class PortfolioWorkflow:
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

    async def _run_on_timers(self, inp: PortfolioInput) -> None:
        """Every command here follows from an event in history (a signal, an update, a timer that fired,
        an activity that ended), never from comparing `workflow.time()` with a due time: the first task
        after a Temporal server restart can carry the previous task's time (seen in bench.faults: the
        live run waited where its replay ran the holder check, and the portfolio stopped replaying).
        The holder check and the projection's rest are timers of their own."""
        clock = asyncio.ensure_future(self._holder_check_clock(inp.holder_check_seconds))
        while True:
            await workflow.wait_condition(
                lambda: bool(
                    self._actionable()
                    or self._flatten_due()
                    or self._check_due
                    or self._projection_ready()
                    or self._ess_publish_ready()
                )
            )
            await self._decide_pending()
            await self._flatten_holders()
            if self._check_due:
                self._check_due = False
                self._risk_tick()
                await self._release_stopped_holders()
                await self._retell_flattens()
                prune(self.book, self._now_ms())
            self._project_when_ready()
            self._publish_ess_moves()
            if self._history_full(inp):
                clock.cancel()
                await self._continue_as_new(inp)

    async def _holder_check_clock(self, every_s: float) -> None:
        while True:
            await workflow.sleep(every_s)
            self._check_due = True

    def _projection_ready(self) -> bool:
        return self._dirty and not self._projection_resting and all(p.done() for p in self._projections)

    def _project_when_ready(self) -> None:
        """Write `quantum:portfolio:state` when something changed, then rest PROJECTION_INTERVAL_S (a
        timer) before the next write. Redis is a read model: a failed write is superseded by the next."""
        if not self._projection_ready():
            return
        self._dirty = False
        self._projection_resting = True
        self._projections = [asyncio.ensure_future(self._project(self.state()))]
        self._rest = asyncio.ensure_future(self._projection_rest())

    async def _projection_rest(self) -> None:
        await workflow.sleep(PROJECTION_INTERVAL_S)
        self._projection_resting = False

    def _history_full(self, inp: PortfolioInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > inp.max_history_events
        )

    async def _continue_as_new(self, inp: PortfolioInput) -> None:
        await asyncio.gather(
            *self._deliveries, *self._projections, *([self._ess_publishing] if self._ess_publishing else [])
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            PortfolioInput(
                policy=self.policy,
                book=self.book,
                pending=self.pending,
                holder_check_seconds=inp.holder_check_seconds,
                max_history_events=inp.max_history_events,
                granted_total=self.granted_total,
                denied_total=self.denied_total,
                # A flatten asked while this run was handing over must reach its holders.
                flattens=self._flattens,
                risk=self.risk,
                risk_state=self.risk_state,
                ess_moves=self.ess_moves,
                ess_unpublished=self._ess_unpublished,
                risk_seen=self._risk_seen,
            )
        )

    async def _run_on_clock(self, inp: PortfolioInput) -> None:
        """The loop before PATCH_TIMERS, kept for the runs that started on it (their histories replay
        only this way): due times compared with `workflow.time()`."""
        next_check = workflow.time() + inp.holder_check_seconds
        while True:
            wake = next_check
            projecting = any(not p.done() for p in self._projections)
            if self._dirty and not projecting:
                wake = min(wake, self._projected_at + PROJECTION_INTERVAL_S)
            wait = max(0.0, wake - workflow.time())
            was_dirty = self._dirty  # a change during the wait moves the wake-up to the projection time
            if wait > 0:
                # Never loop without yielding: the end of a running projection is a wake-up too.
                try:
                    await workflow.wait_condition(
                        lambda was=was_dirty, proj=projecting: bool(
                            self._actionable()
                            or self._flatten_due()
                            or (self._dirty and not was)
                            or (proj and all(p.done() for p in self._projections))
                        ),
                        timeout=timedelta(seconds=wait),
                    )
                except TimeoutError:
                    pass
            await self._decide_pending()
            await self._flatten_holders()
            if workflow.time() >= next_check:
                await self._release_stopped_holders()
                await self._retell_flattens()
                prune(self.book, self._now_ms())
                next_check = workflow.time() + inp.holder_check_seconds
            self._project_if_due()
            if self._history_full(inp):
                await self._continue_as_new(inp)

    # ------------------------------------------------------------------ decisions
    def _actionable(self) -> list[ReservationRequest]:
        """Requests that can be decided now: all of them once the startup reconcile is done, before that
        only adoptions of positions the venue already holds. Nothing before a fresh run's book is rebuilt
        (decided against an empty book, every request would pass the limits)."""
        if not self._book_known:
            return []
        if self.book.reconciled:
            return self.pending
        return [p for p in self.pending if p.adoption]

    async def _decide_pending(self) -> None:
        while self._actionable():
            batch = self._actionable()
            self.pending = [p for p in self.pending if p not in batch]
            now = self._now_ms()
            decisions: list[Grant | Denial] = []
            for req in batch:
                decision = self._decide(req, now)
                if isinstance(decision, Grant):
                    apply_grant(self.book, req, decision, now)
                    if decision.over_limit:
                        self._adopted_over.add(1, {"limit": decision.over_limit})
                        workflow.logger.error(
                            "adopted %s beyond %s: managed anyway", req.holder_id, decision.over_limit
                        )
                    self.granted_total += 1
                    self._allow.add(1)
                else:
                    self.denied_total += 1
                    self._deny.add(1, {"gate": decision.gate.value})
                decisions.append(decision)
            self.last_decisions = [*self.last_decisions, *decisions][-LAST_DECISIONS_KEPT:]
            self._changed()
            # Delivered by one activity per batch; decisions go on while it runs.
            self._deliveries.append(asyncio.ensure_future(self._deliver(decisions)))
        self._deliveries = [d for d in self._deliveries if not d.done()]

    def _decide(self, req: ReservationRequest, now_ms: int) -> Grant | Denial:
        """The governor's gates, then (when the risk layer is on) the emergency stop, protections, heat,
        concentration and allocation (trading/risk.py), each cut logged with its figures."""
        if self.risk is None:
            return decide(self.book, self.policy, req, now_ms)
        verdict = assess(self.book, self.policy, self.risk, self.risk_state, req, now_ms)
        decision = verdict.decision
        for cut in verdict.cuts:
            workflow.logger.info("%s cut by %s: %s", req.holder_id, cut.gate.value, cut.reason)
        last = self.risk_state.last_transition
        if isinstance(decision, Denial) and decision.gate is Gate.EMERGENCY and last is not None:
            # The governor's own emergency gate answers first: name the rule that put the stop there.
            if last.reason not in decision.reason:
                decision = decision.model_copy(update={"reason": f"{decision.reason} ({last.reason})"})
        return decision

    async def _deliver(self, decisions: list[Grant | Denial]) -> None:
        try:
            gone: list[str] = await calls.DELIVER_DECISIONS.run(DecisionBatch(decisions=decisions))
        except ActivityError as err:
            if not workflow.patched(PATCH_SURVIVE):
                raise  # the first version failed here: its histories replay that way
            # Raised at the continue-as-new, this failed the singleton (restarted empty). A holder not
            # told asks again and gets the same answer; one that is gone is freed by the holder check.
            self._step_failed("delivery", err)
            return
        for holder in gone:  # terminated between asking and hearing back: take the slot back
            release(self.book, self.policy, holder, self._now_ms())
            self._changed()

    def _flatten_due(self) -> bool:
        return any(not f.told for f in self._flattens)

    async def _flatten_holders(self) -> None:
        """Tell the holders of each new flatten."""
        if not self._flatten_due():
            return
        if not workflow.patched(PATCH_FLATTEN):
            # The first version: each flatten told once, to the holders of the moment it was processed.
            while self._flattens:
                req = self._flattens.pop(0).request
                await asyncio.gather(
                    *(self._tell_flatten(holder, req) for holder in list(self.book.reservations))
                )
            return
        fresh = [f for f in self._flattens if not f.told]
        for f in fresh:
            f.told = True
        await self._tell_flattens(fresh)

    async def _retell_flattens(self) -> None:
        """At each holder check, tell again the holders of a flatten that still hold their slot: a
        position that could not act on it (still entering, on code that ignored it there) must not keep
        its slot, and its position, because it heard the one signal too early."""
        told = [f for f in self._flattens if f.told]
        if told and workflow.patched(PATCH_FLATTEN):
            await self._tell_flattens(told)

    async def _tell_flattens(self, flattens: list[PendingFlatten]) -> None:
        """Signal each holder of these flattens that still holds its slot (once, however many flattens
        name it). A holder that let its slot go, or is gone, is crossed off; a flatten with no holder
        left is done."""
        targets: dict[str, FlattenRequest] = {}
        for f in flattens:
            f.holders = [h for h in f.holders if h in self.book.reservations]
            for holder in f.holders:
                targets.setdefault(holder, f.request)
        holders = list(targets)
        gone = await asyncio.gather(*(self._tell_flatten(h, targets[h]) for h in holders))
        lost = {h for h, g in zip(holders, gone, strict=True) if g}
        for f in flattens:
            f.holders = [h for h in f.holders if h not in lost]
        self._flattens = [f for f in self._flattens if f.holders or not f.told]

    async def _tell_flatten(self, holder: str, req: FlattenRequest) -> bool:
        """Signal one holder; True when it is gone."""
        try:
            await workflow.get_external_workflow_handle(holder).signal("emergency_flatten", req)
        except FailureError:
            return True  # a holder that is gone is released by the periodic check
        return False

    async def _release_stopped_holders(self) -> None:
        holders = sorted(self.book.reservations)
        if not holders:
            return
        try:
            stopped: list[str] = await calls.FIND_STOPPED_HOLDERS.run(holders)
        except ActivityError as err:
            if not workflow.patched(PATCH_SURVIVE):
                raise  # the first version failed here: its histories replay that way
            # Visibility down: failing here is scenario 5 (the singleton restarted empty, every limit
            # reset). The book stays as it is; the next check tries again.
            self._step_failed("holder_check", err)
            return
        for holder in stopped:
            if release(self.book, self.policy, holder, self._now_ms()) is not None:
                self._changed()
                workflow.logger.warning("released the slot of %s: its workflow is no longer running", holder)

    async def _restore_previous_run(self) -> None:
        """Take over what the previous run decided (a restart must never clear a kill switch, an emergency
        or a cooldown, nor reset an operator's policy to the settings): policy, emergency state,
        cooldowns, entry times, the risk layer and its state, the totals. Reservations are rebuilt from
        the running positions next (they, not an old view, say what is held now)."""
        try:
            prev: PortfolioView | None = await calls.PREVIOUS_PORTFOLIO_STATE.run()
        except ActivityError as err:
            self._step_failed("restore", err)
            workflow.logger.error(
                "fresh portfolio: the previous run's state was not read; starting from the input"
            )
            return
        if prev is None:
            return
        self.policy = prev.policy
        self.book.emergency = prev.book.emergency
        self.book.cooldown_until_ms = dict(prev.book.cooldown_until_ms)
        self.book.executions_ms = {s: list(ts) for s, ts in prev.book.executions_ms.items()}
        self.risk = prev.risk
        if prev.risk_state is not None:
            self.risk_state = prev.risk_state
        self.ess_moves = list(prev.ess_moves)
        self.granted_total, self.denied_total = prev.granted_total, prev.denied_total
        self.last_decisions = list(prev.last_decisions)
        self._changed()
        workflow.logger.warning(
            "fresh portfolio: took over the previous run's policy (kill switch %s), emergency %s, "
            "%d cooldowns, "
            "risk layer %s",
            "on" if self.policy.kill_switch else "off",
            self.book.emergency.value,
            len(self.book.cooldown_until_ms),
            "on" if self.risk is not None else "off",
        )

    async def _rebuild_book(self) -> None:
        """Count the slots the running positions hold (ENTERING, OPEN, CLOSING), as they say through their
        `state` query, before anything is decided. Requests that arrive meanwhile wait; a holder that
        releases meanwhile is not brought back; one already in the book is not counted twice."""
        rounds = 0
        while True:
            try:
                found: list[RunningHolder] = await calls.RUNNING_HOLDERS.run()
            except ActivityError as err:  # not retryable (a malformed answer): nothing known yet
                self._step_failed("rebuild", err)
                await workflow.sleep(REBUILD_PAUSE_S)
                continue
            rounds += 1
            silent = sorted(h.holder_id for h in found if h.status is None)
            if not silent or rounds >= REBUILD_ROUNDS:
                break
            # A position that indexed nothing yet and did not answer may be entering: ask again.
            workflow.logger.warning("rebuild: %d running positions did not answer; asking again", len(silent))
            await workflow.sleep(REBUILD_PAUSE_S)
        if silent:
            self._step_failed("rebuild_unanswered", None)
            workflow.logger.error("rebuild: not counted, never answered: %s", ", ".join(silent))
        now = self._now_ms()
        restored = 0
        for h in found:
            if h.status is None or h.holder_id in self._released_early:
                continue
            notional = held_notional(h.status, h.open_qty, h.entry_price, self.policy)
            if notional is not None and restore_reservation(
                self.book, h.holder_id, h.symbol, h.side, notional, now
            ):
                restored += 1
        for holder, filled in self._adjusted_early.items():
            adjust(self.book, holder, filled)
        self._changed()
        workflow.logger.warning(
            "fresh portfolio: %d reservations of running positions counted (%d slots, %s USDT)",
            restored,
            len(self.book.reservations),
            self.book.total_notional,
        )
        if (
            len(self.book.reservations) > self.policy.max_open_positions
            or self.book.total_notional > self.policy.max_total_notional_usdt
        ):
            workflow.logger.error("fresh portfolio: the running positions already exceed the limits")

    # ------------------------------------------------------------------ the risk layer
    def _observe(self, event: RiskEvent) -> None:
        """Fold one event into the risk state; act on the emergency stop's moves."""
        if self.risk is None:
            return
        self.risk_state, moved = observe(self.risk_state, self.risk, event, self._now_ms())
        self._changed()
        for t in moved:
            self._ess_moved(t)

    def _risk_tick(self) -> None:
        """Time passing, seen at each holder check: windows expire and cool-offs end (recovery by rule)."""
        if self._stop_on():
            self._observe(Tick(at_ms=self._now_ms()))

    def _ess_moved(self, t: Transition) -> None:
        """The book's emergency state follows the stop (the governor's gate and the projection read it);
        the move is numbered for the stream, counted, logged and shown; HALTED flattens every holder."""
        self.book.emergency = t.to_state
        seq = (self.ess_moves[-1].seq if self.ess_moves else 0) + 1
        move = EssMove(seq=seq, transition=t)
        self.ess_moves = [*self.ess_moves, move][-ESS_MOVES_KEPT:]
        self._ess_unpublished.append(move)
        self._ess_transitions.add(1, {"to": t.to_state.value, "rule": t.rule})
        worse = SEVERITY[t.to_state] > SEVERITY[t.from_state]
        log = workflow.logger.error if worse else workflow.logger.warning
        log("emergency stop %s → %s (%s): %s", t.from_state.value, t.to_state.value, t.rule, t.reason)
        if t.to_state is EmergencyState.HALTED and t.from_state is not EmergencyState.HALTED:
            holders = sorted(self.book.reservations)
            reason = f"automatic emergency stop HALTED: {t.reason}"[:200]
            self._flattens.append(PendingFlatten(request=FlattenRequest(reason=reason), holders=holders))
        self._show_details()

    def _stop_on(self) -> bool:
        return self.risk is not None and self.risk.emergency is not None

    def _ess_publish_ready(self) -> bool:
        return bool(self._ess_unpublished) and (self._ess_publishing is None or self._ess_publishing.done())

    def _publish_ess_moves(self) -> None:
        """Each move to `quantum:stream:ess.state.changed` once (keyed by its number); one that could not be
        written is tried again with the next move or holder check, and carried through continue-as-new."""
        if self._ess_publish_ready() and workflow.patched(PATCH_RISK):
            self._ess_publishing = asyncio.ensure_future(self._publish(list(self._ess_unpublished)))

    async def _publish(self, moves: list[EssMove]) -> None:
        try:
            await calls.PUBLISH_ESS_MOVES.run(moves)
        except ActivityError as err:
            self._step_failed("ess_publish", err)
            await workflow.sleep(PROJECTION_INTERVAL_S)  # not at once again: Redis is down
            return
        done = {m.seq for m in moves}
        self._ess_unpublished = [m for m in self._ess_unpublished if m.seq not in done]

    def _show_details(self) -> None:
        """The Web UI's current details of the portfolio: the stop's state and its recent moves."""
        if self.risk is None:
            return
        lines = [f"**Emergency stop: {self.risk_state.ess.state.value}**", ""]
        for m in reversed(self.ess_moves[-5:]):
            t = m.transition
            move = f"{t.from_state.value} → {t.to_state.value} ({t.cause.value}, {t.rule})"
            lines.append(f"- #{m.seq} {move}: {t.reason}")
        workflow.set_current_details("\n".join(lines))

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

    def _hear(self, raw: object) -> None:
        try:
            event = _RISK_EVENT.validate_python(raw)
        except ValidationError as err:  # a signal cannot be refused: say so, and drop it
            self._step_failed("risk_event", None)
            workflow.logger.error("risk_event dropped, invalid: %s", err.errors()[:3])
            return
        if self.risk is None:  # off: nothing measured (and no trade id carried through continue-as-new)
            return
        if isinstance(event, ClosedTradeEvent):
            if event.trade.trade_id in self._risk_seen:
                return
            self._risk_seen = [*self._risk_seen, event.trade.trade_id][-RISK_SEEN_KEPT:]
        self._observe(event)

    @workflow.signal(name="request_reservation")
    def request_reservation(self, req: ReservationRequest) -> None:
        self.pending.append(req)

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

    def _operator_move(self, cmd: EssCommand) -> list[EssMove]:
        before = self.ess_moves[-1].seq if self.ess_moves else 0
        self._observe(
            OperatorCommand(at_ms=self._now_ms(), to=cmd.to, reason=cmd.reason, operator=cmd.operator)
        )
        return [m for m in self.ess_moves if m.seq > before]

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

    # ------------------------------------------------------------------ helpers
    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)

    def _project_if_due(self) -> None:
        """Write `quantum:portfolio:state` at most every PROJECTION_INTERVAL_S, when something changed.
        Redis is a read model: a failed write is simply superseded by the next one."""
        self._projections = [p for p in self._projections if not p.done()]
        if (
            not self._dirty
            or self._projections
            or workflow.time() < self._projected_at + PROJECTION_INTERVAL_S
        ):
            return
        self._dirty = False
        self._projected_at = workflow.time()
        self._projections.append(asyncio.ensure_future(self._project(self.state())))

    async def _project(self, view: PortfolioView) -> None:
        try:
            await calls.PROJECT_PORTFOLIO.run(view)
        except ActivityError as err:
            self._step_failed("projection", err)
            self._dirty = True  # try again with the next state

    def _step_failed(self, step: str, err: ActivityError | None) -> None:
        self._step_failures.add(1, {"step": step})
        if err is not None:
            workflow.logger.warning("portfolio %s failed (tried again later): %s", step, err.cause or err)

    def _changed(self) -> None:
        self._dirty = True
        self._record_gauges()

    def _record_gauges(self) -> None:
        if self.risk is not None:
            self._ess_gauge.set(SEVERITY[self.risk_state.ess.state])
        self._slots.set(len(self.book.reservations))
        self._open.set(len(self.book.reservations))
        self._notional.set(float(self.book.total_notional))

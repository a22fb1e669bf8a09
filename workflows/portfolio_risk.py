"""PortfolioWorkflow's risk layer (trading/risk.py): the measured facts it hears (closed trades,
account readings, order outcomes, the venue's health), time passing, and the automatic emergency
stop's moves: followed by the book, numbered and published, shown, and HALTED flattening every
holder."""

from __future__ import annotations

import asyncio

from pydantic import TypeAdapter, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.emergency import SEVERITY, OperatorCommand, Tick, Transition
    from trading.governor import EmergencyState
    from trading.risk import ClosedTradeEvent, RiskEvent, observe
    from workflows import calls
    from workflows.messages import EssCommand, EssMove, FlattenRequest, PendingFlatten
    from workflows.portfolio_base import PATCH_RISK, PROJECTION_INTERVAL_S, PortfolioBase

ESS_MOVES_KEPT = 20  # in the view and the Web UI's details
RISK_SEEN_KEPT = 1000  # trade ids heard: a journal activity retried tells the same trade again
_RISK_EVENT: TypeAdapter[RiskEvent] = TypeAdapter(RiskEvent)


class PortfolioRisk(PortfolioBase):
    # ------------------------------------------------------------------ the risk layer
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

    def _operator_move(self, cmd: EssCommand) -> list[EssMove]:
        before = self.ess_moves[-1].seq if self.ess_moves else 0
        self._observe(
            OperatorCommand(at_ms=self._now_ms(), to=cmd.to, reason=cmd.reason, operator=cmd.operator)
        )
        return [m for m in self.ess_moves if m.seq > before]

    # ------------------------------------------------------------------ the stop's stream and details
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

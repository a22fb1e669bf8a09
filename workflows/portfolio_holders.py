"""PortfolioWorkflow and the positions holding its slots: emergency flattens told to every holder
until it lets go, the periodic check that frees the slots of holders that stopped, and a fresh run's
takeover (the previous run's policy and state, then the book rebuilt from the running positions)."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from trading.governor import adjust, held_notional, release, restore_reservation
    from workflows import calls
    from workflows.messages import FlattenRequest, PendingFlatten, PortfolioView, RunningHolder
    from workflows.portfolio_base import PATCH_FLATTEN, PATCH_SURVIVE, PortfolioBase

REBUILD_PAUSE_S = 5.0
REBUILD_ROUNDS = 3  # a position that does not answer is asked again this often before the book goes on


class PortfolioHolders(PortfolioBase):
    # ------------------------------------------------------------------ flattens
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

    # ------------------------------------------------------------------ the holder check
    async def _release_stopped_holders(self) -> None:
        # A position the portfolio is starting right now does not run yet, and holds its slot.
        holders = sorted(h for h in self.book.reservations if h not in self._starting)
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

    # ------------------------------------------------------------------ a fresh run
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

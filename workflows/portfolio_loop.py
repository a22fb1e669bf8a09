"""PortfolioWorkflow's main loop: wait for something to do, decide, tell, check the holders, project
the read model, and continue as new when the history is full. Two loops: on timers (every command
follows from an event in history), and the one on the clock it replaced (kept so that the runs that
started on it replay)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.governor import prune
    from workflows import calls
    from workflows.messages import PortfolioInput, PortfolioView
    from workflows.portfolio_base import ADMIT_SLICE, PROJECTION_INTERVAL_S, PortfolioBase


class PortfolioLoop(PortfolioBase):
    # ------------------------------------------------------------------ the loop on timers
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
                    or self._admissible()
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
            if self._history_full(inp) and not self._admission_backlog():
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

    # ------------------------------------------------------------------ continue-as-new
    def _admission_backlog(self) -> bool:
        """More intents waiting than one slice decides: decided first, since they travel in the next
        run's input (10,000 waiting made a 3.8 MB input, over the 2 MB a payload may be, and every
        continue-as-new failed). Only for runs that decide in slices (PATCH_ADMIT_IN_SLICES)."""
        return self._sliced and len(self.admissions) > ADMIT_SLICE

    def _history_full(self, inp: PortfolioInput) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > inp.max_history_events
        )

    async def _continue_as_new(self, inp: PortfolioInput) -> None:
        await asyncio.gather(
            *self._deliveries,
            *self._projections,
            *self._starts,  # a started position must be in the book handed over, a failed one out of it
            *([self._ess_publishing] if self._ess_publishing else []),
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
                admissions=self.admissions,
            )
        )

    # ------------------------------------------------------------------ the loop on the clock
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

    # ------------------------------------------------------------------ the projection
    async def _project(self, view: PortfolioView) -> None:
        try:
            await calls.PROJECT_PORTFOLIO.run(view)
        except ActivityError as err:
            self._step_failed("projection", err)
            self._dirty = True  # try again with the next state

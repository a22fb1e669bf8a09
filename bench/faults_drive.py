"""One seed of the fault explorer: its lifecycles and faults played against the shared stack, the
invariants sampled all along, the end-of-seed checks, and a cleanup that leaves the next seed a flat
venue, a NORMAL portfolio and every service running.

Phases, all bounded: prepare (faults cleared, prices set) → the window (lifecycles start and end,
faults and operator actions happen at their drawn times) → faults clear (every process up, venue
faults cleared, kill switch off, portfolio NORMAL) → drain (every running position is asked to close
until none runs, the venue is flat and no slot is held, or the drain time is up) → end checks →
cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.client import (
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from bench.faults_invariants import (
    Bounds,
    FinishedPosition,
    Monitor,
    Sample,
    Violation,
    duplicate_client_ids,
    entries_per_workflow,
    nondeterminism,
    pnl_mismatch,
    positions_from_orders,
    task_failures,
    unfinished,
)
from bench.faults_observe import Observer
from bench.faults_schedule import VENUE_KINDS, Event, Lifecycle, Schedule
from bench.faults_stack import ExplorerStack, clear_faults, post_faults, settle_late_orders, venue_fault
from exchange.client import BinanceFuturesClient
from trading.intents import Side
from trading.pnl import Fill
from workers.admission import admissions, admit_intents
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionView,
)

D = Decimal
RPC = timedelta(seconds=2)
UPDATE_RPC = timedelta(seconds=5)  # an update is accepted only once a worker has run its validator
START_PRICE = D(100)
TRANSIENT = ("VALIDATING", "GOVERNING", "ENTERING")
# Faults after which the system may need time to act again (reconcile, stops, slots); a dead price
# watcher, user-data stream or Redis must not leave any invariant broken.
NOT_EXCUSING = ("kill:watcher", "kill:user-stream", "redis_outage")
# Faults that can lose an activity in flight: Temporal retries it only after its start-to-close timeout.
LOSES_ACTIVITIES = ("kill:exchange", "kill:lifecycle", "temporal_restart")


@dataclass(frozen=True)
class RunOptions:
    sample_s: float = 0.25
    drain_s: float = 45.0
    seed_cap_s: float = 150.0  # hard cap of one seed, window + drain + checks
    stop_grace_s: float = 5.0  # exposure without a live stop, after the entry filled
    slots_settle_s: float = 5.0
    adopt_after_s: float = 15.0  # ReconcileInput.adopt_after_ms: a venue position must stand this long
    # The longest start-to-close timeout of the position's activities (open_entry, 30 s): an activity
    # lost with a killed worker or a Temporal crash is retried only after it.
    activity_timeout_s: float = 30.0
    unmanaged_grace_s: float = 3.0

    def bounds(self, limit: int, reconcile_interval_s: float) -> Bounds:
        return Bounds(
            limit=limit,
            unmanaged_s=reconcile_interval_s + self.adopt_after_s + self.unmanaged_grace_s,
            unprotected_s=self.stop_grace_s,
            slots_s=self.slots_settle_s,
        )


RUN_ID = re.compile(r"run_id=([0-9a-f-]{36})")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the SDK core's log lines are coloured


@dataclass
class SeedResult:
    seed: int
    schedule: Schedule
    symbols: list[str]
    violations: list[Violation] = field(default_factory=list)
    lifecycles: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    max_unmanaged_s: float = 0.0
    max_unprotected_s: float = 0.0
    max_unprotected_after_faults_s: float = 0.0
    recoveries: list[float] = field(default_factory=list)
    samples: int = 0
    wall_s: float = 0.0
    crashes: Counter[str] = field(default_factory=Counter)  # services that died on their own
    continued_as_new: int = 0  # positions whose latest run is not their first
    harness_errors: list[str] = field(default_factory=list)
    task_failures: int = 0  # workflow-task failure lines in the workers' logs
    trace: list[dict[str, Any]] = field(default_factory=list)  # what happened, for a failing seed
    # Histories of runs that failed to replay (workflow id → history JSON), written beside the trace.
    histories: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Started:
    """A fault or action under way: its label, how to end it (None: skipped) and how long it may still
    act after that (late orders still pending)."""

    label: str
    undo: Callable[[], Awaitable[Any]] | None
    tail_s: float = 0.0


class FaultLog:
    """When each fault was really active (wall seconds into the seed), and until when it excuses the
    timed invariants: a fault that can lose an activity in flight (a killed worker, a Temporal crash)
    excuses them for one activity timeout more, the time Temporal waits before it retries one."""

    def __init__(self, activity_timeout_s: float = 0.0) -> None:
        self.windows: list[list[Any]] = []  # [label, start, end or None, excused until or None]
        self.activity_timeout_s = activity_timeout_s

    def begin(self, label: str, t: float) -> int:
        self.windows.append([label, t, None, None])
        return len(self.windows) - 1

    def end(self, index: int, t: float) -> None:
        label = self.windows[index][0]
        self.windows[index][2] = t
        self.windows[index][3] = t + (self.activity_timeout_s if label.startswith(LOSES_ACTIVITIES) else 0.0)

    def last_end(self, t: float) -> float:
        return max((end for _, _, end, _ in self.windows if end is not None and end <= t), default=t)

    def active(self, t: float) -> bool:
        """Some fault is on at `t` (for recoveries: they are timed from the moment none is)."""
        return any(start <= t and (end is None or end > t) for _, start, end, _ in self.windows)

    def quiet_since(self, t: float) -> float:
        """Since when no fault that excuses the timed invariants has been in effect (t while one is)."""
        excusing = [w for w in self.windows if not w[0].startswith(NOT_EXCUSING) and w[1] <= t]
        if any(until is None or until > t for _, _, _, until in excusing):
            return t
        return max((until for _, _, _, until in excusing), default=0.0)


class SeedRun:
    def __init__(
        self,
        stack: ExplorerStack,
        venue: BinanceFuturesClient,
        schedule: Schedule,
        symbols: list[str],
        fault_keys: set[str],
        opts: RunOptions,
        log_offsets: dict[Path, int],
    ) -> None:
        self.stack = stack
        self.venue = venue
        self.s = schedule
        self.symbols = symbols
        self.fault_keys = fault_keys
        self.opts = opts
        self.log_offsets = log_offsets
        self.ids = {lc.index: f"fx{schedule.seed}-{lc.index:02d}" for lc in schedule.lifecycles}
        self.plan = {self.ids[lc.index]: lc for lc in schedule.lifecycles}
        self.symbol_of = {wid: symbols[lc.symbol] for wid, lc in self.plan.items()}
        self.observer = Observer(stack, symbols, self.symbol_of)
        self.monitor = Monitor(schedule.seed, opts.bounds(stack.cfg.limit, stack.cfg.reconcile_interval_s))
        self.log = FaultLog(opts.activity_timeout_s)
        self.result = SeedResult(schedule.seed, schedule, symbols)
        self.prices = dict.fromkeys(symbols, START_PRICE)
        self.started: set[str] = set()
        self.t0 = 0.0
        self._sampling = True
        self._last_seen: dict[str, Any] = {}
        self.exits: dict[str, str] = {}  # closes accepted and cancels sent: id → symbol
        self.down: Counter[str] = Counter()  # services killed by the schedule, not yet due back
        self.nondeterministic_runs: set[str] = set()  # run ids the workers' logs say failed to replay

    # ------------------------------------------------------------ time
    def now(self) -> float:
        return time.monotonic() - self.t0

    async def until(self, t: float) -> None:
        await asyncio.sleep(max(0.0, t - self.now()))

    def violation(self, invariant: str, details: str) -> None:
        self.result.violations.append(Violation(self.s.seed, invariant, self.now(), details))

    def harness_error(self, where: str, err: BaseException) -> None:
        """Something the explorer itself could not do (not a violation of the system's promises)."""
        self.result.harness_errors.append(f"seed {self.s.seed} {where}: {type(err).__name__}: {err}"[:300])
        self.note("harness error", where=where, error=f"{type(err).__name__}: {err}"[:300])

    def note(self, what: str, **data: Any) -> None:
        self.result.trace.append({"t": round(self.now(), 3), "what": what, **data})

    def note_sample(self, s: Sample) -> None:
        """A sample goes to the trace when what it saw differs from the last one."""
        seen = {
            "positions": {k: str(v) for k, v in s.venue.positions.items()} if s.venue else None,
            "stops": s.venue.stops if s.venue else None,
            "running": s.temporal.running if s.temporal else None,
            "slots": s.temporal.slots_used if s.temporal else None,
        }
        if seen != self._last_seen:
            self._last_seen = seen
            self.note("sample", **seen)

    # ------------------------------------------------------------ the whole seed
    async def run(self) -> SeedResult:
        wall = time.monotonic()
        self.t0 = time.monotonic()
        try:
            async with asyncio.timeout(self.opts.seed_cap_s):
                await self.prepare()
                self.t0 = time.monotonic()
                await self.play()
        except TimeoutError:
            self.harness_error("seed", TimeoutError(f"past its hard cap of {self.opts.seed_cap_s:.0f} s"))
        except Exception as err:  # the explorer could not drive this seed: said apart from violations
            self.harness_error("play", err)
        finally:
            self._sampling = False
            for check in (self.end_checks, self.cleanup):
                try:
                    async with asyncio.timeout(60):
                        await check()
                except Exception as err:
                    self.harness_error(check.__name__, err)
        self.monitor.finish(self.now())
        r = self.result
        r.violations = self.monitor.violations + r.violations
        r.max_unmanaged_s = self.monitor.max_unmanaged_s
        r.max_unprotected_s = self.monitor.max_unprotected_s
        r.max_unprotected_after_faults_s = self.monitor.max_unprotected_after_faults_s
        r.recoveries = self.monitor.recoveries
        r.samples = self.monitor.samples
        r.lifecycles = len(self.started)
        r.wall_s = time.monotonic() - wall
        return r

    async def prepare(self) -> None:
        await clear_faults(self.stack)
        await self.stack.restart_services()
        for sym in self.symbols:
            await self.stack.set_price(sym, START_PRICE)
        await self.portfolio_normal_or_note(deadline=30)

    async def play(self) -> None:
        sampler = asyncio.create_task(self.sample_loop())
        supervisor = asyncio.create_task(self.supervise())
        lifecycles = [asyncio.create_task(self.lifecycle(lc)) for lc in self.s.lifecycles]
        events = [asyncio.create_task(self.event(ev)) for ev in self.s.events]
        try:
            await self.until(self.s.window_s)
            last_end = max((ev.end_s for ev in self.s.events), default=0.0)
            await asyncio.wait(events, timeout=max(0.0, last_end - self.now()) + 5.0)
            await self.starts_done(lifecycles)
            for task in (*events, *lifecycles):
                task.cancel()
            await asyncio.gather(*events, *lifecycles, return_exceptions=True)
            await self.faults_clear()
            self.note("faults clear")
            self.monitor.faults_cleared(self.now())
            await self.drain()
        finally:
            self._sampling = False
            for task in (*events, *lifecycles):
                task.cancel()
            supervisor.cancel()
            await asyncio.gather(sampler, supervisor, *events, *lifecycles, return_exceptions=True)

    async def starts_done(self, lifecycles: list[asyncio.Task[None]], timeout_s: float = 20.0) -> None:
        """A start still being retried (Temporal away) is let finish: cancelled half way, it may have
        started a workflow nobody then asks to close."""
        ends = self.now() + timeout_s
        while len(self.started) < len(self.plan) and self.now() < ends:
            if all(t.done() for t in lifecycles):
                return
            await asyncio.sleep(0.1)

    async def supervise(self) -> None:
        """What a process manager does: a service that died on its own (not killed by the schedule) is
        started again within a second. Each such death is counted: it is a finding of its own."""
        while self._sampling:
            await asyncio.sleep(1.0)
            dead = [n for n, p in self.stack.services.items() if not p.alive() and not self.down[n]]
            for name in dead:
                proc = self.stack.services[name]
                code = proc.popen.poll()  # type: ignore[union-attr]
                self.result.crashes[name] += 1
                # the log is appended to by the restarted process: keep what the dead one said last
                self.note("crashed", service=name, exit_code=code, log_tail=proc.log_tail(40))
                self.stack.say(f"seed {self.s.seed}: {name} exited on its own (code {code}); restarted")
                self.stack.say(f"  {name}'s last lines:\n{proc.log_tail(8)}")
            if dead:
                await self.stack.restart_services(self.killed)

    def killed(self) -> frozenset[str]:
        return frozenset(name for name, n in self.down.items() if n > 0)

    # ------------------------------------------------------------ sampling
    async def sample_loop(self) -> None:
        faults_were_active = False
        while self._sampling:
            began = time.monotonic()
            venue, temporal = await asyncio.gather(self.observer.venue(), self.observer.temporal())
            t = self.now()
            sample = Sample(
                t,
                venue,
                temporal,
                quiet_since=dict.fromkeys(self.monitor.timers, self.log.quiet_since(t)),
                faults_active=self.log.active(t),
                exits=dict(self.exits),
            )
            self.note_sample(sample)
            if sample.faults_active != faults_were_active:
                if sample.faults_active:
                    self.monitor.fault_started(t)
                else:
                    self.monitor.faults_cleared(self.log.last_end(t))
                faults_were_active = sample.faults_active
            for v in self.monitor.feed(sample):
                self.note("violation", invariant=v.invariant, details=v.details)
            await asyncio.sleep(max(0.0, self.opts.sample_s - (time.monotonic() - began)))

    # ------------------------------------------------------------ lifecycles
    async def lifecycle(self, lc: Lifecycle) -> None:
        wid = self.ids[lc.index]
        await self.until(lc.start_s)
        await self.start_position(lc, wid)
        if lc.end == "hold":
            return
        await self.until(lc.end_s)
        if lc.end == "cancel":
            await self.cancel(wid)
        else:
            await self.close(wid, partial=lc.end == "partial_close", deadline=self.s.window_s)

    async def start_position(self, lc: Lifecycle, wid: str) -> None:
        options = PositionOptions(
            mark_check_seconds=max(0.2, lc.mark_check_s),
            max_history_events=lc.max_history_events or 4000,
        )
        intent = PositionInput(
            symbol=self.symbols[lc.symbol],
            side=Side(lc.side),
            notional_usdt=D(lc.notional),
            intent_id=wid,
            options=options,
        )
        if lc.index % 2:  # every other intent through the portfolio's admission (no workflow until granted)
            await self.admit(intent, wid)
            return
        while True:
            try:
                await self.stack.client.start_workflow(
                    "PositionWorkflow",
                    intent,
                    id=wid,
                    task_queue=LIFECYCLE_TASK_QUEUE,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    rpc_timeout=RPC,
                )
                break
            except WorkflowAlreadyStartedError:
                break  # the first start went through; its answer did not
            except Exception:  # Temporal restarting
                await asyncio.sleep(0.3)
        self.started.add(wid)
        self.note("started", workflow=wid, symbol=intent.symbol, side=lc.side)

    async def admit(self, intent: PositionInput, wid: str) -> None:
        """Send the intent to the portfolio's admission until the signal is accepted (a repeat is safe:
        the portfolio never starts one id twice). Refused, its workflow never starts."""
        (admission,) = admissions([(wid, intent)])
        while True:
            try:
                await admit_intents(self.stack.client, [admission])
                break
            except Exception:  # Temporal restarting, or the portfolio being replaced
                await asyncio.sleep(0.3)
        self.started.add(wid)
        self.note("admitted", workflow=wid, symbol=intent.symbol, side=intent.side.value)

    async def close(self, wid: str, *, partial: bool = False, deadline: float) -> bool:
        """Ask the position to close (half of it with `partial`) until it accepts, is past open, or the
        deadline passes. True when the request was accepted."""
        handle = self.stack.client.get_workflow_handle(wid)
        refused: str | None = "-"
        failed = ""
        while self.now() < deadline:
            try:
                request: dict[str, Any] = {"reason": "operator"}
                if partial:
                    view = await handle.query("state", result_type=PositionView, rpc_timeout=RPC)
                    if view.status.value != "OPEN":
                        if view.status.value not in TRANSIENT:
                            return False
                        await asyncio.sleep(0.3)
                        continue
                    request = {"quantity": str(view.open_qty / 2), "reason": "partial"}
                update = await handle.start_update(
                    "close", request, wait_for_stage=WorkflowUpdateStage.ACCEPTED, rpc_timeout=UPDATE_RPC
                )
                # A refusal by the validator comes back as a known outcome, not as an error from
                # start_update: asking for the result raises it at once; an accepted close is still
                # running (or already done), so a short wait says which.
                # (the SDK turns the cancelled wait into WorkflowUpdateRPCTimeoutOrCancelledError)
                with contextlib.suppress(TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
                    await asyncio.wait_for(update.result(), 0.05)
                self.note("close accepted", workflow=wid, request=request)
                if not partial and wid in self.symbol_of:
                    self.exits.setdefault(wid, self.symbol_of[wid])
                return True
            except WorkflowUpdateFailedError as err:
                status = await self.status_of(wid)
                if status != refused:
                    refused = status
                    self.note("close refused", workflow=wid, status=status, error=str(err.cause)[:200])
                if status not in (*TRANSIENT, None):
                    return False  # closing or closed already
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:  # finished
                    return False
            except Exception as err:  # Temporal or the lifecycle worker away for a moment
                if type(err).__name__ != failed:
                    failed = type(err).__name__
                    self.note("close failed", workflow=wid, error=f"{failed}: {err}"[:200])
            await asyncio.sleep(0.3)
        return False

    async def status_of(self, wid: str) -> str | None:
        with contextlib.suppress(Exception):
            handle = self.stack.client.get_workflow_handle(wid)
            return (await handle.query("state", result_type=PositionView, rpc_timeout=RPC)).status.value
        return None

    async def cancel(self, wid: str) -> None:
        handle = self.stack.client.get_workflow_handle(wid)
        while self.now() < self.s.window_s + self.opts.drain_s:
            try:
                await handle.cancel(rpc_timeout=RPC)
                self.note("cancel sent", workflow=wid)
                self.exits.setdefault(wid, self.symbol_of[wid])
                return
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.3)

    # ------------------------------------------------------------ faults and operator actions
    async def event(self, ev: Event) -> None:
        await self.until(ev.at_s)
        index: int | None = None
        started: Started | None = None
        try:
            try:
                started = await self.apply(ev)
            except Exception as err:  # e.g. Temporal away for longer than an operator retries
                self.result.skipped[f"{ev.kind}(failed: {type(err).__name__})"] += 1
                return
            if started.undo is None:
                self.result.skipped[started.label] += 1
                return
            self.note("begin", label=started.label, params=ev.params)
            if ev.kind not in ("flatten", "kill_switch", "price_gap"):
                index = self.log.begin(started.label, self.now())
                self.result.faults[started.label] += 1
            else:
                self.result.faults[f"op:{ev.kind}"] += 1
            await self.until(ev.end_s)
        finally:
            if started is not None and started.undo is not None:
                await asyncio.shield(self._undo(started, index, ev))

    async def _undo(self, started: Started, index: int | None, ev: Event) -> None:
        try:
            assert started.undo is not None
            await started.undo()
        except Exception as err:  # faults_clear() ends it for sure at the end of the window
            self.stack.say(f"seed {self.s.seed}: ending {ev.kind} failed: {type(err).__name__}: {err}")
        self.note("end", label=started.label)
        if index is not None:
            self.log.end(index, self.now() + started.tail_s)

    async def apply(self, ev: Event) -> Started:
        """Start one fault or action; returns its label and how to end it (no undo: skipped)."""
        if ev.kind in VENUE_KINDS:
            fault = venue_fault(ev, self.fault_keys, self.stack.cfg.client_timeout_s)
            if fault.config is None:
                return Started(fault.label, None)
            await post_faults(self.stack, fault.config)
            if fault.disarm is not None:
                disarm = fault.disarm
                return Started(fault.label, lambda: self.stack.admin("POST", "faults", disarm), fault.tail_s)
            return Started(fault.label, lambda: clear_faults(self.stack))
        if ev.kind == "kill":
            target = ev.params["target"]
            self.down[target] += 1  # two kills of one service may overlap: it is back after the last
            await asyncio.to_thread(self.stack.kill, target)

            async def restart() -> None:  # ends once it serves again
                # Still counted down until it serves: decremented first, the supervisor saw a killed
                # service with nothing holding it down while this restart queued behind another one's
                # 45 s readiness wait, and counted the schedule's own SIGKILL as a crash (code -9).
                # An overlapping kill can hit the process a restart just started and end meanwhile
                # (seed 17: the watcher then stayed down until the drain): the last one out starts it
                # again. A few times only: one that dies by itself each time is the supervisor's find.
                for _ in range(3):
                    if self.down[target] != 1:
                        break
                    await self.stack.restart_services(lambda: self.killed() - {target})
                    if self.stack.services[target].alive():
                        break
                self.down[target] -= 1

            return Started(f"kill:{target}", restart)
        if ev.kind == "temporal_restart":
            self.note("stopping", label="temporal_restart")
            await asyncio.to_thread(self.stack.stop_temporal)
            return Started("temporal_restart", lambda: asyncio.to_thread(self.stack.start_temporal))
        if ev.kind == "redis_outage":
            await asyncio.to_thread(self.stack.stop_redis)
            return Started("redis_outage", lambda: asyncio.to_thread(self.stack.start_redis))
        if ev.kind == "flatten":
            await self.portfolio_update("emergency_flatten", {"reason": "fault explorer"})
            return Started("flatten", lambda: self.portfolio_update("set_emergency_state", "NORMAL"))
        if ev.kind == "kill_switch":
            await self.portfolio_update("set_kill_switch", {"on": True, "reason": "fault explorer"})
            return Started("kill_switch", lambda: self.portfolio_update("set_kill_switch", {"on": False}))
        return Started("price_gap", await self.price_gap(ev))

    async def price_gap(self, ev: Event) -> Callable[[], Awaitable[None]]:
        sym = self.symbols[int(ev.params["symbol"])]
        before = self.prices[sym]
        sign = -1 if ev.params["direction"] == "down" else 1
        after = (before * (1 + sign * D(str(ev.params["pct"])) / 100)).quantize(D("0.01"))
        await self.stack.set_price(sym, after)
        self.prices[sym] = after

        async def restore() -> None:
            if ev.params.get("restore"):
                await self.stack.set_price(sym, before)
                self.prices[sym] = before

        return restore

    async def portfolio_update(self, name: str, arg: Any, deadline: float = 20.0) -> None:
        """An operator update to the portfolio, retried while Temporal or the lifecycle worker is away."""
        handle = self.stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        ends = time.monotonic() + deadline
        while True:
            try:
                await handle.execute_update(name, arg, rpc_timeout=timedelta(seconds=5))
                return
            except Exception:
                if time.monotonic() > ends:
                    raise
                await asyncio.sleep(0.3)

    async def portfolio_normal(self, deadline: float = 20.0) -> None:
        await self.portfolio_update("set_kill_switch", {"on": False, "reason": "fault explorer"}, deadline)
        await self.portfolio_update("set_emergency_state", "NORMAL", deadline)

    async def portfolio_normal_or_note(self, deadline: float) -> None:
        try:
            await self.portfolio_normal(deadline)
        except Exception as err:  # the portfolio did not take an operator update for `deadline` s
            self.harness_error("portfolio back to NORMAL", err)

    async def faults_clear(self) -> None:
        """Every fault ends: venue faults cleared, every process up, the portfolio NORMAL."""
        await settle_late_orders(self.stack)
        await clear_faults(self.stack)
        await asyncio.to_thread(self.stack.start_temporal)
        await asyncio.to_thread(self.stack.start_redis)
        await self.stack.restart_services()
        await self.portfolio_normal_or_note(deadline=30)

    # ------------------------------------------------------------ drain
    async def drain(self) -> None:
        """Close whatever still runs until nothing runs, the venue is flat and no slot is held."""
        ends = self.now() + self.opts.drain_s
        asked: dict[str, float] = {}
        closing: set[asyncio.Task[bool]] = set()
        try:
            await self._drain(ends, asked, closing)
        finally:
            for task in closing:
                task.cancel()
            await asyncio.gather(*closing, return_exceptions=True)

    async def _drain(self, ends: float, asked: dict[str, float], closing: set[asyncio.Task[bool]]) -> None:
        while self.now() < ends:
            running = await self.observer.running()
            venue = await self.observer.venue()
            portfolio = await self.observer.portfolio()
            if running == {} and venue is not None and not venue.positions and portfolio is not None:
                if portfolio.slots_used == 0:
                    return
            for wid in running or {}:
                if self.now() - asked.get(wid, -10.0) > 3.0:
                    asked[wid] = self.now()
                    task = asyncio.create_task(self.close(wid, deadline=min(ends, self.now() + 3)))
                    closing.add(task)
                    task.add_done_callback(closing.discard)
            await asyncio.sleep(0.5)

    # ------------------------------------------------------------ end of the seed
    async def end_checks(self) -> None:
        statuses = await self.statuses()
        for wid in unfinished(statuses):
            self.violation("unfinished_workflow", f"{wid} still running: {await self.status_of(wid)}")
        await self.observer.venue()
        orders, algos = self.observer.all_orders(), self.observer.all_algos()
        if dups := duplicate_client_ids(orders, algos):
            self.violation("duplicate_client_id", f"{dups}")
        sides = {wid: lc.side for wid, lc in self.plan.items()}
        if multi := entries_per_workflow(orders, sides):
            self.violation("multiple_entries", f"{multi}")
        await self.venue_at_end(orders)
        await self.pnl(statuses, orders)
        self.scan_logs()

    async def statuses(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for wid in sorted(self.plan):
            try:
                desc = await self.stack.client.get_workflow_handle(wid).describe(rpc_timeout=RPC)
                out[wid] = desc.status.name if desc.status else "UNKNOWN"
                first = desc.raw_description.workflow_execution_info.first_run_id
                if first and first != desc.run_id:
                    self.result.continued_as_new += 1
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    self.note("never started", workflow=wid)
                else:
                    self.harness_error(f"describe {wid}", err)
        running = await self.observer.running() or {}
        out.update(dict.fromkeys((w for w in running if w not in out), "RUNNING"))
        return out

    async def venue_at_end(self, orders: list[dict]) -> None:
        risk = {p.symbol: p.position_amt for p in await self.venue.position_risk() if p.position_amt != 0}
        if risk:
            self.violation("venue_not_flat_at_end", f"positionRisk after the drain: {risk}")
        derived = positions_from_orders(orders)
        mine = {s: q for s, q in risk.items() if s in self.symbols}
        if derived != mine:
            self.violation(
                "venue_record_inconsistent", f"orders add up to {derived}, positionRisk says {mine}"
            )

    async def pnl(self, statuses: dict[str, str], orders: list[dict]) -> None:
        trades: list[dict] = []
        for sym in self.symbols:
            for t in await self.venue.user_trades(sym, limit=1000):
                trades.append(
                    {
                        "symbol": t.symbol,
                        "id": t.id,
                        "orderId": t.order_id,
                        "side": t.side,
                        "price": t.price,
                        "qty": t.qty,
                        "commission": t.commission,
                        "time": t.time,
                    }
                )
        for wid, status in statuses.items():
            fills, outcome = await self.fills_of(wid, status)
            if outcome:
                self.result.outcomes[outcome] += 1
            self.note("finished", workflow=wid, status=status, outcome=outcome, fills=len(fills))
            if not fills or wid not in self.plan:
                continue
            pos = FinishedPosition(wid, self.symbol_of[wid], self.plan[wid].side, fills)
            if (msg := pnl_mismatch(pos, orders, trades)) is not None:
                self.violation("pnl_mismatch", msg)

    async def fills_of(self, wid: str, status: str) -> tuple[list[Fill], str | None]:
        handle = self.stack.client.get_workflow_handle(wid)
        try:
            if status == "COMPLETED":
                handle = self.stack.client.get_workflow_handle(wid, result_type=PositionResult)
                result = await asyncio.wait_for(handle.result(), 10)
                outcome = result.status.value
                if result.rejection_gate:
                    outcome = f"{outcome}:{result.rejection_gate}"
                return list(result.fills), outcome
            fills = await handle.query("fills", result_type=list[Fill], rpc_timeout=timedelta(seconds=5))
            return fills, status
        except Exception as err:
            self.harness_error(f"fills of {wid} ({status})", err)
            return [], status

    def scan_logs(self) -> None:
        for path in self.stack.log_paths():
            start = self.log_offsets.get(path, 0)
            with contextlib.suppress(FileNotFoundError), path.open("rb") as fh:
                fh.seek(start)
                text = fh.read().decode(errors="replace")
                self.log_offsets[path] = start + len(text.encode(errors="replace"))
                for line in nondeterminism(text)[:3]:
                    self.violation("nondeterminism", f"{path.name}: {line}")
                failed_runs = RUN_ID.findall(ANSI.sub("", "\n".join(nondeterminism(text))))
                self.nondeterministic_runs.update(failed_runs)
                failures = task_failures(text)
                self.result.task_failures += len(failures)
                for line in failures[:5]:
                    self.note("worker log", log=path.name, line=line)

    # ------------------------------------------------------------ leave a clean stack
    async def cleanup(self) -> None:
        await clear_faults(self.stack)
        await asyncio.to_thread(self.stack.start_temporal)
        await asyncio.to_thread(self.stack.start_redis)
        await self.stack.restart_services()
        await self.set_aside_nondeterministic_runs()
        running = await self.observer.running() or {}
        for wid in running:
            with contextlib.suppress(Exception):
                await self.stack.client.get_workflow_handle(wid).terminate("fault explorer: end of seed")
        await self.flatten_venue()
        await self.portfolio_normal_or_note(deadline=20)
        ends = time.monotonic() + 3 * self.stack.cfg.holder_check_s + 10
        while time.monotonic() < ends:
            portfolio = await self.observer.portfolio()
            if portfolio is not None and portfolio.slots_used == 0:
                return
            await asyncio.sleep(0.5)
        self.stack.say(f"seed {self.s.seed}: portfolio still holds slots after the cleanup")

    async def set_aside_nondeterministic_runs(self) -> None:
        """Keep the history of each run that failed to replay (the evidence), then terminate it: a
        portfolio stuck on its nondeterminism error would refuse every later seed's entries, and count
        one defect as hundreds of violations."""
        for run_id in sorted(self.nondeterministic_runs):
            try:
                async for wf in self.stack.client.list_workflows(f"RunId = '{run_id}'"):
                    handle = self.stack.client.get_workflow_handle(wf.id, run_id=run_id)
                    self.result.histories[wf.id] = (await handle.fetch_history()).to_json()
                    if wf.status is not None and wf.status.name == "RUNNING":
                        await handle.terminate("fault explorer: failed to replay (history kept)")
                    self.note("nondeterministic run set aside", workflow=wf.id, run_id=run_id)
            except Exception as err:
                self.harness_error(f"setting aside run {run_id}", err)

    async def flatten_venue(self) -> None:
        """Whatever a broken seed left on its symbols goes, so the next seed starts from nothing."""
        for p in await self.venue.position_risk():
            if p.position_amt != 0 and p.symbol in self.symbols:
                side = "SELL" if p.position_amt > 0 else "BUY"
                await self.venue.new_order(
                    p.symbol,
                    side,
                    "MARKET",
                    abs(p.position_amt),
                    reduce_only=True,
                    client_order_id=f"fxclean-{self.s.seed}-{p.symbol}",
                )
        for sym in self.symbols:
            for algo in await self.venue.open_algo_orders(sym):
                with contextlib.suppress(Exception):
                    await self.venue.cancel_algo_order(algo_id=algo.algo_id)

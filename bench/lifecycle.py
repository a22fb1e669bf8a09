"""Benchmark: the position lifecycle on Temporal against a local stack.

`python -m bench.lifecycle [--quick] [--intents N] [--lifecycles N] [--burst N] [--budget-s S]
[--path admit|start]`

Starts its own stack for each measurement (bench/stack.py: Temporal dev server with the search
attributes, Redis, the paper exchange with manual prices and synthetic T001USDT... symbols, the
lifecycle and exchange workers in this process, the portfolio started first) and measures, with the
intents submitted to the portfolio's admission (`--path admit`, the default: workers/admission.py) or
as one PositionWorkflow each (`--path start`, as `temporal workflow start` does):

1. floor: start of a no-op workflow + one update whose handler runs one activity (on a second task
   queue, like the exchange activities), p50 over 100 sequential iterations, interleaved with (2);
2. intent-to-order: N sequential intents, from the submission to the entry fill's time at the
   exchange (the venue's wall clock, ms; same host); one T-symbol each, the next intent submitted once
   the previous position is open and idle; plus, from the position histories, the median of each
   stage and the Temporal steps its own workflow took before the entry order;
3. lifecycles/s: N concurrent open -> `close` update -> completed, one T-symbol each; then its
   throughput floor, N/2 no-op workflows at once doing a lifecycle's rounds of activities
   (`LIFECYCLE_STEPS`), and the same with its Redis writes as local activities;
4. burst: N intents at once over 100 symbols with max 10 open positions and 2,000 USDT in total, as in
   tests/workflows/test_burst.py: time from the first submission to all decided (admitted: the
   portfolio's totals and the granted positions open; started: OPEN / REJECTED / FAILED in
   visibility), errors, and violations (a watcher querying the portfolio, and the venue's positions).

Progress goes to stderr; the last stdout line is one JSON object. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from bench.stack import LocalStack, local_stack, run_in_temp_dir
from trading.instruments import DEFAULT_RULES
from trading.intents import Side
from trading.pnl import Fill
from workers.admission import admissions, admit_intents
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    CloseResult,
    PortfolioView,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionView,
)

D = Decimal
BENCH_WF_QUEUE = "bench-floor"
BENCH_ACT_QUEUE = "bench-floor-activities"
APPLY_RESULT_STREAM = "quantum:stream:apply.result"
BURST_SYMBOLS = sorted(DEFAULT_RULES) + [f"T{i:03d}USDT" for i in range(1, 91)]
BURST_LIMITS = dict(
    gov_max_open_positions=10, gov_max_total_notional_usdt=D(2000), gov_max_notional_per_trade_usdt=D(200)
)
WIDE_LIMITS = dict(
    gov_max_open_positions=1000,
    gov_max_total_notional_usdt=D(100_000_000),
    gov_max_notional_per_trade_usdt=D(1000),
)
NOTIONAL = D(50)  # T-symbols trade at 100.00 with a 5 USDT minimum
QUIET = PositionOptions(mark_check_seconds=3600)  # no mark checks during a measurement
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench.lifecycle {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[idx]


def ms(x: float) -> float:
    return round(x, 2)


# --------------------------------------------------------------------------- the floor workflow
@activity.defn(name="bench_echo")
async def bench_echo(value: int) -> int:
    return value


@workflow.defn(name="BenchFloorWorkflow", sandboxed=False)
class BenchFloorWorkflow:
    """No-op: waits for one `go` update, whose handler runs one activity on another task queue."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self._done and workflow.all_handlers_finished())

    @workflow.update(name="go")
    async def go(self, value: int) -> int:
        out = await workflow.execute_activity(
            bench_echo, value, task_queue=BENCH_ACT_QUEUE, start_to_close_timeout=timedelta(seconds=10)
        )
        self._done = True
        return out


# A lifecycle's own steps, as its history shows them (tests/workflows/histories/admission/
# position-adm-0.json): open_entry, place_stop, two projections together, publish_levels, the exit's
# place_order, a projection, cancel_stop, two publish_levels, a projection, journal_trade. One round a
# workflow task; R an activity on another task queue, L a local activity.
LIFECYCLE_STEPS = "R,R,RR,R,R,R,R,R,R,R,R"
# The same with the Redis writes (projections, levels) as local activities.
LIFECYCLE_STEPS_LOCAL = "R,R,LL,L,R,L,R,L,L,L,R"


@activity.defn(name="bench_noop")
async def bench_noop() -> None:
    return None


@workflow.defn(name="BenchStepsWorkflow", sandboxed=False)
class BenchStepsWorkflow:
    """The throughput floor: a lifecycle's rounds of steps (`LIFECYCLE_STEPS`) doing nothing."""

    @workflow.run
    async def run(self, steps: str) -> None:
        for round_ in steps.split(","):
            await asyncio.gather(
                *(
                    workflow.execute_local_activity(bench_noop, start_to_close_timeout=timedelta(seconds=10))
                    if kind == "L"
                    else workflow.execute_activity(
                        bench_noop, task_queue=BENCH_ACT_QUEUE, start_to_close_timeout=timedelta(seconds=10)
                    )
                    for kind in round_
                )
            )


def floor_workflow_worker(client: Client) -> Worker:
    return Worker(
        client,
        task_queue=BENCH_WF_QUEUE,
        workflows=[BenchFloorWorkflow, BenchStepsWorkflow],
        activities=[bench_noop],
    )


def floor_activity_worker(client: Client) -> Worker:
    return Worker(client, task_queue=BENCH_ACT_QUEUE, activities=[bench_echo, bench_noop])


async def steps_per_s(client: Client, n: int, steps: str) -> float:
    """Workflows of `steps` completed per second, `n` of them all at once, started 64 at a time (as the
    lifecycles phase runs its lifecycles)."""
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            handle = await client.start_workflow(
                BenchStepsWorkflow.run, steps, id=f"bench-steps-{steps}-{i}", task_queue=BENCH_WF_QUEUE
            )
        await handle.result()

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.monotonic() - t0)


# --------------------------------------------------------------------------- helpers
class CpuMeter:
    """CPU seconds of our processes between two points (from /proc/<pid>/stat: user + system)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**pids, "bench+workers": os.getpid()}
        self._t0 = time.monotonic()
        self._c0 = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    rest = fh.read().rpartition(")")[2].split()
                out[name] = (int(rest[11]) + int(rest[12])) / self.TICK
            except (OSError, IndexError, ValueError):
                out[name] = 0.0
        return out

    def percent(self) -> dict[str, float]:
        wall = max(1e-6, time.monotonic() - self._t0)
        now = self._read()
        return {name: round(100 * (now[name] - self._c0.get(name, 0.0)) / wall, 1) for name in now}


class EntryWatcher:
    """Learns that a position's entry is done from the projection's `apply.result` stream entry (one
    blocking XREAD for all positions, instead of polling every workflow)."""

    def __init__(self, redis_port: int) -> None:
        self.redis = aioredis.Redis(port=redis_port)
        self.arrived: set[str] = set()
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EntryWatcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        await self.redis.aclose()

    async def _run(self) -> None:
        last = "0-0"
        while True:
            try:
                resp = await self.redis.xread({APPLY_RESULT_STREAM: last}, count=1000, block=500)
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                await asyncio.sleep(0.1)
                continue
            for _stream, entries in resp or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if fields.get(b"action") != b"entry":
                        continue
                    wid = fields[b"workflow_id"].decode()
                    self.arrived.add(wid)
                    fut = self.waiting.pop(wid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(None)

    async def wait(self, handle: WorkflowHandle[Any, Any], timeout: float) -> bool:
        """True once the entry is done. On a timeout, asks the workflow itself (projection late?)."""
        wid = handle.id
        if wid not in self.arrived:
            fut = self.waiting.setdefault(wid, asyncio.get_running_loop().create_future())
            try:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                view = await handle.query("state", result_type=PositionView)
                return view.status.value in ("OPEN", "CLOSING")
        return True


def intent(symbol: str, i: int, wid: str, notional: Decimal = NOTIONAL) -> PositionInput:
    return PositionInput(
        symbol=symbol,
        side=Side.LONG if i % 2 else Side.SHORT,
        notional_usdt=notional,
        intent_id=wid,
        strategy="bench",
        options=QUIET,
    )


# How intents are submitted: "admit" (the portfolio decides first and starts a workflow only for a
# grant: workers/admission.py) or "start" (a PositionWorkflow per intent, which asks the portfolio).
PATH = {"submit": "admit"}


async def start_position(client: Client, inp: PositionInput, wid: str) -> WorkflowHandle[Any, PositionResult]:
    if PATH["submit"] == "admit":
        await admit_intents(client, admissions([(wid, inp)]))
        return client.get_workflow_handle(wid, result_type=PositionResult)
    return await client.start_workflow(
        "PositionWorkflow", inp, id=wid, task_queue=LIFECYCLE_TASK_QUEUE, result_type=PositionResult
    )


async def open_and_close(
    stack: LocalStack, watcher: EntryWatcher, symbol: str, i: int, wid: str
) -> PositionResult:
    h = await start_position(stack.client, intent(symbol, i, wid), wid)
    if not await watcher.wait(h, 30):
        raise RuntimeError(f"{wid} did not open")
    await h.execute_update("close", {"reason": "bench"}, result_type=CloseResult)
    return await h.result()


# --------------------------------------------------------------------------- 1 + 2
async def floor_once(client: Client, i: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    h = await client.start_workflow(BenchFloorWorkflow.run, id=f"bench-floor-{i}", task_queue=BENCH_WF_QUEUE)
    t1 = time.perf_counter()
    await h.execute_update(BenchFloorWorkflow.go, i)
    t2 = time.perf_counter()
    return (t2 - t0) * 1000, (t1 - t0) * 1000


def at(ev: Any) -> float:
    """A history event's server time in ms since the epoch."""
    return ev.event_time.seconds * 1000 + ev.event_time.nanos / 1e6


def breakdown(history: Any, t0_ms: float, fill_ms: int) -> dict[str, float] | None:
    """Where one intent's time went, from its position's history (ms), and how many Temporal steps its
    own workflow took before the entry order: workflow tasks, activities, signals sent."""

    started = None
    tasks = activities = signals = 0
    for ev in history.events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = at(ev)
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            tasks += 1
        elif et == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED:
            signals += 1
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if ev.activity_task_scheduled_event_attributes.activity_type.name == "open_entry":
                if started is None:
                    return None
                return {
                    "submit_to_workflow_started": started - t0_ms,
                    "workflow_started_to_entry_scheduled": at(ev) - started,
                    "entry_scheduled_to_fill": fill_ms - at(ev),
                    "workflow_tasks_before_entry": tasks,
                    "activities_before_entry": activities,
                    "signals_sent_before_entry": signals,
                }
            activities += 1
    return None


async def phase_floor_and_intents(
    stack: LocalStack, n_intents: int, n_floor: int, deadline: float
) -> dict[str, Any]:
    """Each intent gets its own T-symbol and stays open (idle: no mark checks), so nothing else runs
    while the next intent is measured; the stack is torn down afterwards."""
    client = stack.client
    async with EntryWatcher(stack.settings.redis_port) as watcher:
        log("warm-up: 5 floor iterations, 3 open/close lifecycles")
        for i in range(5):
            await floor_once(client, -1 - i)
        for i in range(3):
            await open_and_close(stack, watcher, f"T{n_intents + 1 + i:03d}USDT", i, f"bench-warm-{i}")

        floor: list[float] = []
        floor_start: list[float] = []

        async def one_floor() -> None:
            total, start = await floor_once(client, len(floor))
            floor.append(total)
            floor_start.append(start)

        every = max(1, n_intents // n_floor)  # a floor iteration before every `every`-th intent
        alone = max(0, n_floor - -(-n_intents // every))
        for _ in range(alone):
            await one_floor()
        log(
            f"floor: {len(floor)} iterations alone, p50 {statistics.median(floor) if floor else 0:.1f} ms; "
            f"now {n_intents} sequential intents, one floor iteration before every {every}"
        )
        lat: list[float] = []
        samples: list[tuple[WorkflowHandle[Any, PositionResult], float, int]] = []
        problems = 0
        meter = CpuMeter(stack.pids())
        for i in range(n_intents):
            if time.monotonic() > deadline:
                log(f"time budget reached after {i} intents")
                break
            if i % every == 0:
                await one_floor()
            wid = f"bench-i2o-{i}"
            inp = intent(f"T{i + 1:03d}USDT", i, wid)
            t0_ms = time.time() * 1000
            h = await start_position(client, inp, wid)
            if not await watcher.wait(h, 30):
                problems += 1
                log(f"  {wid}: not open ({(await h.query('state', result_type=PositionView)).status})")
                continue
            fills = await h.query("fills", result_type=list[Fill])
            fill_ms = min(f.time_ms for f in fills)
            lat.append(fill_ms - t0_ms)
            samples.append((h, t0_ms, fill_ms))
            if (i + 1) % max(1, n_intents // 5) == 0:
                log(
                    f"  {i + 1}/{n_intents}: intent-to-order p50 {statistics.median(lat):.1f} ms, "
                    f"p99 {pct(lat, 0.99):.1f} ms; floor p50 {statistics.median(floor):.1f} ms"
                )
        cpu = meter.percent()
    steps: dict[str, list[float]] = {}
    for h, t0_ms, fill_ms in samples:
        b = breakdown(await h.fetch_history(), t0_ms, fill_ms)
        for k, v in (b or {}).items():
            steps.setdefault(k, []).append(v)
    p50 = statistics.median(lat) if lat else float("nan")
    floor_p50 = statistics.median(floor)
    return {
        "intent_to_order_p50_ms": ms(p50),
        "intent_to_order_p99_ms": ms(pct(lat, 0.99)) if lat else None,
        "intent_to_order_max_ms": ms(max(lat)) if lat else None,
        "floor_p50_ms": ms(floor_p50),
        "floor_p99_ms": ms(pct(floor, 0.99)),
        "floor_start_p50_ms": ms(statistics.median(floor_start)),
        "ratio_p50": round(p50 / floor_p50, 2),
        "intents_measured": len(lat),
        "floor_iterations": len(floor),
        "intent_problems": problems,
        "intent_to_order_steps_p50_ms": {k: ms(statistics.median(v)) for k, v in steps.items() if v},
        "cpu_pct_intents": cpu,
    }


# --------------------------------------------------------------------------- 3
async def phase_lifecycles(stack: LocalStack, n: int, deadline: float) -> dict[str, Any]:
    client = stack.client
    gate = asyncio.Semaphore(64)
    failures: list[str] = []
    async with EntryWatcher(stack.settings.redis_port) as watcher:
        log("warm-up: 3 open/close lifecycles")
        for i in range(3):
            await open_and_close(stack, watcher, f"T{n + 1 + i:03d}USDT", i, f"bench-lc-warm-{i}")
        done = 0
        cut_off = False

        async def lifecycle(i: int) -> None:
            nonlocal done
            wid = f"bench-lc-{i}"
            try:
                async with gate:
                    h = await start_position(client, intent(f"T{i + 1:03d}USDT", i, wid), wid)
                if not await watcher.wait(h, max(5.0, deadline - time.monotonic())):
                    raise RuntimeError("did not open")
                async with gate:
                    await h.execute_update("close", {"reason": "bench"}, result_type=CloseResult)
                result = await h.result()
                if result.status.value != "CLOSED":
                    raise RuntimeError(f"ended {result.status.value}")
                done += 1
            except Exception as exc:
                if not cut_off:  # not cancelled by the time budget
                    failures.append(f"{wid}: {type(exc).__name__}: {exc}")

        log(f"{n} concurrent lifecycles (open -> close update -> completed), one symbol each")
        meter = CpuMeter(stack.pids())
        t0 = time.monotonic()
        tasks = [asyncio.create_task(lifecycle(i)) for i in range(n)]

        async def progress() -> None:
            while True:
                await asyncio.sleep(5)
                log(f"  {done}/{n} lifecycles completed")

        prog = asyncio.create_task(progress())
        _, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
        wall = time.monotonic() - t0
        prog.cancel()
        cpu = meter.percent()
        cut_off = True
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log(f"time budget reached: {len(pending)} lifecycles unfinished")
    for f in failures[:5]:
        log(f"  failure: {f}")
    n_floor = max(50, n // 2)
    floor = await steps_per_s(client, n_floor, LIFECYCLE_STEPS)
    floor_local = await steps_per_s(client, n_floor, LIFECYCLE_STEPS_LOCAL)
    log(
        f"throughput floor: {floor:.1f}/s no-op workflows of a lifecycle's steps, {floor_local:.1f}/s "
        "with its Redis writes local"
    )
    return {
        "lifecycles_per_s": round(done / wall, 1),
        "steps_floor_per_s": round(floor, 1),
        "steps_floor_local_per_s": round(floor_local, 1),
        "lifecycles_vs_steps_floor": round(done / wall / floor, 2),
        "lifecycles": n,
        "lifecycles_completed": done,
        "lifecycles_failed": len(failures),
        "lifecycles_unfinished": len(pending),
        "lifecycles_wall_s": round(wall, 2),
        "cpu_pct_lifecycles": cpu,
    }


# --------------------------------------------------------------------------- 4
def burst_marks(history: Any, t0_ms: float) -> dict[str, float] | None:
    """One burst intent's path (ms): submit spread, wait for its first task, first task until the
    reservation request is out, the portfolio's answer, and the rest until decided."""
    started = first_task = sig_out = sig_in = None
    for ev in history.events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            started = at(ev)
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and first_task is None:
            first_task = at(ev)
        elif et == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED and sig_out is None:
            sig_out = at(ev)
        elif (
            et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            and sig_in is None
            and ev.workflow_execution_signaled_event_attributes.signal_name == "reservation_decided"
        ):
            sig_in = at(ev)
    if not (started and first_task and sig_out and sig_in):
        return None
    end = at(history.events[-1])
    return {
        "started_after_t0": started - t0_ms,
        "wait_first_task": first_task - started,
        "first_task_to_request": sig_out - first_task,
        "portfolio_round_trip": sig_in - sig_out,
        "answer_to_last_event": end - sig_in,
    }


DECIDED = (
    "WorkflowType='PositionWorkflow' AND WorkflowId STARTS_WITH 'bench-burst-' AND "
    "(PositionStatus IN ('OPEN','REJECTED','FAILED') OR "
    "ExecutionStatus IN ('Failed','Terminated','TimedOut'))"
)


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


async def phase_burst(stack: LocalStack, n: int, deadline: float) -> dict[str, Any]:
    client = stack.client
    max_open, max_notional = (
        BURST_LIMITS["gov_max_open_positions"],
        BURST_LIMITS["gov_max_total_notional_usdt"],
    )
    async with EntryWatcher(stack.settings.redis_port) as watcher:
        log("warm-up: 1 open/close lifecycle")
        await open_and_close(stack, watcher, "T090USDT", 0, "bench-burst-warm")
    intents = [
        PositionInput(
            symbol=BURST_SYMBOLS[i % 100],
            side=Side.LONG if i % 2 else Side.SHORT,
            notional_usdt=D(200),
            intent_id=f"burst-{i}",
            strategy="bench",
            options=QUIET,
        )
        for i in range(n)
    ]
    watch = {
        "queries": 0,
        "violations": 0,
        "peak_slots": 0,
        "peak_notional": D(0),
        "decided_by_portfolio_s": None,
        "granted": 0,
        "denied": 0,
    }
    base_totals: list[int] = []
    stop = asyncio.Event()
    t0 = 0.0

    async def watcher_task() -> None:
        handle = client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        while not stop.is_set():
            try:
                view = await handle.query("state", result_type=PortfolioView)
            except Exception:
                await asyncio.sleep(0.05)
                continue
            watch["queries"] += 1
            if not base_totals:
                base_totals.extend(
                    [view.granted_total + view.denied_total, view.granted_total, view.denied_total]
                )
            watch["granted"] = view.granted_total - base_totals[1]
            watch["denied"] = view.denied_total - base_totals[2]
            watch["peak_slots"] = max(watch["peak_slots"], view.slots_used)
            watch["peak_notional"] = max(watch["peak_notional"], view.notional_used)
            if view.slots_used > max_open or view.notional_used > max_notional:
                watch["violations"] += 1
            if (
                watch["decided_by_portfolio_s"] is None
                and t0
                and view.granted_total + view.denied_total - base_totals[0] >= n
            ):
                watch["decided_by_portfolio_s"] = round(time.monotonic() - t0, 2)
            await asyncio.sleep(0.05)

    gate = asyncio.Semaphore(64)
    submit_errors: list[str] = []

    async def submit(inp: PositionInput) -> None:
        try:
            async with gate:
                await start_position(client, inp, f"bench-{inp.intent_id}")
        except Exception as exc:
            submit_errors.append(f"{inp.intent_id}: {type(exc).__name__}: {exc}")

    watcher = asyncio.create_task(watcher_task())
    await asyncio.sleep(0.2)
    log(f"burst: {n} intents at once over 100 symbols, max {max_open} open, {max_notional} USDT in total")
    meter = CpuMeter(stack.pids())
    t0 = time.monotonic()
    t0_ms = time.time() * 1000
    await asyncio.gather(*(submit(i) for i in intents))
    submitted_s = time.monotonic() - t0
    log(f"  all {n} starts accepted in {submitted_s:.2f} s")
    decided = 0
    last_log = time.monotonic()
    admit = PATH["submit"] == "admit"
    while time.monotonic() < deadline:
        if admit:  # refused intents never start a workflow: the portfolio's totals say they are decided
            opened_now = await count(client, DECIDED)
            decided = int(watch["denied"]) + min(opened_now, int(watch["granted"]))
        else:
            decided = await count(client, DECIDED)
        if decided >= n - len(submit_errors):
            break
        if time.monotonic() - last_log > 5:
            log(f"  {decided}/{n} decided")
            last_log = time.monotonic()
        await asyncio.sleep(0.1)
    burst_s = time.monotonic() - t0
    cpu = meter.percent()
    stop.set()
    await watcher
    prefix = "WorkflowType='PositionWorkflow' AND WorkflowId STARTS_WITH 'bench-burst-' AND "
    opened = await count(client, prefix + "PositionStatus='OPEN'")
    rejected = int(watch["denied"]) if admit else await count(client, prefix + "PositionStatus='REJECTED'")
    failed = await count(
        client, prefix + "(PositionStatus='FAILED' OR ExecutionStatus IN ('Failed','Terminated','TimedOut'))"
    )
    assert stack.exchange_client is not None
    venue_open = [p for p in await stack.exchange_client.position_risk() if p.position_amt != 0]
    entry_orders = [o for o in stack.venue.admin("GET", "orders") if not o["reduceOnly"]]
    venue_notional = sum((abs(p.notional) for p in venue_open), D(0))
    # The warm-up's one entry order is not part of the burst.
    burst_entry_orders = len(entry_orders) - 1
    violations = (
        watch["violations"]
        + max(0, len(venue_open) - max_open)
        + (1 if venue_notional > max_notional else 0)
        + max(0, burst_entry_orders - opened)
    )
    for e in submit_errors[:5]:
        log(f"  submit error: {e}")
    steps: dict[str, list[float]] = {}
    for inp in intents[:: max(1, n // 50)]:  # 50 sampled histories: where a burst intent's time went
        try:
            marks = burst_marks(
                await client.get_workflow_handle(f"bench-{inp.intent_id}").fetch_history(), t0_ms
            )
        except Exception:
            marks = None
        for k, v in (marks or {}).items():
            steps.setdefault(k, []).append(v)
    log(
        f"  decided {decided}/{n} in {burst_s:.2f} s: opened {opened}, rejected {rejected}, failed {failed}; "
        f"venue open {len(venue_open)} ({venue_notional:.2f} USDT), {burst_entry_orders} entry orders; "
        f"peak slots {watch['peak_slots']}, {watch['queries']} portfolio queries"
    )
    return {
        "burst_path": PATH["submit"],
        "burst_intents": n,
        "burst_opened": opened,
        "burst_rejected": rejected,
        "burst_errors": failed + len(submit_errors),
        "burst_violations": violations,
        "burst_seconds": round(burst_s, 2),
        "burst_undecided": max(0, n - decided),
        "burst_submit_seconds": round(submitted_s, 2),
        "burst_portfolio_decided_seconds": watch["decided_by_portfolio_s"],
        "burst_peak_slots": watch["peak_slots"],
        "burst_peak_notional": float(watch["peak_notional"]),
        "burst_venue_open": len(venue_open),
        "burst_entry_orders": burst_entry_orders,
        "burst_steps_p50_ms": {k: ms(statistics.median(v)) for k, v in steps.items()},
        "burst_steps_max_ms": {k: ms(max(v)) for k, v in steps.items()},
        "cpu_pct_burst": cpu,
    }


# --------------------------------------------------------------------------- driver
async def with_stack(
    tmp: Path,
    name: str,
    extra_symbols: int,
    limits: dict[str, Any],
    body: Callable[[LocalStack], Awaitable[dict[str, Any]]],
    **kwargs: Any,
) -> dict[str, Any]:
    log(f"--- {name}: starting a fresh stack")
    async with local_stack(tmp / name, extra_symbols=extra_symbols, log=log, **limits, **kwargs) as stack:
        return await body(stack)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    started = time.monotonic()
    out: dict[str, Any] = {}
    budget_end = started + args.budget_s
    # Shares of the budget for the three stacks (each also spends a few seconds starting and stopping).
    end_2 = started + 0.55 * args.budget_s
    out.update(
        await with_stack(
            tmp,
            "intents",
            max(90, args.intents + 3),
            WIDE_LIMITS,
            lambda s: phase_floor_and_intents(s, args.intents, 100, end_2),
            extra_workers=[floor_workflow_worker, floor_activity_worker],
        )
    )
    log(
        f"intent-to-order p50 {out['intent_to_order_p50_ms']} ms, p99 {out['intent_to_order_p99_ms']} ms; "
        f"floor p50 {out['floor_p50_ms']} ms; ratio {out['ratio_p50']}"
    )
    end_3 = time.monotonic() + 0.45 * (budget_end - time.monotonic())
    out.update(
        await with_stack(
            tmp,
            "lifecycles",
            max(90, args.lifecycles + 3),
            WIDE_LIMITS,
            lambda s: phase_lifecycles(s, args.lifecycles, end_3),
            extra_workers=[floor_workflow_worker, floor_activity_worker],
        )
    )
    log(f"lifecycles/s {out['lifecycles_per_s']}")
    end_4 = budget_end - 10
    out.update(await with_stack(tmp, "burst", 90, BURST_LIMITS, lambda s: phase_burst(s, args.burst, end_4)))
    out["total_s"] = round(time.monotonic() - started, 1)
    out["path"] = PATH["submit"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: 30 intents, 50 lifecycles, 200-intent burst"
    )
    ap.add_argument("--intents", type=int, help="sequential intents (default 200, at most 996)")
    ap.add_argument("--lifecycles", type=int, help="concurrent lifecycles (default 500, at most 996)")
    ap.add_argument("--burst", type=int, help="intents in the burst (default 1000)")
    ap.add_argument("--budget-s", type=float, help="stop measuring after this long (default 330; quick 80)")
    ap.add_argument(
        "--path",
        choices=["admit", "start"],
        default="admit",
        help="admit: intents to the portfolio's admission (default); start: a PositionWorkflow per intent",
    )
    args = ap.parse_args(argv)
    PATH["submit"] = args.path
    args.intents = args.intents or (30 if args.quick else 200)
    args.lifecycles = args.lifecycles or (50 if args.quick else 500)
    args.burst = args.burst or (200 if args.quick else 1000)
    args.budget_s = args.budget_s or (80.0 if args.quick else 330.0)
    if min(args.intents, args.lifecycles, args.burst) < 1 or max(args.lifecycles, args.intents) > 996:
        ap.error(
            "--intents, --lifecycles and --burst must be positive; --intents and --lifecycles at most 996"
        )
    load_before = os.getloadavg()
    log(
        f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"{args.intents} intents, {args.lifecycles} lifecycles, burst {args.burst}, "
        f"budget {args.budget_s:.0f} s"
    )
    result = run_in_temp_dir("lifecycle", lambda tmp: run(args, tmp), log)
    if result is None:
        return 1
    load_after = os.getloadavg()
    result["load_avg_start"] = round(load_before[0], 2)
    result["load_avg_end"] = round(load_after[0], 2)
    result["cpus"] = os.cpu_count()
    result["mode"] = "quick" if args.quick else "full"
    print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

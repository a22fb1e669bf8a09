"""`python -m bench.exits`: exit reaction latency, from the paper exchange publishing the tick that crosses
a stop to the reduce-only order arriving at the paper exchange, with 1 and with 500 open positions,
next to the floor measured in the same run: one signal into a workflow that immediately runs one
activity. The tick crosses only the workflow's own stop (the venue's hard stop stays behind it); an exit
that was not the workflow's stop order is counted in `rejected_exits` and fails the run (exit code 1).
`venue_cpu_pct` is the paper exchange's CPU share over the loaded phase. The lifecycle worker and the
price watcher run as their own processes, as deployed; `stages_ms_500` says where each exit's time went
(`exit_stages`) and `gc_pauses_over_100ms_500` how often the lifecycle worker's collector stopped it.
Progress on stderr; one JSON object as the last stdout line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from bench.lifecycle import CpuMeter, at
from bench.stack import (
    LocalStack,
    gc_pauses,
    local_stack,
    run_in_temp_dir,
    start_lifecycle,
    start_service,
    until_served,
)
from trading.intents import Side
from workers.processes import ManagedProcess
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionView,
)

FLOOR_QUEUE = "bench-exit-floor"
# The workflow's own stop is 2 % under the entry at 100 (trading/exit_policy.py stop_pct) and the venue's
# hard stop 3 % (hard_stop_pct): a tick to 97.5 crosses only the workflow's, so the exit measured is the
# workflow's reduce-only order, not a race with the venue's stop (at 97 the venue's stop filled first
# and every workflow exit was refused -2022).
CROSS_PRICE = "97.5"
WATCHER_ONLY = PositionOptions(mark_check_seconds=600)
_probe_seen: dict[int, float] = {}


def log(msg: str) -> None:
    print(f"[bench.exits] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values) or [float("nan")]  # every crossing rejected: no figure (and the run fails)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@activity.defn(name="bench_exit_probe")
async def bench_exit_probe(seq: int) -> None:
    _probe_seen[seq] = time.perf_counter()


@workflow.defn(name="BenchExitFloor", sandboxed=False)
class BenchExitFloor:
    def __init__(self) -> None:
        self.pending: list[int] = []

    @workflow.run
    async def run(self) -> None:
        from datetime import timedelta

        while True:
            await workflow.wait_condition(lambda: bool(self.pending))
            seq = self.pending.pop(0)
            await workflow.execute_activity(
                "bench_exit_probe", seq, start_to_close_timeout=timedelta(seconds=10)
            )

    @workflow.signal(name="poke")
    def poke(self, seq: int) -> None:
        self.pending.append(seq)


def floor_worker(client: Client) -> Worker:
    return Worker(client, task_queue=FLOOR_QUEUE, workflows=[BenchExitFloor], activities=[bench_exit_probe])


async def measure_floor(client: Client, n: int) -> list[float]:
    handle = await client.start_workflow(BenchExitFloor.run, id="bench-exit-floor", task_queue=FLOOR_QUEUE)
    out = []
    for seq in range(n):
        t0 = time.perf_counter()
        await handle.signal(BenchExitFloor.poke, seq)
        while seq not in _probe_seen:
            await asyncio.sleep(0.0005)
        out.append((_probe_seen[seq] - t0) * 1000)
    await handle.terminate()
    return out


def start_watcher(stack: LocalStack) -> ManagedProcess:
    return start_service(stack, "price-watcher", "watcher")


async def open_positions(stack: LocalStack, symbols: list[str], tag: str) -> list[Any]:
    gate = asyncio.Semaphore(32)

    async def one(sym: str) -> Any:
        async with gate:
            return await stack.client.start_workflow(
                "PositionWorkflow",
                PositionInput(symbol=sym, side=Side.LONG, notional_usdt=Decimal(20), options=WATCHER_ONLY),
                id=f"bench-{tag}-{sym}",
                task_queue=LIFECYCLE_TASK_QUEUE,
                result_type=PositionResult,
            )

    handles = await asyncio.gather(*(one(s) for s in symbols))
    deadline = time.monotonic() + 300
    for h in handles:  # open, and watched by the watcher (its levels are in Redis)
        while True:
            view = await h.query("state", result_type=PositionView)
            if view.status.value == "OPEN" and await stack.redis.hexists("quantum:exit:levels", h.id):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{h.id} did not open: {view.status}")
            await asyncio.sleep(0.05)
    return handles


class RejectedExit(Exception):
    """The workflow's stop did not close the position (the venue's did, or its exit was refused)."""


STAGES = ("to_signaled", "to_task", "task", "to_activity", "to_order")


def exit_stages(history: Any, tick_ms: float, order_ms: float) -> dict[str, float] | None:
    """Where one exit's time went (ms), from the position's history between the crossing tick and its
    exit order at the venue: tick -> `price_crossed` in the history (venue feed, watcher, signal RPC);
    -> the workflow task that takes it starts (server dispatch, worker poll); that task and any after it
    until the order activity is scheduled (the worker's own time, a replay if its cache had let the
    workflow go); -> the exchange worker starts the activity (dispatch); -> the order at the venue."""
    signaled = task = scheduled = None
    order_event = None
    for ev in history.events:
        et = ev.event_type
        if et == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            if ev.workflow_execution_signaled_event_attributes.signal_name == "price_crossed":
                signaled, task, scheduled = at(ev), None, None
        elif et == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and signaled is not None and task is None:
            task = at(ev)
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and task is not None and scheduled is None:
            attrs = ev.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == "place_order":
                scheduled, order_event = at(ev), ev.event_id
        elif et == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED and scheduled is not None:
            if ev.activity_task_started_event_attributes.scheduled_event_id == order_event:
                return {
                    "to_signaled": signaled - tick_ms,
                    "to_task": task - signaled,
                    "task": scheduled - task,
                    "to_activity": at(ev) - scheduled,
                    "to_order": order_ms - at(ev),
                }
    return None


async def cross_stop(
    stack: LocalStack, handle: Any, sym: str, stop_price: str
) -> tuple[float, float, dict[str, float] | None]:
    """Move the price through the workflow's stop. The reaction is its exit order's venue time minus the
    venue time of the trade tick that crossed (`eventTime` in the admin answer, the tick's `E`); the
    second figure counts from before the benchmark's own admin request (its HTTP round trip included).
    The third is `exit_stages`. Raises RejectedExit when the position was not closed by that order."""
    posted_ms = time.time() * 1000
    tick = await asyncio.to_thread(stack.venue.set_price, sym, stop_price)
    result: PositionResult = await asyncio.wait_for(handle.result(), 30)
    orders = await asyncio.to_thread(stack.venue.admin, "GET", f"orders?symbol={sym}")
    exits = [o for o in orders if o["reduceOnly"] and o["clientOrderId"].startswith(handle.id)]
    if result.exit_reason != "stop_loss" or not exits or exits[-1]["status"] != "FILLED":
        raise RejectedExit(f"{handle.id}: exit {result.exit_reason}, workflow exit orders {exits[-1:]}")
    order_ms = exits[-1]["time"]
    stages = exit_stages(await handle.fetch_history(), tick["eventTime"], order_ms)
    return order_ms - tick["eventTime"], order_ms - posted_ms, stages


@dataclass
class Reactions:
    """Exit reactions of one phase in ms: from the crossing tick's venue time, and from before the
    benchmark's admin request that moved the price."""

    from_tick: list[float] = field(default_factory=list)
    from_post: list[float] = field(default_factory=list)
    stages: list[dict[str, float]] = field(default_factory=list)  # one per crossing, {} when unknown

    def add(self, from_tick: float, from_post: float, stages: dict[str, float] | None) -> None:
        self.from_tick.append(from_tick)
        self.from_post.append(from_post)
        self.stages.append(stages or {})

    def stage_summary(self) -> dict[str, Any]:
        """p50 and p99 of each stage, and the stages of the slowest crossing: where the tail went."""
        out: dict[str, Any] = {}
        for q in (0.5, 0.99):
            out[f"p{round(q * 100)}"] = {
                k: round(pct([s[k] for s in self.stages if k in s], q), 1) for k in STAGES
            }
        if self.from_tick:
            worst = max(range(len(self.from_tick)), key=self.from_tick.__getitem__)
            out["slowest"] = {"reaction": round(self.from_tick[worst], 1)} | {
                k: round(v, 1) for k, v in self.stages[worst].items()
            }
        return out


async def phase(stack: LocalStack, n_open: int, crossings: int, rejected: list[str]) -> Reactions:
    symbols = [f"T{i:03d}USDT" for i in range(1, max(n_open, 1) + 1)]
    for sym in symbols:
        await asyncio.to_thread(stack.venue.admin, "POST", "price", {"symbol": sym, "price": "100"})
    out = Reactions()
    if n_open == 1:
        for k in range(crossings):
            (handle,) = await open_positions(stack, symbols, f"one{k}")
            await crossed(stack, handle, symbols[0], out, rejected)
            await asyncio.to_thread(
                stack.venue.admin, "POST", "price", {"symbol": symbols[0], "price": "100"}
            )
            if k % 20 == 19:
                log(f"1 open: {k + 1}/{crossings} crossings, p50 {pct(out.from_tick, 0.5):.1f} ms")
        return out
    t = time.monotonic()
    handles = await open_positions(stack, symbols, "many")
    log(f"{n_open} positions open and watched in {time.monotonic() - t:.1f} s")
    for k in range(crossings):
        await crossed(stack, handles[k], symbols[k], out, rejected)
        if k % 20 == 19:
            log(f"{n_open} open: {k + 1}/{crossings} crossings, p50 {pct(out.from_tick, 0.5):.1f} ms")
    return out


async def crossed(stack: LocalStack, handle: Any, sym: str, out: Reactions, rejected: list[str]) -> None:
    try:
        out.add(*await cross_stop(stack, handle, sym, CROSS_PRICE))
    except RejectedExit as err:
        rejected.append(str(err))
        log(f"REJECTED EXIT {err}")


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    limits = {
        "gov_max_open_positions": 1000,
        "gov_max_total_notional_usdt": Decimal(10**7),
        "gov_max_notional_per_trade_usdt": Decimal(1000),
    }
    results: dict[str, Any] = {}
    async with local_stack(
        tmp,
        extra_symbols=max(args.open, 10),
        extra_workers=[floor_worker],
        log=log,
        lifecycle=False,
        **limits,
    ) as stack:
        watcher = start_watcher(stack)
        lifecycle = start_lifecycle(stack)
        try:
            await until_served(stack)
            floor = await measure_floor(stack.client, args.floor)
            log(f"floor p50 {pct(floor, 0.5):.1f} ms over {len(floor)}")
            rejected: list[str] = []
            _, log_at = gc_pauses(lifecycle.log_path, 0)
            one = await phase(stack, 1, args.crossings_one, rejected)
            cpu = CpuMeter({"venue": stack.processes["paper-exchange"].pid})
            paused_one, log_at = gc_pauses(lifecycle.log_path, log_at)
            many = await phase(stack, args.open, args.crossings, rejected)
            venue_cpu = cpu.percent()["venue"]
            paused, _ = gc_pauses(lifecycle.log_path, log_at)
        finally:
            lifecycle.stop()
            watcher.stop()
    results.update(
        reaction_p50_ms_1=round(pct(one.from_tick, 0.5), 1),
        reaction_p99_ms_1=round(pct(one.from_tick, 0.99), 1),
        reaction_p50_ms_500=round(pct(many.from_tick, 0.5), 1),
        reaction_p99_ms_500=round(pct(many.from_tick, 0.99), 1),
        from_post_p50_ms_500=round(pct(many.from_post, 0.5), 1),
        from_post_p99_ms_500=round(pct(many.from_post, 0.99), 1),
        floor_p50_ms=round(pct(floor, 0.5), 1),
        crossings=len(one.from_tick) + len(many.from_tick),
        open_positions=args.open,
        ratio_p99_500=round(pct(many.from_tick, 0.99) / pct(floor, 0.5), 2),
        stages_ms_1=one.stage_summary(),
        stages_ms_500=many.stage_summary(),
        rejected_exits=len(rejected),
        venue_cpu_pct=venue_cpu,
        gc_pauses_over_100ms_1=len(paused_one),
        gc_pause_max_ms_1=max(paused_one, default=0),
        gc_pauses_over_100ms_500=len(paused),
        gc_pause_max_ms_500=max(paused, default=0),
        load_avg=round(os.getloadavg()[0], 2),
    )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.exits", description=__doc__)
    parser.add_argument("--open", type=int, default=500, help="open positions in the loaded phase")
    parser.add_argument("--crossings", type=int, default=200, help="stop crossings in the loaded phase")
    parser.add_argument("--crossings-one", type=int, default=200, help="crossings with one position open")
    parser.add_argument("--floor", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="50 open, 30 + 30 crossings")
    args = parser.parse_args(argv)
    if args.quick:
        args.open, args.crossings, args.crossings_one, args.floor = 50, 30, 30, 50
    started = time.monotonic()
    results = run_in_temp_dir("exits", lambda tmp: run(args, tmp), log)
    if results is None:
        return 1
    results["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results))
    if results["rejected_exits"]:  # the exit measured must be the workflow's own, every time
        log(f"FAILED: {results['rejected_exits']} exits were not the workflow's stop")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

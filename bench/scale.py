"""Benchmark: how many open positions one lifecycle worker process holds, and what that size costs.

`python -m bench.scale [--quick] [--open N] [--crossings N] [--quiet-s S]`

Starts its own stack (bench/stack.py: a Temporal dev server, Redis, the paper exchange listing N
synthetic symbols, the exchange worker in this process) with the lifecycle worker and the price
watcher as their own processes, so that their memory is theirs. Then:

1. open: N positions, one per symbol, each open and watched (its levels in Redis): `open_s`, and
   the lifecycle worker's resident memory before and after: `rss_per_position_kb`;
2. exits: the floor (one signal into a workflow that runs one activity, as in `bench.exits`), then
   `--crossings` ticks through a workflow's own stop, one at a time, on symbols spread over the book,
   with N open: `reaction_p99_ms`, where the time went (`stages_ms`), the lifecycle worker's collector
   pauses over 100 ms;
3. reconcile: one ReconcileWorkflow run with all N open and tracked: `reconcile_s`;
4. the portfolio's history over a quiet `--quiet-s` window with N holders: events per day at this
   size and the continue-as-new runs that keep it bounded.

Progress on stderr; the last stdout line is one JSON object. Every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.exits import Reactions, crossed, floor_worker, measure_floor, pct
from bench.lifecycle import CpuMeter
from bench.stack import (
    LocalStack,
    gc_pauses,
    local_stack,
    run_in_temp_dir,
    start_lifecycle,
    start_service,
    until_served,
)
from trading.instruments import synthetic_symbols
from trading.intents import Side
from trading.reconcile import Fix
from workers.admission import admissions, admit_intents
from workers.processes import ManagedProcess
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    PortfolioInput,
    PositionInput,
    PositionOptions,
    PositionResult,
    ReconcileInput,
)

D = Decimal
LEVELS_KEY = "quantum:exit:levels"
WATCHER_ONLY = PositionOptions(mark_check_seconds=3600)  # exits come from the watcher alone
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench.scale {time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def count_open(stack: LocalStack) -> int:
    query = "WorkflowType='PositionWorkflow' AND PositionStatus='OPEN'"
    return (await stack.client.count_workflows(query)).count


async def open_all(stack: LocalStack, syms: list[str], deadline: float) -> float:
    """Admit one position per symbol through the portfolio (workers/admission.py, 1,000 intents a
    signal); seconds until every one is open and its levels are watched. Their entry deadline is the
    benchmark's own: started together thousands at a time, the last are decided minutes after the
    first (a real bar close admits at most the universe)."""
    t0 = time.monotonic()
    entry_deadline_s = max(60.0, deadline - time.monotonic())
    options = WATCHER_ONLY.model_copy(update={"entry_deadline_seconds": entry_deadline_s})
    await admit_intents(
        stack.client,
        admissions(
            [
                (
                    f"bench-scale-{sym}",
                    PositionInput(symbol=sym, side=Side.LONG, notional_usdt=D(20), options=options),
                )
                for sym in syms
            ]
        ),
    )
    log(f"open: {len(syms)} intents admitted in {time.monotonic() - t0:.1f} s")
    last = 0.0
    while True:
        opened, watched = await count_open(stack), await stack.redis.hlen(LEVELS_KEY)
        if opened >= len(syms) and watched >= len(syms):
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise TimeoutError(f"{opened} of {len(syms)} open, {watched} watched when the time ran out")
        if time.monotonic() - last > 10:
            log(f"  {opened} open, {watched} watched, {time.monotonic() - t0:.0f} s")
            last = time.monotonic()
        await asyncio.sleep(1.0)


async def history_length(stack: LocalStack, run_id: str | None = None) -> tuple[int, str]:
    """The portfolio's history length now (of its current run, or of `run_id`) and that run's id."""
    handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID, run_id=run_id)
    described = await handle.describe()
    return described.history_length, described.run_id or ""


async def events_since(stack: LocalStack, length0: int, run0: str) -> int:
    """Portfolio events written since its run `run0` was `length0` long; a continue-as-new in between
    counts the rest of that run and the whole of the current one (one hand-over at most, in a minute)."""
    length1, run1 = await history_length(stack)
    if run1 == run0:
        return length1 - length0
    final0, _ = await history_length(stack, run0)
    return final0 - length0 + length1


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    syms = synthetic_symbols(args.open)
    limits = dict(
        gov_max_open_positions=args.open + 10,
        gov_max_total_notional_usdt=D(10**9),
        gov_max_notional_per_trade_usdt=D(1000),
        lifecycle_cached_workflows=max(10_000, args.open + 1000),
    )
    out: dict[str, Any] = {"bench": "scale", "open_positions_target": args.open}
    async with local_stack(
        tmp, extra_symbols=args.open, extra_workers=[floor_worker], log=log, lifecycle=False, **limits
    ) as stack:
        procs: list[ManagedProcess] = [
            start_lifecycle(stack),
            start_service(stack, "price-watcher", "watcher"),
        ]
        lifecycle, watcher = procs
        try:
            await until_served(stack)
            await asyncio.sleep(2.0)
            rss0 = rss_kb(lifecycle.pid)
            watcher_rss0 = rss_kb(watcher.pid)
            log(f"lifecycle worker pid {lifecycle.pid} RSS {rss0 / 1024:.0f} MiB before any position")
            meter = CpuMeter({**stack.pids(), "lifecycle": lifecycle.pid, "watcher": watcher.pid})
            open_s = await open_all(stack, syms, time.monotonic() + args.open_budget_s)
            cpu_open = meter.percent()
            await asyncio.sleep(2.0)
            rss1 = rss_kb(lifecycle.pid)
            out.update(
                open_positions=await count_open(stack),
                open_s=round(open_s, 1),
                opened_per_s=round(args.open / open_s, 1),
                rss_before_mib=round(rss0 / 1024, 1),
                rss_after_mib=round(rss1 / 1024, 1),
                rss_per_position_kb=round((rss1 - rss0) / args.open, 1),
                watcher_levels=await stack.redis.hlen(LEVELS_KEY),
                watcher_rss_per_level_kb=round((rss_kb(watcher.pid) - watcher_rss0) / args.open, 2),
                cpu_pct_open=cpu_open,
            )
            log(
                f"open: {out['open_positions']} in {open_s:.1f} s; lifecycle RSS {rss0 / 1024:.0f} -> "
                f"{rss1 / 1024:.0f} MiB ({out['rss_per_position_kb']} KiB per position)"
            )

            paused, log_at = gc_pauses(lifecycle.log_path, 0)
            out.update(gc_pauses_over_100ms_open=len(paused), gc_pause_max_ms_open=max(paused, default=0))
            floor = await measure_floor(stack.client, args.floor)
            out["floor_p50_ms"] = round(statistics.median(floor), 1)
            reactions = Reactions()
            rejected: list[str] = []
            meter = CpuMeter({**stack.pids(), "lifecycle": lifecycle.pid, "watcher": watcher.pid})
            # Spread over the whole book: the last symbols too (a watcher that left some unwatched showed
            # no sign of it while the first hundred were crossed).
            for k, sym in enumerate(syms[:: len(syms) // args.crossings][: args.crossings]):
                handle = stack.client.get_workflow_handle(f"bench-scale-{sym}", result_type=PositionResult)
                await crossed(stack, handle, sym, reactions, rejected)
                if k % 20 == 19:
                    log(f"exits: {k + 1}/{args.crossings}, p50 {pct(reactions.from_tick, 0.5):.1f} ms")
            out.update(
                reaction_p50_ms=round(pct(reactions.from_tick, 0.5), 1),
                reaction_p99_ms=round(pct(reactions.from_tick, 0.99), 1),
                from_post_p99_ms=round(pct(reactions.from_post, 0.99), 1),
                ratio_p99=round(pct(reactions.from_tick, 0.99) / out["floor_p50_ms"], 2),
                stages_ms=reactions.stage_summary(),
                rejected_exits=len(rejected),
                cpu_pct_exits=meter.percent(),
            )
            paused, _ = gc_pauses(lifecycle.log_path, log_at)
            out.update(gc_pauses_over_100ms_exits=len(paused), gc_pause_max_ms_exits=max(paused, default=0))
            log(f"exits: p50 {out['reaction_p50_ms']} ms, p99 {out['reaction_p99_ms']} ms")
            log(f"exits: stages {out['stages_ms']}")

            t0 = time.perf_counter()
            fixes = await stack.client.execute_workflow(
                "ReconcileWorkflow",
                ReconcileInput(adopt_after_ms=0),
                id="bench-scale-reconcile",
                task_queue=LIFECYCLE_TASK_QUEUE,
                result_type=list[Fix],
            )
            out.update(reconcile_s=round(time.perf_counter() - t0, 2), reconcile_fixes=len(fixes))
            log(f"reconcile of {args.open - args.crossings} open: {out['reconcile_s']} s, {len(fixes)} fixes")

            h0, run0 = await history_length(stack)
            await asyncio.sleep(args.quiet_s)
            events = await events_since(stack, h0, run0)
            per_day = events / args.quiet_s * 86_400
            max_events = PortfolioInput().max_history_events
            out.update(
                portfolio_events_per_day=round(per_day),
                portfolio_history_now=(await history_length(stack))[0],
                portfolio_continue_as_new_at=max_events,
                portfolio_runs_per_day=round(per_day / max_events, 1),
            )
            log(f"portfolio: {events} events in {args.quiet_s:.0f} s quiet ({per_day:.0f} per day)")
        finally:
            for p in procs:
                p.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 300 open, 20 crossings")
    ap.add_argument("--open", type=int, help="open positions (default 5000, at most 9999)")
    ap.add_argument("--crossings", type=int, help="stop crossings with them open (default 100)")
    ap.add_argument("--floor", type=int, default=100, help="floor iterations (default 100)")
    ap.add_argument("--quiet-s", type=float, default=60.0, help="portfolio history window (default 60)")
    ap.add_argument("--open-budget-s", type=float, default=1500.0, help="give up opening after this long")
    args = ap.parse_args(argv)
    args.open = args.open or (300 if args.quick else 5000)
    args.crossings = args.crossings or (20 if args.quick else 100)
    if args.quick:
        args.quiet_s = min(args.quiet_s, 10.0)
    if not 1 <= args.crossings < args.open <= 9999:
        ap.error("need 1 <= --crossings < --open <= 9999")
    result = run_in_temp_dir("scale", lambda tmp: run(args, tmp), log)
    if result is None:
        return 1
    print(json.dumps(result))
    return 0 if result["rejected_exits"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench.truth`: how fast the system learns what the exchange did, how long a reconcile of
500 open positions takes, and whether lost answers ever make a duplicate order.

Phases, on a throw-away stack (Temporal dev server, Redis, paper exchange, both workers, the user-data
stream as its own process):
1. drift: N positions open through the system with no mark timer; then one at a time the venue ends
   one on its own (a manual close placed directly on the venue with a foreign client id, or every
   fifth one a hard-stop fill by moving the price through it). Latency = from just before the venue
   request until the workflow's state query no longer says OPEN.
   Floor, same run: the venue's own path — from just before a venue order until a bare WebSocket
   listener on the private stream receives its ORDER_TRADE_UPDATE.
2. reconcile: 500 positions opened directly on the venue are adopted by one reconcile (timed), and
   a second reconcile with all 500 open and tracked is timed: `reconcile_seconds_500`.
3. lost answers: lifecycles with 30 % of order placements executed but their answer lost (HTTP 503
   "Unknown error"); every client id is counted at the venue: `duplicate_orders` must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import websockets
from temporalio.client import WorkflowQueryFailedError
from temporalio.service import RPCError

from bench.stack import LocalStack, local_stack, run_in_temp_dir, start_service
from trading.intents import Side
from trading.reconcile import Fix
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    ClosePositionRequest,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
    ReconcileInput,
)

D = Decimal
QUIET = PositionOptions(mark_check_seconds=3600)  # only the venue's word can end these
PRICE = "100"


def log(msg: str) -> None:
    print(f"[bench.truth] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def symbols(first: int, n: int) -> list[str]:
    return [f"T{i:03d}USDT" for i in range(first, first + n)]


async def set_prices(stack: LocalStack, syms: list[str], price: str = PRICE) -> None:
    for sym in syms:
        await asyncio.to_thread(stack.venue.admin, "POST", "price", {"symbol": sym, "price": price})


SLOW: Counter[str] = Counter()  # state queries that timed out or found no worker, retried


async def query_state(handle: Any, deadline: float) -> PositionView:
    """The position's state; a query that times out or finds its worker busy is retried (and counted
    in `slow_queries`) until `deadline`: a slow answer is a figure, not the end of the benchmark."""
    while True:
        try:
            return await handle.query("state", result_type=PositionView, rpc_timeout=timedelta(seconds=10))
        except (RPCError, WorkflowQueryFailedError) as err:
            SLOW[type(err).__name__] += 1
            if time.monotonic() > deadline:
                raise
            log(f"slow state query for {handle.id} ({type(err).__name__}: {err}); asking again")
            await asyncio.sleep(0.5)


async def wait_until(handle: Any, check: Any, timeout: float = 60, every: float = 0.005) -> PositionView:
    deadline = time.monotonic() + timeout
    while True:
        view = await query_state(handle, deadline)
        if check(view):
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"{handle.id}: still {view.status}")
        await asyncio.sleep(every)


async def open_one(stack: LocalStack, sym: str, workflow_id: str) -> Any:
    """A long position through the system, returned once it is open."""
    handle = await stack.client.start_workflow(
        "PositionWorkflow",
        PositionInput(symbol=sym, side=Side.LONG, notional_usdt=D(20), options=QUIET),
        id=workflow_id,
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=PositionResult,
    )
    await wait_until(handle, lambda v: v.status == PositionStatus.OPEN, every=0.05)
    return handle


async def open_through_system(stack: LocalStack, syms: list[str], tag: str) -> list[Any]:
    gate = asyncio.Semaphore(16)

    async def one(sym: str) -> Any:
        async with gate:
            return await open_one(stack, sym, f"truth-{tag}-{sym}")

    return await asyncio.gather(*(one(s) for s in syms))


# ---------------------------------------------------------------- 1. drift
async def drift_phase(stack: LocalStack, n: int) -> tuple[list[float], Counter[str]]:
    syms = symbols(1, n)
    await set_prices(stack, syms)
    t = time.monotonic()
    handles = await open_through_system(stack, syms, "drift")
    log(f"drift: {n} positions open in {time.monotonic() - t:.1f} s")
    await asyncio.sleep(1.5)  # the user-data stream routes every open symbol to its workflow
    venue = stack.exchange_client
    assert venue is not None
    out: list[float] = []
    kinds: Counter[str] = Counter()
    for i, (sym, handle) in enumerate(zip(syms, handles, strict=True)):
        view = await query_state(handle, time.monotonic() + 60)
        t0 = time.perf_counter()
        if i % 5 == 4:  # through the exchange's hard stop (3 % below entry by default)
            await asyncio.to_thread(stack.venue.admin, "POST", "price", {"symbol": sym, "price": "90"})
            kinds["hard_stop"] += 1
        else:
            await venue.new_order(
                sym, "SELL", "MARKET", view.open_qty, reduce_only=True, client_order_id=f"venue-hand-{i}"
            )
            kinds["venue_manual_close"] += 1
        await wait_until(handle, lambda v: v.status != PositionStatus.OPEN, timeout=30, every=0.002)
        out.append((time.perf_counter() - t0) * 1000)
        if i % 20 == 19:
            log(f"drift: {i + 1}/{n} events, p50 {pct(out, 0.5):.1f} ms p99 {pct(out, 0.99):.1f} ms")
    for h in handles:
        await asyncio.wait_for(h.result(), 30)
    return out, kinds


async def drift_floor(stack: LocalStack, n: int) -> list[float]:
    """Venue order → ORDER_TRADE_UPDATE on a bare private-stream listener (no Temporal, no routing)."""
    venue = stack.exchange_client
    assert venue is not None
    sym = symbols(900, 1)[0]
    await set_prices(stack, [sym])
    key = await venue.new_listen_key()
    out: list[float] = []
    async with websockets.connect(f"{stack.settings.ws_url}/private/ws?listenKey={key}") as ws:
        for i in range(n):
            side = "BUY" if i % 2 == 0 else "SELL"
            t0 = time.perf_counter()
            await venue.new_order(sym, side, "MARKET", D("0.2"), client_order_id=f"floor-{i}")
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                data = event.get("data", event)
                if data.get("e") == "ORDER_TRADE_UPDATE" and data["o"]["c"] == f"floor-{i}":
                    if data["o"]["X"] == "FILLED":
                        break
            out.append((time.perf_counter() - t0) * 1000)
    return out


# ---------------------------------------------------------------- 2. reconcile
async def reconcile_once(stack: LocalStack, tag: str) -> tuple[float, list[Fix]]:
    t0 = time.perf_counter()
    fixes = await stack.client.execute_workflow(
        "ReconcileWorkflow",
        ReconcileInput(adopt_after_ms=0),
        id=f"truth-reconcile-{tag}",
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=list[Fix],
    )
    return time.perf_counter() - t0, fixes


async def reconcile_phase(stack: LocalStack, n: int) -> dict[str, Any]:
    syms = symbols(101, n)
    await set_prices(stack, syms)
    venue = stack.exchange_client
    assert venue is not None
    gate = asyncio.Semaphore(32)

    async def by_hand(sym: str) -> None:
        async with gate:
            await venue.new_order(sym, "BUY", "MARKET", D("0.2"), client_order_id=f"by-hand-{sym}")

    await asyncio.gather(*(by_hand(s) for s in syms))
    adopt_s, fixes = await reconcile_once(stack, "adopt")
    adopted = sum(1 for f in fixes if f.kind == "adopt")
    log(f"reconcile: adopted {adopted} venue positions in {adopt_s:.2f} s")
    t = time.monotonic()
    query = "WorkflowType='PositionWorkflow' AND PositionStatus='OPEN'"
    while (open_now := (await stack.client.count_workflows(query)).count) < adopted:
        if time.monotonic() - t > 600:
            raise TimeoutError(f"only {open_now} of {adopted} adopted positions open")
        await asyncio.sleep(0.5)
    log(f"reconcile: {adopted} adopted workflows open in {time.monotonic() - t:.1f} s")
    steady_s, steady_fixes = await reconcile_once(stack, "steady")
    log(f"reconcile: {n} open and tracked: {steady_s:.2f} s, {len(steady_fixes)} fixes")
    return {
        "reconcile_seconds_500": round(steady_s, 3),
        "reconcile_fixes_steady": len(steady_fixes),
        "reconcile_adopt_seconds_500": round(adopt_s, 3),
        "adopted": adopted,
    }


# ---------------------------------------------------------------- 3. lost answers
async def lost_answer_phase(stack: LocalStack, n: int, rate: float) -> dict[str, Any]:
    syms = symbols(700, min(n, 50))
    await set_prices(stack, syms)
    await asyncio.to_thread(
        stack.venue.admin, "POST", "faults", {"lost_answer_rate": rate, "lost_answer_mode": "503", "seed": 5}
    )
    gate = asyncio.Semaphore(len(syms))
    free = list(syms)

    async def one(i: int) -> PositionResult:
        async with gate:
            sym = free.pop()
            try:
                handle = await open_one(stack, sym, f"truth-lost-{i}")
                await handle.execute_update("close", ClosePositionRequest(reason="operator"))
                return await asyncio.wait_for(handle.result(), 60)
            finally:
                free.append(sym)

    t = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.to_thread(stack.venue.admin, "DELETE", "faults")
    lost = stack.venue.metric("paper_exchange_faults_injected_total", kind="lost")
    ids: Counter[str] = Counter()
    for sym in syms:
        orders = await asyncio.to_thread(stack.venue.admin, "GET", f"orders?symbol={sym}")
        algos = await asyncio.to_thread(stack.venue.admin, "GET", f"algo-orders?symbol={sym}")
        ids.update(o["clientOrderId"] for o in orders)
        ids.update(a["clientAlgoId"] for a in algos)
    duplicates = sum(c - 1 for c in ids.values() if c > 1)
    closed = sum(1 for r in results if r.status == PositionStatus.CLOSED)
    log(
        f"lost answers: {n} lifecycles in {time.monotonic() - t:.1f} s, {int(lost)} answers lost, "
        f"{duplicates} duplicate orders, {closed} closed"
    )
    return {
        "lost_answer_rate": rate,
        "lost_answers": int(lost),
        "lost_answer_lifecycles": n,
        "lost_answer_closed": closed,
        "duplicate_orders": duplicates,
    }


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    limits = {
        "gov_max_open_positions": 1000,
        "gov_max_total_notional_usdt": D(10**7),
        "gov_max_notional_per_trade_usdt": D(1000),
    }
    async with local_stack(tmp, extra_symbols=900, log=log, **limits) as stack:
        stream = start_service(stack, "user-stream", "user-stream", keys=True)
        try:
            await asyncio.sleep(2.0)
            floor = await drift_floor(stack, args.floor)
            log(f"floor (venue → private stream) p50 {pct(floor, 0.5):.2f} ms")
            drift, kinds = await drift_phase(stack, args.events)
            recon = await reconcile_phase(stack, args.reconcile)
            lost = await lost_answer_phase(stack, args.lifecycles, 0.3)
        finally:
            stream.stop()
    return {
        "drift_p50_ms": round(pct(drift, 0.5), 1),
        "drift_p99_ms": round(pct(drift, 0.99), 1),
        "drift_events": len(drift),
        "drift_kinds": dict(kinds),
        "floor_p50_ms": round(pct(floor, 0.5), 2),
        "ratio_drift_p50": round(pct(drift, 0.5) / pct(floor, 0.5), 1),
        **recon,
        **lost,
        "slow_queries": dict(SLOW),
        "load_avg": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.truth", description=__doc__)
    parser.add_argument("--events", type=int, default=100, help="venue-side changes to time")
    parser.add_argument("--reconcile", type=int, default=500, help="open positions for the reconcile")
    parser.add_argument("--lifecycles", type=int, default=100, help="lifecycles under lost answers")
    parser.add_argument("--floor", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="20 events, 50 positions, 20 lifecycles")
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.reconcile, args.lifecycles, args.floor = 20, 50, 20, 20
    result = run_in_temp_dir("truth", lambda tmp: run(args, tmp), log)
    if result is None:
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

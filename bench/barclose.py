"""Benchmark: one bar close over 100 symbols, from the bar's close to the last admitted entry order
filled at the venue.

`python -m bench.barclose [--quick] [--rounds N] [--symbols N] [--admitted N]`

Starts its own stack (bench/stack.py: a Temporal dev server, Redis, the paper exchange with synthetic
T001USDT... symbols, the lifecycle and exchange workers in this process, the portfolio started first)
and a bench inference worker on the `inference` task queue. Its `infer_bar` returns, at once, a
decision with an intent for every symbol (the models' own time is `python -m bench.models`'s); its
`publish_decisions` does nothing. Each round starts BarCloseWorkflow as the bar-close Schedule does,
and measures from that call to the venue's fill time of the last admitted entry (the venue's wall
clock; same host). The portfolio admits `--admitted` positions (its open-position limit) and denies
the rest. Between rounds every position is closed.

The floor, measured in the same run before each round: a workflow that starts as many children at
once, of which as many as are admitted run one activity on another task queue, from its start to the
last activity's completion. Progress on stderr; the last stdout line is one JSON object. Every process
is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.workflow import ParentClosePolicy

from bench.lifecycle import CpuMeter, count, pct
from bench.stack import LocalStack, local_stack, run_in_temp_dir
from trading.intents import Side
from trading.pnl import Fill
from workflows import calls
from workflows.bar_close import BarCloseWorkflow
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    INFERENCE_TASK_QUEUE,
    BarCloseInput,
    BarCloseResult,
    CloseResult,
    InferenceInput,
    InferenceResult,
    PortfolioView,
    PositionInput,
    PositionOptions,
    PositionResult,
    SymbolDecision,
)

D = Decimal
FLOOR_WF_QUEUE = "bench-barclose-floor"
FLOOR_ACT_QUEUE = "bench-barclose-floor-activities"
NOTIONAL = D(50)  # T-symbols trade at 100.00 with a 5 USDT minimum
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[bench.barclose {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def symbols(n: int) -> list[str]:
    return [f"T{i:03d}USDT" for i in range(1, n + 1)]


def position_id(bar_open_ms: int, symbol: str) -> str:
    return f"bench-bar-{bar_open_ms}-{symbol}"


# --------------------------------------------------------------------------- the bench inference
@activity.defn(name=calls.INFER_BAR.name)
async def bench_infer_bar(inp: InferenceInput) -> InferenceResult:
    """A decision to open on every symbol asked for, without a model."""
    assert inp.symbols and inp.bar_open_ms is not None
    decisions = []
    for i, symbol in enumerate(inp.symbols):
        side = Side.LONG if i % 2 else Side.SHORT
        wid = position_id(inp.bar_open_ms, symbol)
        intent = PositionInput(
            symbol=symbol,
            side=side,
            notional_usdt=NOTIONAL,
            intent_id=wid,
            strategy="bench",
            options=PositionOptions(mark_check_seconds=3600),  # nothing else runs while measured
        )
        decisions.append(
            SymbolDecision(
                symbol=symbol,
                side=side.value,
                p_up=0.7 if side is Side.LONG else 0.3,
                confidence=0.7,
                models_agree=1,
                kill_score=0.0,
                regime="bench",
                price=100.0,
                notional_usdt=NOTIONAL,
                strategy="bench",
                action="open",
                reason="bench",
                workflow_id=wid,
                intent=intent,
            )
        )
    return InferenceResult(
        interval=inp.interval, bar_open_ms=inp.bar_open_ms, symbols=inp.symbols, decisions=decisions
    )


@activity.defn(name=calls.PUBLISH_DECISIONS.name)
async def bench_publish_decisions(result: InferenceResult) -> None:
    return None


def inference_worker(client: Client) -> Worker:
    return Worker(
        client,
        task_queue=INFERENCE_TASK_QUEUE,
        workflows=[BarCloseWorkflow],
        activities=[bench_infer_bar, bench_publish_decisions],
    )


# --------------------------------------------------------------------------- the floor
@activity.defn(name="bench_fanout_echo")
async def bench_fanout_echo(value: int) -> float:
    return time.time() * 1000


@workflow.defn(name="BenchFanoutChild", sandboxed=False)
class BenchFanoutChild:
    @workflow.run
    async def run(self, act: bool) -> float | None:
        if not act:
            return None
        return await workflow.execute_activity(
            bench_fanout_echo, 0, task_queue=FLOOR_ACT_QUEUE, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn(name="BenchFanoutFloor", sandboxed=False)
class BenchFanoutFloor:
    """Starts `children` children at once; the first `acting` run one activity each."""

    @workflow.run
    async def run(self, children: int, acting: int) -> list[str]:
        base = workflow.info().workflow_id
        ids = [f"{base}-{i}" for i in range(children)]
        await asyncio.gather(
            *(
                workflow.start_child_workflow(
                    BenchFanoutChild.run,
                    i < acting,
                    id=wid,
                    task_queue=FLOOR_WF_QUEUE,
                    parent_close_policy=ParentClosePolicy.ABANDON,
                )
                for i, wid in enumerate(ids)
            )
        )
        return ids[:acting]


def floor_workers(client: Client) -> Worker:
    return Worker(client, task_queue=FLOOR_WF_QUEUE, workflows=[BenchFanoutFloor, BenchFanoutChild])


def floor_activity_worker(client: Client) -> Worker:
    return Worker(client, task_queue=FLOOR_ACT_QUEUE, activities=[bench_fanout_echo])


async def floor_once(client: Client, k: int, children: int, acting: int) -> float:
    t0_ms = time.time() * 1000
    acted: list[str] = await client.execute_workflow(
        BenchFanoutFloor.run, args=[children, acting], id=f"bench-floor-{k}", task_queue=FLOOR_WF_QUEUE
    )
    done = await asyncio.gather(
        *(client.get_workflow_handle(wid, result_type=float).result() for wid in acted)
    )
    return max(done) - t0_ms


# --------------------------------------------------------------------------- the rounds
async def portfolio_totals(client: Client) -> tuple[int, int]:
    view = await client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query("state", result_type=PortfolioView)
    return view.granted_total, view.denied_total


async def wait_decided(
    client: Client, prefix: str, n: int, before: tuple[int, int], timeout: float
) -> tuple[int, int]:
    """(open, denied) once the portfolio has decided all `n` intents of the round (a refused one
    starts no workflow) and every granted position is open, or when the time is up."""
    query = f"WorkflowType='PositionWorkflow' AND WorkflowId STARTS_WITH '{prefix}' AND PositionStatus='OPEN'"
    deadline = time.monotonic() + timeout
    while True:
        granted, denied = (now - was for now, was in zip(await portfolio_totals(client), before, strict=True))
        opened = await count(client, query)
        if (granted + denied >= n and opened >= granted) or time.monotonic() > deadline:
            return opened, denied
        await asyncio.sleep(0.2)


async def open_ids(client: Client, prefix: str) -> list[str]:
    query = f"WorkflowType='PositionWorkflow' AND WorkflowId STARTS_WITH '{prefix}' AND PositionStatus='OPEN'"
    return [wf.id async for wf in client.list_workflows(query)]


async def close_all(client: Client, ids: list[str]) -> None:
    async def one(wid: str) -> None:
        h = client.get_workflow_handle(wid, result_type=PositionResult)
        await h.execute_update("close", {"reason": "bench"}, result_type=CloseResult)
        await h.result()

    await asyncio.gather(*(one(w) for w in ids))


async def one_round(stack: LocalStack, k: int, syms: list[str], admitted: int) -> dict[str, Any]:
    client = stack.client
    bar_open_ms = 1_800_000_000_000 + k * 3_600_000
    prefix = f"bench-bar-{bar_open_ms}-"
    before = await portfolio_totals(client)
    t0_ms = time.time() * 1000
    result: BarCloseResult = await client.execute_workflow(
        BarCloseWorkflow.run,
        BarCloseInput(symbols=syms, interval="1h", bar_open_ms=bar_open_ms),
        id=f"bench-barclose-{k}",
        task_queue=INFERENCE_TASK_QUEUE,  # where the inference worker runs it
    )
    started_ms = time.time() * 1000 - t0_ms
    opened, rejected = await wait_decided(client, prefix, len(syms), before, 120)
    ids = await open_ids(client, prefix)
    fills = [await client.get_workflow_handle(wid).query("fills", result_type=list[Fill]) for wid in ids]
    entry_ms = [min(f.time_ms for f in fs) - t0_ms for fs in fills if fs]
    last = max(entry_ms) if entry_ms else float("nan")
    log(
        f"  round {k}: {len(result.admitted)} admitted in {started_ms:.0f} ms; {opened} opened, {rejected} "
        f"denied; last entry filled {last:.0f} ms after the bar close"
    )
    await close_all(client, ids)
    return {
        "admitted": len(result.admitted),
        "opened": opened,
        "denied": rejected,
        "last_ms": last,
        "first_ms": min(entry_ms) if entry_ms else float("nan"),
        "started_ms": started_ms,
        "ok": opened == admitted and opened + rejected == len(syms),
    }


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    syms = symbols(args.symbols)
    limits = dict(
        gov_max_open_positions=args.admitted,
        gov_max_total_notional_usdt=D(100_000_000),
        gov_max_notional_per_trade_usdt=D(1000),
    )
    async with local_stack(
        tmp,
        extra_symbols=args.symbols,
        extra_workers=[inference_worker, floor_workers, floor_activity_worker],
        log=log,
        **limits,
    ) as stack:
        for s in syms:
            stack.venue.set_price(s, "100")
        log("warm-up: one floor, one bar close over 10 symbols")
        await floor_once(stack.client, -1, 10, 2)
        await one_round(stack, 0, syms[:10], min(args.admitted, 10))
        floors: list[float] = []
        rounds: list[dict[str, Any]] = []
        meter = CpuMeter(stack.pids())
        for k in range(1, args.rounds + 1):
            floors.append(await floor_once(stack.client, k, len(syms), args.admitted))
            log(f"  floor {k}: {floors[-1]:.0f} ms")
            rounds.append(await one_round(stack, k, syms, args.admitted))
        cpu = meter.percent()
    last = [r["last_ms"] for r in rounds]
    floor_p50 = statistics.median(floors)
    p50 = statistics.median(last)
    return {
        "bench": "barclose",
        "symbols": len(syms),
        "rounds": len(rounds),
        "admitted": rounds[-1]["opened"],
        "denied": rounds[-1]["denied"],
        "rounds_as_expected": sum(1 for r in rounds if r["ok"]),
        "bar_close_to_last_entry_ms": round(p50, 1),
        "bar_close_to_last_entry_max_ms": round(max(last), 1),
        "bar_close_to_first_entry_ms": round(statistics.median(r["first_ms"] for r in rounds), 1),
        "bar_close_workflow_ms": round(statistics.median(r["started_ms"] for r in rounds), 1),
        "floor_ms": round(floor_p50, 1),
        "floor_p99_ms": round(pct(floors, 0.99), 1),
        "ratio": round(p50 / floor_p50, 2),
        "aim_ms": 2000,
        "cpu_pct": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.barclose", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 rounds")
    ap.add_argument("--rounds", type=int, help="bar closes measured (default 5; quick 2)")
    ap.add_argument("--symbols", type=int, default=100, help="symbols decided per bar close (default 100)")
    ap.add_argument(
        "--admitted", type=int, default=20, help="open-position limit: entries per bar (default 20)"
    )
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (2 if args.quick else 5)
    if not 1 <= args.admitted <= args.symbols <= 900 or args.rounds < 1:
        ap.error("need 1 <= --admitted <= --symbols <= 900 and --rounds >= 1")
    result = run_in_temp_dir("barclose", lambda tmp: run(args, tmp), log)
    if result is None:
        return 1
    print(json.dumps(result))
    return 0 if result["rounds_as_expected"] == result["rounds"] else 1


if __name__ == "__main__":
    sys.exit(main())

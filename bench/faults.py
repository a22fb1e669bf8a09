"""`python -m bench.faults`: a seeded fault explorer, in the spirit of FoundationDB's and TigerBeetle's
simulation testing, run against the real processes.

    python -m bench.faults                 # 200 seeds (1..200)
    python -m bench.faults --quick         # 10 seeds
    python -m bench.faults --seeds 50 --first 1000
    python -m bench.faults --seed 17       # replay seed 17: the same schedule, drawn again (repeatable)
    python -m bench.faults --schedule .qt/faults/schedule-17.json   # replay a schedule file as it is

One stack serves every seed: the Temporal dev server (on a SQLite file, so it can be restarted), Redis,
the paper exchange, and the lifecycle worker, exchange worker, user-data stream and price watcher as
separate processes (bench/faults_stack.py). Each seed draws a schedule with `random.Random(seed)`
(bench/faults_schedule.py): 6-12 lifecycles over 4 fresh symbols with GOV_MAX_OPEN_POSITIONS=3, venue
outages, 418 bans, 429s, lost answers, late executions, partial fills, SIGKILLs of every service kind
followed by a restart, a Temporal restart, a Redis outage, continue-as-new forced by a small history
cap, flatten / cancel / close / kill switch at random moments, and price gaps through both stops.
Durations are drawn on the real scale (an outage of 1-120 s) and multiplied by --time-factor.

The invariants (bench/faults_invariants.py) are checked every --sample seconds from the venue's own
record and from Temporal, and again at the end of each seed (bench/faults_drive.py). A failing seed
prints its schedule (stderr, and a file in --out that --schedule replays). Progress goes to stderr, one
line per seed; the last line of stdout is one JSON object (fields: `Summary.to_json`). Exit status 1
when any invariant was violated, 2 when the explorer itself could not drive a seed (`harness_errors`)
or stopped on an error, else 0. Each seed has a hard cap (--seed-cap, plus at most 60 s each for its
end checks and cleanup) and the whole run a budget (--budget): the JSON is printed even when
something hangs (a watchdog prints it and stops our processes if the event loop itself is stuck).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.faults_drive import RunOptions, SeedResult, SeedRun
from bench.faults_invariants import Violation
from bench.faults_schedule import DrawConfig, Schedule, draw_schedule
from bench.faults_stack import RESERVED_SYMBOLS, ExplorerStack, StackConfig, detect_fault_keys, explorer_stack
from bench.stack import BIG
from exchange.client import BinanceFuturesClient
from trading.intents import Side
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    ClosePositionRequest,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
)

DEFAULT_SEEDS = 200
QUICK_SEEDS = 10


def log(msg: str) -> None:
    print(f"[bench.faults] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the run's figures
@dataclass
class Summary:
    time_factor: float
    window_s: float
    limit: int
    seeds_planned: int
    started: float = field(default_factory=time.monotonic)
    results: list[SeedResult] = field(default_factory=list)
    fault_keys: list[str] = field(default_factory=list)
    floor_s: float | None = None
    aborted: str | None = None

    def add(self, result: SeedResult) -> None:
        self.results.append(result)

    def violations(self) -> list[Violation]:
        return [v for r in self.results for v in r.violations]

    def to_json(self) -> dict[str, Any]:
        rs = self.results
        violations = self.violations()
        labels: Counter[str] = sum((r.faults for r in rs), Counter())
        recoveries = [x for r in rs for x in r.recoveries]
        seed_s = [r.wall_s for r in rs]
        max_recovery = max(recoveries, default=0.0)
        max_unmanaged = max((r.max_unmanaged_s for r in rs), default=0.0)
        floor = self.floor_s
        return {
            "seeds": len(rs),
            "seeds_planned": self.seeds_planned,
            "violations": len(violations),
            "violation_list": [v.short() for v in violations[:30]],
            "violations_by_invariant": dict(Counter(v.invariant for v in violations)),
            "failing_seeds": sorted({v.seed for v in violations}),
            "lifecycles": sum(r.lifecycles for r in rs),
            "outcomes": dict(sum((r.outcomes for r in rs), Counter())),
            "faults": dict(_by_kind(Counter({k: n for k, n in labels.items() if not k.startswith("op:")}))),
            "fault_labels": {k: n for k, n in labels.items() if not k.startswith("op:")},
            "operator_actions": {k[3:]: n for k, n in labels.items() if k.startswith("op:")},
            "lifecycle_ends": dict(
                sum((Counter(lc.end for lc in r.schedule.lifecycles) for r in rs), Counter())
            ),
            "continue_as_new_capped": sum(
                1 for r in rs for lc in r.schedule.lifecycles if lc.max_history_events
            ),
            "continued_as_new": sum(r.continued_as_new for r in rs),
            "faults_skipped": dict(sum((r.skipped for r in rs), Counter())),
            "service_crashes": dict(sum((r.crashes for r in rs), Counter())),
            "harness_errors": [e for r in rs for e in r.harness_errors][:20],
            "workflow_task_failures": sum(r.task_failures for r in rs),
            "fault_keys_new": sorted(set(self.fault_keys) - _base_keys()),
            "max_unmanaged_s": round(max_unmanaged, 2),
            "max_unprotected_s": round(max((r.max_unprotected_s for r in rs), default=0.0), 2),
            "max_unprotected_after_faults_s": round(
                max((r.max_unprotected_after_faults_s for r in rs), default=0.0), 2
            ),
            "max_recovery_s": round(max_recovery, 2),
            "recovery_p50_s": round(statistics.median(recoveries), 2) if recoveries else None,
            "time_factor": self.time_factor,
            "window_s": self.window_s,
            "limit": self.limit,
            "floor_lifecycle_s": round(floor, 3) if floor else None,
            "ratio_max_recovery": round(max_recovery / floor, 1) if floor else None,
            "ratio_max_unmanaged": round(max_unmanaged / floor, 1) if floor else None,
            "seed_s_p50": round(statistics.median(seed_s), 1) if seed_s else None,
            "seed_s_max": round(max(seed_s), 1) if seed_s else None,
            "samples": sum(r.samples for r in rs),
            "wall_s": round(time.monotonic() - self.started, 1),
            "aborted": self.aborted,
            "load_avg": round(os.getloadavg()[0], 2),
        }


def _by_kind(labels: Counter[str]) -> Counter[str]:
    out: Counter[str] = Counter()
    for label, n in labels.items():
        out[label.split(":")[0]] += n
    return out


def _base_keys() -> set[str]:
    from bench.faults_stack import BASE_KEYS

    return set(BASE_KEYS)


# ---------------------------------------------------------------- the floor
async def one_clean_lifecycle(stack: ExplorerStack, symbol: str, wid: str) -> float:
    """Start → OPEN → close → result with no fault: seconds."""
    t0 = time.perf_counter()
    handle = await stack.client.start_workflow(
        "PositionWorkflow",
        PositionInput(
            symbol=symbol,
            side=Side.LONG,
            notional_usdt=Decimal(100),
            intent_id=wid,
            options=PositionOptions(mark_check_seconds=600),
        ),
        id=wid,
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=PositionResult,
    )
    while (await handle.query("state", result_type=PositionView)).status != PositionStatus.OPEN:
        await asyncio.sleep(0.01)
    await handle.execute_update("close", ClosePositionRequest(reason="operator"))
    result = await handle.result()
    if result.status != PositionStatus.CLOSED:
        raise RuntimeError(f"the floor's lifecycle ended {result.status}")
    return time.perf_counter() - t0


async def measure_floor(stack: ExplorerStack, runs: int = 3) -> float:
    symbol = "T001USDT"
    await stack.set_price(symbol, Decimal(100))
    await asyncio.wait_for(
        one_clean_lifecycle(stack, symbol, "fxfloor-warmup"), 120
    )  # after the startup reconcile
    times = [
        await asyncio.wait_for(one_clean_lifecycle(stack, symbol, f"fxfloor-{i}"), 60) for i in range(runs)
    ]
    return statistics.median(times)


# ---------------------------------------------------------------- seeds
def seed_symbols(ordinal: int, per_seed: int, extra: int) -> list[str]:
    """Fresh symbols for each seed (T003.. on; the first ones are the floor's), reused only after the
    paper exchange's whole list has gone round."""
    pool = extra - RESERVED_SYMBOLS
    return [f"T{RESERVED_SYMBOLS + (ordinal * per_seed + j) % pool + 1:03d}USDT" for j in range(per_seed)]


def write_trace(r: SeedResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"trace-{r.seed}.jsonl"
    path.write_text("".join(json.dumps(line, default=str) + "\n" for line in r.trace))
    return path


def report_seed(r: SeedResult, ordinal: int, total: int, out: Path, traces: bool) -> None:
    kinds = ",".join(sorted(r.faults)) or "-"
    log(
        f"seed {r.seed} ({ordinal + 1}/{total}): {r.lifecycles} lifecycles {dict(r.outcomes)}, "
        f"faults {kinds}, "
        f"{len(r.violations)} violations, max unmanaged {r.max_unmanaged_s:.1f} s, "
        f"recovery {max(r.recoveries, default=0):.1f} s, {r.wall_s:.1f} s"
    )
    if traces and not r.violations:
        write_trace(r, out)
    if r.violations:
        for v in r.violations[:10]:
            log(f"  seed {v.seed} VIOLATION {v.invariant} at {v.t:.1f} s: {v.details[:400]}")
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"schedule-{r.seed}.json"
        path.write_text(r.schedule.dumps())
        trace = write_trace(r, out)
        for wid, history in r.histories.items():
            kept = out / f"history-{r.seed}-{wid}.json"
            kept.write_text(history)
            log(f"  seed {r.seed} kept the history of {wid}, which failed to replay: {kept}")
        log(
            f"  seed {r.seed} trace {trace}; schedule ({path}, replay: --seed {r.seed} "
            f"or --schedule {path}): "
            f"{r.schedule.dumps()}"
        )


async def explore(
    args: argparse.Namespace, summary: Summary, schedules: list[Schedule], holder: dict
) -> None:
    per_seed = schedules[0].symbols if schedules else 4
    cfg = StackConfig(
        limit=args.limit,
        reconcile_interval_s=args.reconcile_interval,
        client_timeout_s=max(2.0, 10 * args.time_factor),
        extra_symbols=min(999, RESERVED_SYMBOLS + per_seed * len(schedules)),
    )
    opts = RunOptions(sample_s=args.sample, drain_s=args.drain, seed_cap_s=args.seed_cap)
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    try:
        async with explorer_stack(tmp, cfg, log) as stack:
            holder["stack"] = stack
            summary.fault_keys = sorted(await detect_fault_keys(stack))
            log(f"venue fault keys: {', '.join(summary.fault_keys)}")
            summary.floor_s = await measure_floor(stack)
            log(f"floor: one clean lifecycle (start → open → close → result) {summary.floor_s:.3f} s")
            async with BinanceFuturesClient.from_settings(
                stack.local.settings, order_limit_10s=BIG, order_limit_1m=BIG
            ) as venue:
                await venue.sync_time()
                offsets: dict[Path, int] = {}
                for ordinal, schedule in enumerate(schedules):
                    if time.monotonic() - summary.started > args.budget:
                        summary.aborted = f"budget of {args.budget:.0f} s spent after {ordinal} seeds"
                        break
                    symbols = seed_symbols(ordinal, schedule.symbols, cfg.extra_symbols)
                    run = SeedRun(stack, venue, schedule, symbols, set(summary.fault_keys), opts, offsets)
                    result = await run.run()
                    summary.add(result)
                    report_seed(result, ordinal, len(schedules), args.out, args.traces)
        if summary.violations() and args.out:
            keep_logs(tmp, args.out)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")


def keep_logs(tmp: Path, out: Path) -> None:
    dest = out / "logs"
    dest.mkdir(parents=True, exist_ok=True)
    for path in tmp.glob("*.log"):
        with contextlib.suppress(OSError):
            shutil.copy2(path, dest / path.name)
    log(f"service logs copied to {dest}")


def schedules_for(args: argparse.Namespace) -> list[Schedule]:
    cfg = DrawConfig(
        time_factor=args.time_factor,
        window_s=args.window,
        lifecycles=tuple(args.lifecycles),  # type: ignore[arg-type]
    )
    if args.schedule:
        return [Schedule.from_json(json.loads(Path(args.schedule).read_text()))]
    if args.seed:
        return [draw_schedule(seed, cfg) for seed in args.seed]
    return [draw_schedule(seed, cfg) for seed in range(args.first, args.first + args.seeds)]


# ---------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seeds", type=int, default=None, help=f"how many seeds (default {DEFAULT_SEEDS})")
    p.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    p.add_argument("--seed", type=int, action="append", help="run (replay) this seed; repeat for more")
    p.add_argument("--schedule", type=Path, default=None, help="replay this schedule JSON file")
    p.add_argument("--quick", action="store_true", help=f"{QUICK_SEEDS} seeds")
    p.add_argument("--time-factor", type=float, default=0.1, help="fault durations × this (default 0.1)")
    p.add_argument("--window", type=float, default=20.0, help="active seconds of a seed (default 20)")
    p.add_argument("--lifecycles", type=int, nargs=2, default=[6, 12], metavar=("MIN", "MAX"))
    p.add_argument("--limit", type=int, default=3, help="GOV_MAX_OPEN_POSITIONS (default 3)")
    p.add_argument("--reconcile-interval", type=float, default=5.0, help="RECONCILE_INTERVAL_SECONDS")
    p.add_argument("--sample", type=float, default=0.25, help="seconds between samples (default 0.25)")
    p.add_argument("--drain", type=float, default=45.0, help="drain time after the faults clear (s)")
    p.add_argument("--seed-cap", type=float, default=150.0, help="hard cap of one seed (s)")
    p.add_argument("--budget", type=float, default=6 * 3600.0, help="whole run, seconds (default 6 h)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("QT_HOME", ".qt")) / "faults",
        help="failing seeds' schedules and logs go here",
    )
    p.add_argument("--keep", action="store_true", help="keep the run's temporary folder")
    p.add_argument("--traces", action="store_true", help="write every seed's trace (default: failing ones)")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = QUICK_SEEDS if args.quick else DEFAULT_SEEDS
    return args


def run(argv: list[str] | None = None) -> tuple[int, dict[str, Any]]:
    """Run the explorer; returns (exit status, the JSON summary). Prints progress on stderr only."""
    args = parse_args(argv)
    schedules = schedules_for(args)
    summary = Summary(args.time_factor, args.window, args.limit, len(schedules))
    holder: dict[str, Any] = {}
    watchdog = threading.Timer(args.budget + 600, _abort, args=(summary, holder))
    watchdog.daemon = True
    watchdog.start()
    try:
        asyncio.run(_main(args, summary, schedules, holder))
    except (KeyboardInterrupt, asyncio.CancelledError):
        summary.aborted = summary.aborted or "interrupted"
    except Exception as err:  # the stack could not start, or the harness broke: say so in the JSON
        summary.aborted = f"{type(err).__name__}: {err}"[:500]
        log(f"aborted: {summary.aborted}")
    finally:
        watchdog.cancel()
    out = summary.to_json()
    broken = out["harness_errors"] or (out["aborted"] and not out["aborted"].startswith("budget"))
    return (1 if out["violations"] else 2 if broken else 0), out


async def _main(args: argparse.Namespace, summary: Summary, schedules: list[Schedule], holder: dict) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
    try:
        async with asyncio.timeout(args.budget + 300):
            await explore(args, summary, schedules, holder)
    except TimeoutError:
        summary.aborted = "the run passed its budget and was stopped"


def _abort(summary: Summary, holder: dict) -> None:
    """Last resort when the event loop itself is stuck: stop our processes, print the JSON, exit 1."""
    summary.aborted = "watchdog: the run hung and was killed"
    stack = holder.get("stack")
    if stack is not None:
        stack.stop_all()
    print(json.dumps(summary.to_json()), flush=True)
    os._exit(1)


def main(argv: list[str] | None = None) -> int:
    code, out = run(argv)
    print(json.dumps(out), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

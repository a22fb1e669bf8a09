"""`qtrader paper` (what `./quantum paper` runs): the whole system in paper mode on replayed real data.

1. A champion: the registry under `$QT_HOME/models` is reused; on the first run the four models are
   trained on the shipped BTCUSDT/ETHUSDT 1h klines with a small budget (a few minutes on 2 cores).
2. The stack with the paper exchange on manual prices: the market-data service replays the shipped
   klines into it at `--speed` × real time (continuing where the last run stopped), the bar-close
   Schedule runs the ensemble at each replayed bar and starts positions through the portfolio, and the
   exits close them.
3. The live status view until Ctrl-C, or for `--for N` seconds and then a summary. The stack keeps
   running afterwards (`qtrader stack down` stops it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from trading.config import Settings, TradingMode, load_settings

# Paper-run defaults; a variable already set in the environment wins.
PAPER_ENV = {
    "MARKET_DATA_SOURCE": "replay",
    "APPLY_ALLOWLIST": "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT,DOGEUSDT",
    "UNIVERSE_TOP_N": "4",
    "UNIVERSE_INTERVAL_SECONDS": "60",
    # a replayed hour passes in seconds: the governor's wall-clock rate limits would deny nearly all
    "GOV_MAX_EXEC_PER_HOUR": "120",
    "GOV_MAX_EXEC_PER_5MIN": "20",
    "GOV_SYMBOL_COOLDOWN_SECONDS": "10",
}
TRAIN_SYMBOLS = ("BTCUSDT", "ETHUSDT")


def ensure_champion(settings: Settings, echo: Any = print) -> str:
    from signals.registry import ModelRegistry

    registry = ModelRegistry(settings.registry_dir)
    have = {m: registry.champion(m) for m in settings.signal_models}
    if all(have.values()):
        return f"champion reused from {registry.root}: {have}"
    echo(
        f"no champion under {registry.root}: training {','.join(settings.signal_models)} "
        "on the shipped 1h klines (first run only, a few minutes)..."
    )
    import torch

    from signals.labels import LabelSpec
    from signals.training import TorchBudget, train_and_validate

    torch.set_num_threads(2)
    res = train_and_validate(
        TRAIN_SYMBOLS,
        "1h",
        LabelSpec(horizon=24),
        tuple(settings.signal_models),
        folds=3,
        registry_root=registry.root,
        last_n=8000,
        torch_budget=TorchBudget(epochs=2, windows_per_epoch=4000),
    )
    return f"champion trained in {res.seconds:.0f}s: AUC {res.auc()}"


async def summary(settings: Settings) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from activities.inference import DECISION_STREAM, INTENT_STREAM
    from signals.bar_store import KLINES_STREAM
    from workers.snapshot import snapshot
    from workers.temporal_client import connect

    client = await connect(settings)
    redis = aioredis.Redis(host=settings.redis_host, port=settings.redis_port)
    try:
        snap = await snapshot(client, redis)
        positions = [e async for e in client.list_workflows("WorkflowType='PositionWorkflow'")]
        closed = sum(1 for e in positions if e.status and e.status.name != "RUNNING")
        return {
            "bars_streamed": await redis.xlen(KLINES_STREAM),
            "decisions": await redis.xlen(DECISION_STREAM),
            "intents": await redis.xlen(INTENT_STREAM),
            "positions_started": len(positions),
            "positions_finished": closed,
            "open_positions": len(snap["positions"]),
            "realized_pnl_usdt": snap["realized_pnl"],
            "snapshot": snap,
        }
    finally:
        await redis.aclose()


async def watch(settings: Settings, seconds: float | None, live: bool) -> None:
    import redis.asyncio as aioredis

    from workers.snapshot import snapshot
    from workers.status_view import CLEAR, render
    from workers.temporal_client import connect

    client = await connect(settings)
    redis = aioredis.Redis(host=settings.redis_host, port=settings.redis_port)
    deadline = None if seconds is None else time.monotonic() + seconds
    last_print = 0.0
    try:
        while deadline is None or time.monotonic() < deadline:
            snap = await snapshot(client, redis)
            if live:
                sys.stdout.write(CLEAR + render(snap) + "\n")
                sys.stdout.flush()
            elif time.monotonic() - last_print >= 15:
                print(render(snap, color=False) + "\n", flush=True)
                last_print = time.monotonic()
            await asyncio.sleep(1.0)
    finally:
        await redis.aclose()


def run(args: argparse.Namespace) -> int:
    for key, value in PAPER_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["MARKET_REPLAY_SPEED"] = str(args.speed)
    settings = load_settings()
    if settings.trading_mode is not TradingMode.PAPER:
        print(
            f"qtrader paper: TRADING_MODE is {settings.trading_mode.value}; this command is paper only",
            file=sys.stderr,
        )
        return 2
    from workers import stack

    print(ensure_champion(settings), flush=True)
    status = stack.status(settings)
    if any(s["running"] for s in status["services"].values()):  # type: ignore[union-attr]
        print("restarting the stack so the paper exchange takes replayed prices...", flush=True)
        stack.down(settings)
    found = stack.up(settings, prices="manual", timeout=args.timeout)
    stack.print_addresses(found)
    print(
        f"\nreplaying {os.environ['APPLY_ALLOWLIST']} 1h klines at {args.speed:g}x "
        f"(one bar every {settings.bar_seconds:.1f} s); Web UI {found['ui']}\n",
        flush=True,
    )
    live = sys.stdout.isatty() and not args.plain
    try:
        asyncio.run(watch(settings, args.for_seconds, live))
    except KeyboardInterrupt:
        pass
    s = asyncio.run(summary(settings))
    snap = s.pop("snapshot")
    from workers.status_view import render

    print("\n" + render(snap, color=live))
    print(
        f"\nsummary: {s['bars_streamed']} bars streamed, {s['decisions']} model decisions, "
        f"{s['intents']} intents, {s['positions_started']} positions started "
        f"({s['positions_finished']} finished, {s['open_positions']} open), "
        f"realized PnL {s['realized_pnl_usdt']} USDT"
    )
    print(f"Web UI {found['ui']}  —  the stack keeps running: `qtrader status`, `qtrader stack down`.")
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "paper", help="the whole system in paper mode on replayed real klines, with a live view"
    )
    p.add_argument(
        "--for",
        dest="for_seconds",
        type=float,
        default=None,
        help="watch this many seconds, print a summary and exit (default: until Ctrl-C)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=1800.0,
        help="replayed market seconds per wall second (default %(default)s: a 1h bar in 2 s)",
    )
    p.add_argument("--plain", action="store_true", help="no live redraw: a plain frame every 15 s")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each service")
    p.set_defaults(func=lambda args, _settings: run(args))

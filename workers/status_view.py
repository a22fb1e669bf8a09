"""`qtrader status`: the portfolio at a glance, refreshed in place (ANSI), `--once` or `--json`.

What it shows is gathered by `workers.snapshot.snapshot` (the web dashboard reads the same): the
portfolio workflow's and each position's `state` query, closed trades' PnL and model decisions from Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from trading.config import Settings
from workers.snapshot import snapshot

__all__ = ["CLEAR", "render", "run", "snapshot"]

CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RED, GREEN, RESET = "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[0m"


def _num(value: Any, places: int = 2) -> str:
    if value in (None, ""):
        return "-"
    try:
        return f"{Decimal(str(value)):,.{places}f}"
    except ArithmeticError:
        return str(value)


def _pnl(value: Any, color: bool) -> str:
    text = _num(value)
    if not color or text == "-":
        return text
    return f"{GREEN if Decimal(str(value)) >= 0 else RED}{text}{RESET}"


def render(snap: dict[str, Any], *, color: bool = True) -> str:
    """One frame of text."""
    b, r = (BOLD, RESET) if color else ("", "")
    clock = time.strftime("%H:%M:%S", time.gmtime(snap["time_ms"] / 1000))
    lines = [f"{b}Quantum Trader — paper status{r}  {clock} UTC"]
    p = snap.get("portfolio")
    if p is None:
        lines.append(f"portfolio: not running ({snap.get('portfolio_error', 'no answer')})")
    else:
        switch = "ON" if p["kill_switch"] else "off"
        lines.append(
            f"slots {p['slots_used']}/{p['max_open_positions']}   notional {_num(p['notional_used'])}/"
            f"{_num(p['max_total_notional'])} USDT   emergency {p['emergency']}   kill switch {switch}   "
            f"granted {p['granted_total']}  denied {p['denied_total']}"
        )
    unreal = sum(
        (
            Decimal(str(x["unrealized_pnl"]))
            for x in snap["positions"]
            if x.get("unrealized_pnl") not in (None, "")
        ),
        Decimal(0),
    )
    lines.append(
        f"PnL: unrealized {_pnl(unreal, color)}   realized {_pnl(snap['realized_pnl'], color)} USDT "
        f"over {_num(snap['closed_trades'], 0)} closed trades"
    )
    if snap.get("redis_error"):
        lines.append(f"Redis: unreachable ({snap['redis_error']}); closed trades and decisions not shown")
    lines.append("")
    lines.append(f"{b}open positions{r}")
    header = (
        f"{'SYMBOL':<10} {'SIDE':<5} {'STATUS':<9} {'QTY':>10} {'ENTRY':>11} {'MARK':>11} {'UPNL':>9} "
        f"{'STOP':>11}  NEXT TRIGGER"
    )
    lines.append(header)
    if not snap["positions"]:
        lines.append(f"{DIM if color else ''}  none{r}")
    for x in snap["positions"]:
        if "error" in x:
            lines.append(f"{x['workflow_id']}: {x['error']}")
            continue
        lines.append(
            f"{x['symbol']:<10} {x['side']:<5} {x['status']:<9} {_num(x['open_qty'], 4):>10} "
            f"{_num(x['entry_price']):>11} {_num(x['mark_price']):>11} {_pnl(x['unrealized_pnl'], color):>9} "
            f"{_num(x['stop_loss_price'] or x['hard_stop_price']):>11}  {x.get('next_trigger') or '-'}"
        )
    lines.append("")
    lines.append(f"{b}portfolio decisions{r} (newest last)")
    for d in (p or {}).get("last_decisions", [])[-6:]:
        if d.get("decision") == "denied":
            lines.append(f"  denied  {d['holder_id']}: {d['gate']} — {d['reason']}")
        else:
            lines.append(f"  granted {d['holder_id']}: {_num(d['notional_usdt'])} USDT")
    lines.append("")
    lines.append(f"{b}model decisions{r} (newest first)")
    for d in snap["decisions"]:
        lines.append(
            f"  bar {d.get('bar_open_ms', '-')} {d.get('symbol', '?'):<9} {d.get('side', '?'):<5} "
            f"conf {_num(d.get('confidence'), 3)} {d.get('action', '?'):<4} {d.get('reason', '')}"
        )
    return "\n".join(lines)


async def _main(args: argparse.Namespace, settings: Settings) -> int:
    from workers.temporal_client import connect

    client = await asyncio.wait_for(connect(settings), timeout=10)
    redis = aioredis.Redis(host=settings.redis_host, port=settings.redis_port, socket_timeout=5)
    try:
        while True:
            snap = await snapshot(client, redis, args.portfolio_id)
            if args.json:
                print(json.dumps(snap, default=str))
                return 0
            if args.once:
                print(render(snap, color=sys.stdout.isatty()))
                return 0
            sys.stdout.write(CLEAR + render(snap) + "\n")
            sys.stdout.flush()
            await asyncio.sleep(args.interval)
    finally:
        await redis.aclose()


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_main(args, settings))
    except (TimeoutError, OSError, RuntimeError) as err:
        print(f"qtrader status: cannot reach Temporal/Redis ({err}); is the stack up?", file=sys.stderr)
        return 1

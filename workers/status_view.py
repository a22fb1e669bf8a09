"""`qtrader status`: the portfolio at a glance, refreshed in place (ANSI), `--once` or `--json`.

Sources: the PortfolioWorkflow's `state` query (slots, notional, emergency state, kill switch, the last
grants and denials with their reasons), each reserved position's `state` query (side, quantity, entry,
mark, unrealized PnL, stop, next trigger), the realized PnL of closed trades (`quantum:ledger:*`) and
the newest model decisions (`quantum:stream:ai.decision.made`) from Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from temporalio.client import Client

from activities.inference import DECISION_STREAM
from activities.projections import LEDGER_KEY
from trading.config import Settings
from workflows.messages import DEFAULT_PORTFOLIO_ID, PortfolioView, PositionView

RPC = timedelta(seconds=5)
CLEAR = "\x1b[H\x1b[2J"
BOLD, DIM, RED, GREEN, RESET = "\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[0m"


async def snapshot(
    client: Client, redis: aioredis.Redis, portfolio_id: str = DEFAULT_PORTFOLIO_ID, decisions: int = 8
) -> dict[str, Any]:
    """Everything one frame shows, as plain JSON-able data."""
    out: dict[str, Any] = {"time_ms": int(time.time() * 1000), "portfolio": None, "positions": []}
    try:
        view: PortfolioView = await client.get_workflow_handle(portfolio_id).query(
            "state", result_type=PortfolioView, rpc_timeout=RPC
        )
    except Exception as err:  # not started yet, or no lifecycle worker
        out["portfolio_error"] = str(err) or type(err).__name__
        view = None
    if view is not None:
        out["portfolio"] = {
            "slots_used": view.slots_used,
            "max_open_positions": view.policy.max_open_positions,
            "notional_used": str(view.notional_used),
            "max_total_notional": str(view.policy.max_total_notional_usdt),
            "emergency": view.book.emergency.value,
            "kill_switch": view.policy.kill_switch,
            "granted_total": view.granted_total,
            "denied_total": view.denied_total,
            "last_decisions": [
                d.model_dump(mode="json", exclude={"exit_profile"}) for d in view.last_decisions
            ],
        }

        async def position(holder: str) -> dict[str, Any]:
            try:
                v: PositionView = await client.get_workflow_handle(holder).query(
                    "state", result_type=PositionView, rpc_timeout=RPC
                )
            except Exception as err:
                return {"workflow_id": holder, "error": str(err) or type(err).__name__}
            return v.model_dump(mode="json")

        out["positions"] = list(await asyncio.gather(*(position(h) for h in sorted(view.book.reservations))))
    realized = Decimal(0)
    trades = 0
    async for key in redis.scan_iter(match=LEDGER_KEY.format(symbol="*"), count=200):
        ledger = await redis.hgetall(key)
        realized += Decimal(ledger.get(b"realized_pnl", b"0").decode())
        trades += int(ledger.get(b"trades", b"0"))
    out["realized_pnl"] = str(realized)
    out["closed_trades"] = trades
    out["decisions"] = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _id, fields in await redis.xrevrange(DECISION_STREAM, count=decisions)
    ]
    return out


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
        f"over {snap['closed_trades']} closed trades"
    )
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

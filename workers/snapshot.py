"""What the operator views show, gathered once: `qtrader status` (workers/status_view.py) and the web
dashboard (workers/dashboard/) both read the system through these functions.

Sources: the PortfolioWorkflow's `state` query (slots, notional, emergency state, kill switch, the last
grants and denials with their reasons), each reserved position's `state` query (side, quantity, entry,
mark, unrealized PnL, stop, next trigger), the realized PnL of closed trades (`quantum:ledger:*`), the
newest model decisions (`quantum:stream:ai.decision.made`) and reconcile events
(`quantum:stream:reconcile.events`) from Redis. Everything is returned as plain JSON-able data.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from temporalio.client import Client

from activities.inference import DECISION_STREAM
from activities.projections import LEDGER_KEY
from activities.reconcile import RECONCILE_STREAM
from workflows.messages import DEFAULT_PORTFOLIO_ID, PortfolioView, PositionView

RPC = timedelta(seconds=5)


async def snapshot(
    client: Client | None,
    redis: aioredis.Redis,
    portfolio_id: str = DEFAULT_PORTFOLIO_ID,
    decisions: int = 8,
) -> dict[str, Any]:
    """The portfolio, its open positions, realized PnL of closed trades and the newest model decisions.
    `client` None: Temporal is not connected (the Redis part is still read). Redis unreachable: the
    workflows' part is still returned, with `redis_error` saying why the rest is missing."""
    out: dict[str, Any] = {"time_ms": int(time.time() * 1000), "portfolio": None, "positions": []}
    view: PortfolioView | None = None
    if client is None:
        out["portfolio_error"] = "Temporal is not connected"
    else:
        try:
            view = await client.get_workflow_handle(portfolio_id).query(
                "state", result_type=PortfolioView, rpc_timeout=RPC
            )
        except Exception as err:  # not started yet, or no lifecycle worker
            out["portfolio_error"] = str(err) or type(err).__name__
    if view is not None and client is not None:
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
    out["realized_pnl"], out["closed_trades"], out["decisions"] = None, None, []
    try:
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
    except RedisError as err:  # Redis is a read model: the workflows' own answers are still shown
        out["redis_error"] = str(err) or type(err).__name__
    return out


RECONCILE_FIELDS = ("kind", "symbol", "field", "detail", "workflow_id", "timestamp")


async def reconcile_events(redis: aioredis.Redis, count: int = 20) -> list[dict[str, str]]:
    """The newest differences reconcile found and fixed, newest first (without their raw payload)."""
    rows = await redis.xrevrange(RECONCILE_STREAM, count=count)
    out = []
    for _id, fields in rows:
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        out.append({k: decoded.get(k, "") for k in RECONCILE_FIELDS})
    return out

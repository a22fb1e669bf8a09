"""What the dashboard shows, read from the running system, and the portfolio controls it may call.

The live part is `workers.snapshot` (the same data as `qtrader status`: the portfolio's and each
position's `state` query, closed-trade PnL and model decisions from Redis) plus the newest reconcile
events; closed trades, equity and drawdown come from the trade journal (the stack's rows, run id =
TRADING_MODE). The journal is re-read when a trade closes and at least every JOURNAL_REFRESH_S.
"""

from __future__ import annotations

import asyncio
import math
import time
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from temporalio.client import Client

from journal.curves import equity_points
from journal.metrics import performance_figures
from journal.store import Journal, JournalError, open_journal
from trading.config import Settings
from trading.governor import RiskPolicy
from workers.snapshot import reconcile_events, snapshot
from workers.trade_cli import portfolio_update, ui_link
from workflows.messages import DEFAULT_PORTFOLIO_ID, FlattenRequest, KillSwitchRequest

JOURNAL_REFRESH_S = 10.0
CLOSED_TRADES_SHOWN = 50
CONNECT_TIMEOUT_S = 5.0


class TemporalUnavailable(RuntimeError):
    """Temporal cannot be reached right now; the message says where it was looked for."""


class SystemView:
    """Builds the dashboard's JSON view; one per dashboard process (it keeps the connections)."""

    def __init__(self, settings: Settings, portfolio_id: str = DEFAULT_PORTFOLIO_ID) -> None:
        self.settings = settings
        self.portfolio_id = portfolio_id
        self.capital: Decimal = settings.start_equity_usdt or settings.paper_start_balance_usdt
        self.run_id = settings.trading_mode.value
        # One quick reconnect (a pooled connection that a Redis restart broke), no backoff: a Redis that is
        # down would otherwise hold every view for seconds of retries; the next view tries again anyway.
        self.redis = aioredis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            socket_timeout=5,
            socket_connect_timeout=2,
            retry=Retry(NoBackoff(), 1),
        )
        self._client: Client | None = None
        self._connecting = asyncio.Lock()
        self._journal: Journal | None = None
        self._journal_error: str | None = None
        try:
            self._journal = open_journal(settings.database_url, settings.qt_home)
        except JournalError as err:
            self._journal_error = str(err)
        self._journal_view: dict[str, Any] | None = None
        self._journal_key: object = None
        self._journal_read_at = -math.inf

    async def client(self) -> Client:
        """The Temporal client, connected on first use and again after a failed attempt."""
        if self._client is not None:
            return self._client
        async with self._connecting:
            if self._client is None:
                from workers.temporal_client import connect

                try:
                    self._client = await asyncio.wait_for(connect(self.settings), CONNECT_TIMEOUT_S)
                except (TimeoutError, OSError, RuntimeError) as err:
                    raise TemporalUnavailable(
                        f"Temporal at {self.settings.temporal_address} is unreachable ({err or 'timed out'})"
                    ) from None
            return self._client

    def link(self, workflow_id: str) -> str:
        return ui_link(self.settings, workflow_id)

    async def __call__(self) -> dict[str, Any]:
        temporal_error = None
        try:
            client: Client | None = await self.client()
        except TemporalUnavailable as err:
            client, temporal_error = None, str(err)
        view = await snapshot(client, self.redis, self.portfolio_id, decisions=10)
        if temporal_error:
            view["portfolio_error"] = temporal_error
        for p in view["positions"]:
            p["link"] = self.link(p["workflow_id"])
        if view["portfolio"] is not None:
            for d in view["portfolio"]["last_decisions"]:
                d["link"] = self.link(d["holder_id"])
        try:
            view["reconcile"] = [
                {**e, "link": self.link(e["workflow_id"]) if e["workflow_id"] else None}
                for e in await reconcile_events(self.redis)
            ]
        except RedisError as err:
            view["reconcile"] = []
            view.setdefault("redis_error", str(err) or type(err).__name__)
        view["journal"] = await self._journal_part(view.get("closed_trades"))
        view.update(
            mode=self.settings.trading_mode.value,
            portfolio_id=self.portfolio_id,
            portfolio_link=self.link(self.portfolio_id),
            ui=ui_link(self.settings, "").rsplit("/namespaces/", 1)[0],
            controls=self.settings.dashboard_token is not None,
        )
        return view

    async def _journal_part(self, closed_trades: int | None) -> dict[str, Any]:
        if self._journal is None:
            return {"error": self._journal_error}
        # A closed trade (the Redis ledger's count moves) or the refresh period re-reads the journal.
        fresh = time.monotonic() - self._journal_read_at < JOURNAL_REFRESH_S
        if self._journal_view is not None and fresh and closed_trades == self._journal_key:
            return self._journal_view
        try:
            records = await asyncio.to_thread(self._journal.trades, run_id=self.run_id)
        except Exception as err:  # a journal database that is down costs this panel only
            return {"error": f"journal {self._journal.where}: {err}"}
        figures = performance_figures(records, self.capital, int(time.time() * 1000))
        newest = sorted(records, key=lambda r: (r.closed_at_ms, r.trade_id), reverse=True)
        self._journal_view = {
            "run_id": self.run_id,
            "where": self._journal.where,
            "capital": str(self.capital),
            "count": len(records),
            "figures": {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures},
            "trades": [
                {**r.model_dump(mode="json"), "link": self.link(r.trade_id)}
                for r in newest[:CLOSED_TRADES_SHOWN]
            ],
            "curve": [p.model_dump(mode="json") for p in equity_points(records, self.capital)],
        }
        self._journal_key, self._journal_read_at = closed_trades, time.monotonic()
        return self._journal_view

    async def close(self) -> None:
        await self.redis.aclose()


class PortfolioControls:
    """The kill switch and flatten-all: the portfolio workflow's own validated updates, called as
    `qtrader portfolio kill-switch` / `flatten` call them."""

    def __init__(self, view: SystemView) -> None:
        self.view = view

    async def kill_switch(self, req: KillSwitchRequest) -> dict[str, Any]:
        client = await self.view.client()
        policy: RiskPolicy = await portfolio_update(
            client,
            self.view.settings,
            self.view.portfolio_id,
            "set_kill_switch",
            req.model_dump(mode="json"),
            RiskPolicy,
        )
        return {"kill_switch": policy.kill_switch}

    async def flatten(self, req: FlattenRequest) -> dict[str, Any]:
        client = await self.view.client()
        holders: list[str] = await portfolio_update(
            client,
            self.view.settings,
            self.view.portfolio_id,
            "emergency_flatten",
            req.model_dump(mode="json"),
            list[str],
        )
        return {"halted": True, "holders": holders}

"""The balance tracker: the account as the venue reports it (trading/balance.py), read by the user-data
stream's process.

After every ACCOUNT_UPDATE (a fill, a funding fee, a deposit or withdrawal) and every `check_s` seconds
(the periodic REST check: an event lost in a reconnect is not a balance lost), it reads
GET /fapi/v3/account (weight 5) and hands the reading (wallet, unrealized PnL, equity, available
balance, initial and maintenance margin) to

* the portfolio, as a `risk_event` signal: its risk layer sizes from that equity, refuses entries above
  its margin ratio and marks the emergency stop's equity with it;
* the Redis stream `quantum:stream:account.balance` (dropped and counted when Redis is down);
* gauges: `account_equity_usdt`, `account_wallet_usdt`, `account_available_usdt`,
  `account_margin_ratio`, and counters of readings by reason and of failed readings.

Several events in a burst give one or two readings: readings are at least `min_interval_s` apart, and
one taken after the burst covers every event in it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError
from temporalio.service import RPCError, RPCStatusCode

from trading.balance import AccountBalance
from workflows.messages import DEFAULT_PORTFOLIO_ID

log = logging.getLogger("qtrader.balance")
BALANCE_STREAM = "quantum:stream:account.balance"


class BalanceMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.equity = Gauge("account_equity_usdt", "Equity: wallet balance plus unrealized PnL", registry=r)
        self.wallet = Gauge("account_wallet_usdt", "Wallet balance", registry=r)
        self.available = Gauge("account_available_usdt", "Available balance", registry=r)
        self.margin_ratio = Gauge("account_margin_ratio", "Maintenance margin over equity", registry=r)
        self.readings = Counter(
            "account_readings", "Account readings, by what prompted them", ["reason"], registry=r
        )
        self.failures = Counter("account_reading_failures", "Account readings that failed", registry=r)


class BalanceTracker:
    def __init__(
        self,
        *,
        venue: Any,  # BinanceFuturesClient (account)
        redis: aioredis.Redis,
        client: Any,  # temporalio.client.Client
        metrics: BalanceMetrics,
        check_s: float = 60.0,
        min_interval_s: float = 2.0,
        stream_maxlen: int = 100_000,
    ) -> None:
        """`min_interval_s`: the least time between two readings (a burst of fills costs one reading of
        weight 5, not one per fill, from the IP's shared budget). `metrics` live as long as the process
        (a tracker is made each time the process's lease makes it the active stream)."""
        self.venue = venue
        self.redis = redis
        self.client = client
        self.metrics = metrics
        self.check_s = check_s
        self.min_interval_s = min_interval_s
        self.stream_maxlen = stream_maxlen
        self._due = asyncio.Event()
        self._reason = "start"
        self._due.set()  # a first reading at once
        self.last: AccountBalance | None = None

    def poke(self, reason: str) -> None:
        """An ACCOUNT_UPDATE arrived (`reason`: its `m`, e.g. ORDER, DEPOSIT): read the account soon."""
        self._reason = reason
        self._due.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._due.wait(), timeout=self.check_s)
                reason = self._reason
            except TimeoutError:
                reason = "check"
            self._due.clear()
            try:
                await self.read(reason)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the venue or Temporal is away: the next event or check reads again
                self.metrics.failures.inc()
                log.warning("account reading failed (%s): %s", reason, exc)
            await asyncio.sleep(self.min_interval_s)  # events meanwhile are read right after

    async def read(self, reason: str) -> AccountBalance:
        a = await self.venue.account()
        balance = AccountBalance(
            at_ms=int(time.time() * 1000),
            wallet=a.total_wallet_balance,
            unrealized=a.total_unrealized_profit,
            equity=max(a.total_margin_balance, Decimal(0)),  # a negative balance is a liquidated one
            available=a.available_balance,
            initial_margin=a.total_initial_margin,
            maint_margin=a.total_maint_margin,
            reason=reason,
        )
        self.last = balance
        m = self.metrics
        m.readings.labels(reason).inc()
        m.equity.set(float(balance.equity))
        m.wallet.set(float(balance.wallet))
        m.available.set(float(balance.available))
        m.margin_ratio.set(float(balance.margin_ratio))
        await self._tell_portfolio(balance)
        await self._publish(balance)
        return balance

    async def _tell_portfolio(self, balance: AccountBalance) -> None:
        try:
            await self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).signal(
                "risk_event", balance.model_dump(mode="json")
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            log.info("no portfolio running to tell the account reading")

    async def _publish(self, b: AccountBalance) -> None:
        fields = {
            "wallet": format(b.wallet, "f"),
            "unrealized": format(b.unrealized, "f"),
            "equity": format(b.equity, "f"),
            "available": format(b.available, "f"),
            "initial_margin": format(b.initial_margin, "f"),
            "maint_margin": format(b.maint_margin, "f"),
            "margin_ratio": format(b.margin_ratio.quantize(Decimal("0.000001")), "f"),
            "reason": b.reason,
            "timestamp": str(b.at_ms),
        }
        try:
            await self.redis.xadd(BALANCE_STREAM, fields, maxlen=self.stream_maxlen, approximate=True)
        except (RedisError, OSError) as exc:
            log.warning("account reading not written to %s: %s", BALANCE_STREAM, exc)

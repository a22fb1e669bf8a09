"""The journal activity (task queue `trade-lifecycle`): a position workflow's closed trade → one row.

The workflow calls it once at the end of a position that traded. Temporal retries it until the
database takes the row; the insert is keyed by the workflow id, so a retry (or a worker killed after
the insert and before the ack) finds the row there and adds nothing. The performance gauges are then
recomputed from the journal itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from journal.metrics import PerformanceGauges, performance_figures
from journal.store import Journal
from trading.records import ClosedTrade, RecordMode, TradeRecord
from trading.risk import ClosedTradeEvent
from workflows import calls
from workflows.messages import DEFAULT_PORTFOLIO_ID

log = logging.getLogger("qtrader.journal")
TELL_TIMEOUT_S = 5.0


class JournalActivities:
    def __init__(
        self,
        journal: Journal,
        mode: RecordMode,
        capital: Decimal,
        gauges: PerformanceGauges | None = None,
        run_id: str | None = None,
        client: Client | None = None,
    ) -> None:
        """`client`: the portfolio is told each closed trade (its risk layer's losing streak, daily loss,
        stop-outs and symbol locks); none, not told."""
        self.client = client
        self.journal = journal
        self.mode = mode
        self.run_id = run_id or mode.value  # the stack's rows: run id "paper", "testnet" or "live"
        self.capital = capital
        self.gauges = gauges

    @activity.defn(name=calls.JOURNAL_TRADE.name)
    async def journal_trade(self, trade: ClosedTrade) -> bool:
        """Journal one closed trade; True when it was new (False: an earlier attempt wrote it)."""
        record = TradeRecord(**trade.model_dump(), run_id=self.run_id, mode=self.mode)
        inserted = await asyncio.to_thread(self.journal.record, record)
        if not inserted:
            log.info("trade %s was already journaled", record.trade_id)
        # Told on every attempt (a worker killed after the insert must not lose the event); the portfolio
        # counts a trade id once.
        await self.tell_portfolio(trade)
        await self.refresh_gauges()
        return inserted

    async def tell_portfolio(self, trade: ClosedTrade) -> None:
        """Best effort, bounded: the position waits for this activity before it ends, so a portfolio that
        cannot be told must not keep a closed position running (the activity retries for up to a day).
        A trade not told is logged as an error: the emergency stop did not count it."""
        if self.client is None:
            return
        event = ClosedTradeEvent(trade=trade).model_dump(mode="json")
        try:
            await asyncio.wait_for(
                self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).signal("risk_event", event),
                TELL_TIMEOUT_S,
            )
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                log.warning("trade %s: no portfolio running to tell", trade.trade_id)
            else:
                log.error("trade %s not told to the portfolio's risk layer: %s", trade.trade_id, err)
        except TimeoutError:
            log.error(
                "trade %s not told to the portfolio's risk layer: no answer in %g s",
                trade.trade_id,
                TELL_TIMEOUT_S,
            )

    async def refresh_gauges(self) -> None:
        if self.gauges is None:
            return
        records = await asyncio.to_thread(self.journal.trades, run_id=self.run_id)
        self.gauges.set(self.mode.value, performance_figures(records, self.capital, int(time.time() * 1000)))

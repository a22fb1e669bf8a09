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

from journal.metrics import PerformanceGauges, performance_figures
from journal.store import Journal
from trading.records import ClosedTrade, RecordMode, TradeRecord

log = logging.getLogger("qtrader.journal")


class JournalActivities:
    def __init__(
        self,
        journal: Journal,
        mode: RecordMode,
        capital: Decimal,
        gauges: PerformanceGauges | None = None,
        run_id: str | None = None,
    ) -> None:
        self.journal = journal
        self.mode = mode
        self.run_id = run_id or mode.value  # the stack's rows: run id "paper", "testnet" or "live"
        self.capital = capital
        self.gauges = gauges

    @activity.defn(name="journal_trade")
    async def journal_trade(self, trade: ClosedTrade) -> bool:
        """Journal one closed trade; True when it was new (False: an earlier attempt wrote it)."""
        record = TradeRecord(**trade.model_dump(), run_id=self.run_id, mode=self.mode)
        inserted = await asyncio.to_thread(self.journal.record, record)
        if not inserted:
            log.info("trade %s was already journaled", record.trade_id)
        await self.refresh_gauges()
        return inserted

    async def refresh_gauges(self) -> None:
        if self.gauges is None:
            return
        records = await asyncio.to_thread(self.journal.trades, run_id=self.run_id)
        self.gauges.set(self.mode.value, performance_figures(records, self.capital, int(time.time() * 1000)))

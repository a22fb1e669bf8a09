"""What an exchange worker measures for the risk layer's automatic emergency stop (trading/emergency.py):
each order's outcome (accepted, or rejected by the venue: the failed-order rate), the IP ban's start and
end, and the venue unreachable (venue health), sent to the portfolio as one `risk_events` signal per
`flush_s` at most, so a burst of orders costs the portfolio one workflow task, not one per order.

Reports are kept in memory until the portfolio takes them (at most `keep`, the oldest dropped and
counted first); a portfolio that is not running drops them. A worker that dies loses at most the last
`flush_s` of them: the stop's rules are rates over minutes, and a ban is reported again by every worker
that meets it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import BaseModel
from temporalio.service import RPCError, RPCStatusCode

from trading.emergency import OrderOutcome, VenueHealth
from workflows.messages import DEFAULT_PORTFOLIO_ID

log = logging.getLogger("qtrader.risk_reports")


def _now_ms() -> int:
    return int(time.time() * 1000)


class RiskReports:
    def __init__(self, client: Any, *, flush_s: float = 1.0, keep: int = 1000) -> None:
        """`client`: a temporalio Client (None: nothing is sent, e.g. a worker in a test)."""
        self.client = client
        self.flush_s = flush_s
        self.keep = keep
        self.pending: list[dict[str, Any]] = []
        self.sent = 0
        self.dropped = 0
        self._banned = False
        self._unreachable = False

    def _add(self, event: BaseModel) -> None:
        self.pending.append(event.model_dump(mode="json"))
        if len(self.pending) > self.keep:
            over = len(self.pending) - self.keep
            del self.pending[:over]
            self.dropped += over

    def order(self, *, failed: bool, detail: str | None = None) -> None:
        self._add(OrderOutcome(at_ms=_now_ms(), failed=failed, detail=detail[:200] if detail else None))

    def banned(self, active: bool) -> None:
        """The IP ban as this worker sees it now; only a change is reported."""
        if active != self._banned:
            self._banned = active
            self._add(VenueHealth(at_ms=_now_ms(), condition="ban", active=active))

    def unreachable(self, active: bool) -> None:
        """The venue unreachable (no answer for a while) as this worker sees it now; only a change."""
        if active != self._unreachable:
            self._unreachable = active
            self._add(VenueHealth(at_ms=_now_ms(), condition="outage", active=active))

    async def flush(self) -> None:
        if not self.pending or self.client is None:
            return
        batch = list(self.pending)
        try:
            await self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).signal(
                "risk_events", {"events": batch}
            )
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                log.warning("risk reports not delivered (kept for the next try): %s", err)
                return
            log.info("no portfolio running: %d risk reports dropped", len(batch))
        del self.pending[: len(batch)]
        self.sent += len(batch)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

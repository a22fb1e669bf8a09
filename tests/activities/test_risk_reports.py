"""What an exchange worker reports to the risk layer (activities/risk_reports.py): each order placed or
refused by the venue, the ban's start and end, batched into one signal, never lost to a failed send."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.exchange import ExchangeActivities
from activities.risk_reports import RiskReports
from exchange.client import BinanceFuturesClient
from tests.activities.conftest import SYM, attempt
from trading.execution import PlaceOrderInput, PlaceStopInput
from workflows.errors import ErrorType

D = Decimal


class Portfolio:
    """A client whose portfolio handle records signals, or raises `error` once."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, Any]] = []
        self.error: RPCError | None = None

    def get_workflow_handle(self, wid: str) -> Portfolio:
        return self

    async def signal(self, name: str, arg: Any) -> None:
        if self.error is not None:
            err, self.error = self.error, None
            raise err
        self.signals.append((name, arg))


async def test_outcomes_go_in_one_signal_and_survive_a_failed_send() -> None:
    portfolio = Portfolio()
    reports = RiskReports(portfolio, keep=3)
    reports.order(failed=False)
    reports.banned(True)
    reports.banned(True)  # no change: not reported again
    portfolio.error = RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
    await reports.flush()
    assert portfolio.signals == [] and len(reports.pending) == 2  # kept for the next try
    reports.order(failed=True, detail="-2019 Margin is insufficient")
    reports.banned(False)  # 4 kept at most 3: the oldest goes, counted
    await reports.flush()
    [(name, arg)] = portfolio.signals
    assert name == "risk_events" and reports.dropped == 1 and reports.pending == []
    assert [(e["kind"], e.get("failed"), e.get("active")) for e in arg["events"]] == [
        ("venue", None, True),
        ("order", True, None),
        ("venue", None, False),
    ]
    portfolio.error = RPCError("gone", RPCStatusCode.NOT_FOUND, b"")
    reports.order(failed=False)
    await reports.flush()
    assert reports.pending == []  # no portfolio: dropped, not kept forever


async def test_an_order_placed_and_a_stop_refused_are_reported(client: BinanceFuturesClient) -> None:
    reports = RiskReports(None)
    acts = ExchangeActivities(client, reports)
    order = PlaceOrderInput(symbol=SYM, side="BUY", quantity=D("0.002"), client_order_id="rr-1.entry")
    await attempt(1).run(acts.place_order, order)
    # A SELL stop above the mark would trigger at once: the venue refuses it.
    stop = PlaceStopInput(symbol=SYM, side="SELL", trigger_price=D("70000"), client_algo_id="rr-1.hstop1")
    with pytest.raises(ApplicationError) as refused:
        await attempt(1).run(acts.place_stop, stop)
    assert refused.value.type == ErrorType.REJECTED
    assert [(e["kind"], e["failed"]) for e in reports.pending] == [("order", False), ("order", True)]
    assert "immediately trigger" in reports.pending[1]["detail"]

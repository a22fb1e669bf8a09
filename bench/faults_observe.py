"""What the fault explorer sees, every sample: the venue's own record and Temporal's.

During a seed the venue is read through `/admin/orders` and `/admin/algo-orders` (every order and algo
order of a symbol, as allOrders / openAlgoOrders show them): injected faults never touch the admin
paths, so the observer neither takes a fault meant for the system (a `count`-limited ban) nor goes
blind during an outage. Positions are what the executed orders add up to; at the end of a seed they
are checked against positionRisk (see bench/faults_drive.py). Temporal is read by listing the running
position workflows and asking the portfolio for its `state`.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

import httpx

from bench.faults_invariants import TemporalSnapshot, VenueSnapshot, live_stops, positions_from_orders
from bench.faults_stack import ExplorerStack
from workflows.messages import DEFAULT_PORTFOLIO_ID, PortfolioView, PositionView
from workflows.search_attributes import SA_SYMBOL

RUNNING_POSITIONS = "WorkflowType='PositionWorkflow' AND ExecutionStatus='Running'"
RPC = timedelta(seconds=2)


class Observer:
    def __init__(self, stack: ExplorerStack, symbols: list[str], symbol_of: dict[str, str]) -> None:
        self.stack = stack
        self.symbols = symbols
        self.symbol_of = dict(symbol_of)  # workflow id → symbol: the seed's own, and those learnt
        self.orders: dict[str, list[dict]] = {}
        self.algos: dict[str, list[dict]] = {}

    # ------------------------------------------------------------ the venue
    async def venue(self) -> VenueSnapshot | None:
        try:
            async with asyncio.timeout(3):
                await asyncio.gather(*(self._read(sym) for sym in self.symbols))
        except (httpx.HTTPError, TimeoutError):
            return None
        return VenueSnapshot(positions_from_orders(self.all_orders()), live_stops(self.all_algos()))

    async def _read(self, symbol: str) -> None:
        self.orders[symbol] = await self.stack.admin("GET", f"orders?symbol={symbol}")
        self.algos[symbol] = await self.stack.admin("GET", f"algo-orders?symbol={symbol}")

    def all_orders(self) -> list[dict]:
        return [o for sym in self.symbols for o in self.orders.get(sym, [])]

    def all_algos(self) -> list[dict]:
        return [a for sym in self.symbols for a in self.algos.get(sym, [])]

    # ------------------------------------------------------------ Temporal
    async def running(self) -> dict[str, str] | None:
        """Running position workflows (id → symbol), or None when Temporal does not answer."""
        try:
            async with asyncio.timeout(3):
                found = [
                    wf async for wf in self.stack.client.list_workflows(RUNNING_POSITIONS, rpc_timeout=RPC)
                ]
                return {wf.id: await self._symbol(wf) for wf in found}
        except Exception:  # Temporal restarting, or slow: no sample of it this time
            return None

    async def _symbol(self, wf: Any) -> str:
        if wf.id not in self.symbol_of:
            symbol = wf.typed_search_attributes.get(SA_SYMBOL)
            if symbol is None:  # still entering (no search attributes yet): ask the workflow
                with contextlib.suppress(Exception):
                    handle = self.stack.client.get_workflow_handle(wf.id)
                    view = await handle.query("state", result_type=PositionView, rpc_timeout=RPC)
                    symbol = view.symbol
            if symbol is None:
                return "?"
            self.symbol_of[wf.id] = symbol
        return self.symbol_of[wf.id]

    async def portfolio(self) -> PortfolioView | None:
        try:
            async with asyncio.timeout(3):
                handle = self.stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
                return await handle.query("state", result_type=PortfolioView, rpc_timeout=RPC)
        except Exception:  # no lifecycle worker right now, or Temporal away
            return None

    async def temporal(self) -> TemporalSnapshot | None:
        running, portfolio = await asyncio.gather(self.running(), self.portfolio())
        if running is None:
            return None
        return TemporalSnapshot(running, portfolio.slots_used if portfolio is not None else None)

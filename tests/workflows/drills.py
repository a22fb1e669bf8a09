"""What the fault drills share: driving many open → close lifecycles, and reading the venue's own
record (every order, algo order, trade and position) to judge the system by it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from exchange.client import BinanceFuturesClient
from tests.workflows.conftest import Stack
from trading.intents import Side
from trading.pnl import Fill, cents, tally
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    ClosePositionRequest,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
)

D = Decimal
# Exits only by the test's close (or the venue's word). The drills' intents have no time value: under
# their load the shared weight budget can hold an entry past the default 60 s entry deadline, which
# would (correctly) deny it; these drills count duplicates, not timeliness.
QUIET = PositionOptions(mark_check_seconds=600, entry_deadline_seconds=3600)


def synthetic_symbols(n: int) -> list[str]:
    return [f"T{i:03d}USDT" for i in range(1, n + 1)]


async def open_then_close(
    stack: Stack, workflow_id: str, symbol: str, side: Side, *, timeout: float = 120
) -> PositionResult:
    """One lifecycle: start, wait until open, ask to close, wait for the result. Tolerates the
    workers coming and going (queries and updates are retried while no worker answers)."""
    handle = await stack.client.start_workflow(
        "PositionWorkflow",
        PositionInput(symbol=symbol, side=side, notional_usdt=D(100), intent_id=workflow_id, options=QUIET),
        id=workflow_id,
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=PositionResult,
    )
    async with asyncio.timeout(timeout):
        while True:
            try:
                view = await handle.query("state", result_type=PositionView)
            except Exception:  # no lifecycle worker right now
                view = None
            if view is not None and view.status not in (
                PositionStatus.VALIDATING,
                PositionStatus.GOVERNING,
                PositionStatus.ENTERING,
            ):
                break
            await asyncio.sleep(0.2)
        if view.status == PositionStatus.OPEN:
            while True:
                try:
                    await handle.execute_update("close", ClosePositionRequest(reason="operator"))
                    break
                except Exception as err:
                    if "not open" in str(err) or "closed" in str(err).lower():
                        break
                    await asyncio.sleep(0.5)
        return await handle.result()


@dataclass
class VenueRecord:
    orders: list[dict]
    algo_orders: list[dict]

    def duplicate_client_ids(self) -> dict[str, int]:
        ids = Counter(o["clientOrderId"] for o in self.orders)
        ids.update(a["clientAlgoId"] for a in self.algo_orders)
        return {cid: n for cid, n in ids.items() if n > 1}

    def orders_of(self, client_ids: Iterable[str]) -> list[dict]:
        wanted = set(client_ids)
        return [o for o in self.orders if o["clientOrderId"] in wanted]


def venue_record(stack: Stack, symbols: Iterable[str]) -> VenueRecord:
    orders: list[dict] = []
    algos: list[dict] = []
    for sym in symbols:
        orders += stack.exchange.admin("GET", f"orders?symbol={sym}")
        algos += stack.exchange.admin("GET", f"algo-orders?symbol={sym}")
    return VenueRecord(orders, algos)


async def venue_positions(stack: Stack) -> dict[str, Decimal]:
    async with BinanceFuturesClient.from_settings(stack.settings) as venue:
        return {p.symbol: p.position_amt for p in await venue.position_risk() if p.position_amt != 0}


async def venue_fills(
    stack: Stack, symbol: str, client_ids: dict[int, str], cache: dict | None = None
) -> list[Fill]:
    """The venue's trades on `symbol` for the given orders (order id → client id). `cache` keeps each
    symbol's trades, read once: a drill of hundreds of lifecycles would otherwise spend the IP's request
    weight (userTrades weighs 5) on its own checks and meet a 429."""
    cache = {} if cache is None else cache
    if symbol not in cache:
        async with BinanceFuturesClient.from_settings(stack.settings) as venue:
            cache[symbol] = await venue.user_trades(symbol, limit=1000)
    return [t.to_fill(client_ids[t.order_id]) for t in cache[symbol] if t.order_id in client_ids]


async def pnl_matches_venue(
    stack: Stack, result: PositionResult, record: VenueRecord, cache: dict | None = None
) -> bool:
    """The workflow's realized PnL equals what the venue's own trades for its orders add up to."""
    cids = {f.client_order_id for f in result.fills}
    orders = {o["orderId"]: o["clientOrderId"] for o in record.orders_of(cids)}
    fills = await venue_fills(stack, result.symbol, orders, cache)
    venue = tally(result.side, fills)
    return cents(venue.realized_net) == cents(result.realized_pnl) and venue.open_qty == 0

"""Exchange activities (task queue `exchange`): the lifecycle's only way to the venue.

The client's typed errors decide what Temporal does: a rejection is non-retryable, a rate limit
retries after Retry-After, and an unknown outcome is resolved by looking the order up by its client id
before anything is sent again (Binance only refuses a duplicate client id while the first is open).

Under an IP ban (418) new entries halt at once (nothing was sent; the position gives its slot back)
while exits (closing orders, hard stops) run with exit priority and retry when the ban ends, so they
keep their place.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

from temporalio import activity
from temporalio.exceptions import ApplicationError

from exchange.client import BinanceFuturesClient
from exchange.errors import (
    ExchangeError,
    IpBannedError,
    OrderNotFoundError,
    RateLimitedError,
    RejectedError,
    UnknownOutcomeError,
)
from exchange.models import Order
from exchange.weights import exit_priority, send_before
from trading.execution import (
    CancelStopInput,
    EntryMarket,
    ExchangePosition,
    ExchangePositionInput,
    MarkPriceInput,
    OpenEntryInput,
    OpenEntryOutcome,
    OrderOutcome,
    OrderStatus,
    PlaceOrderInput,
    PlaceStopInput,
    PrepareEntryInput,
    SetLeverageInput,
    StopOutcome,
    SyncFillsInput,
)
from trading.exits import entry_quantity
from trading.pnl import Fill

FINAL_STATUSES = {"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"}


@contextmanager
def venue_errors() -> Iterator[None]:
    """Turn the client's error tree into Temporal's retry decisions."""
    try:
        yield
    except RejectedError as err:
        raise ApplicationError(str(err), {"code": err.code}, type="Rejected", non_retryable=True) from None
    except IpBannedError as err:
        delay = timedelta(seconds=err.retry_after_s) if err.retry_after_s else None
        raise ApplicationError(str(err), type="IpBanned", next_retry_delay=delay) from None
    except RateLimitedError as err:
        delay = timedelta(seconds=err.retry_after_s) if err.retry_after_s else None
        raise ApplicationError(str(err), type="RateLimited", next_retry_delay=delay) from None
    except ExchangeError as err:
        raise ApplicationError(str(err), {"code": err.code}, type=type(err).__name__) from None


def attempt_deadline(margin_s: float = 2.0) -> float | None:
    """When this activity attempt's start-to-close time runs out (epoch seconds, less a margin): after
    it Temporal has started the next attempt, which must be the only one that sends."""
    info = activity.info()
    if info.start_to_close_timeout is None:
        return None
    return info.started_time.timestamp() + info.start_to_close_timeout.total_seconds() - margin_s


class ExchangeActivities:
    def __init__(self, client: BinanceFuturesClient) -> None:
        self.client = client

    @activity.defn(name="prepare_entry")
    async def prepare_entry(self, inp: PrepareEntryInput) -> EntryMarket:
        with venue_errors():
            rules = await self.client.exchange_info()
            found = rules.get(inp.symbol)
            if found is None or found.status != "TRADING":
                raise ApplicationError(
                    f"{inp.symbol} is not a trading symbol on the exchange",
                    type="UnknownSymbol",
                    non_retryable=True,
                )
            index = await self.client.premium_index(inp.symbol)
        return EntryMarket(rules=found, mark_price=index.mark_price)

    @activity.defn(name="open_entry")
    async def open_entry(self, inp: OpenEntryInput) -> OpenEntryOutcome:
        try:
            return await self._open_entry(inp)
        except ApplicationError as err:
            # On a first attempt a ban means this entry never reached the venue: halt it. A later attempt
            # may follow an unknown outcome, so it keeps retrying until it can look the order up.
            if err.type == "IpBanned" and activity.info().attempt == 1:
                activity.metric_meter().create_counter(
                    "quantum_entries_halted", "entries refused because the venue banned the IP"
                ).add(1, {"symbol": inp.symbol})
                activity.logger.error("ALERT entries halted by an IP ban: %s", err.message)
                raise ApplicationError(
                    f"entries halted: {err.message}", type="EntriesHalted", non_retryable=True
                ) from None
            raise

    async def _open_entry(self, inp: OpenEntryInput) -> OpenEntryOutcome:
        market = await self.prepare_entry(PrepareEntryInput(symbol=inp.symbol))
        qty = entry_quantity(inp.notional_usdt, market.mark_price, market.rules, inp.quantity)
        if qty < market.rules.market_min_qty or qty * market.mark_price < market.rules.min_notional:
            return OpenEntryOutcome(market=market)
        await self.set_leverage(SetLeverageInput(symbol=inp.symbol, leverage=inp.leverage))
        outcome = await self.place_order(
            PlaceOrderInput(
                symbol=inp.symbol,
                side=inp.side,
                quantity=qty,
                client_order_id=inp.client_order_id,
                intent_at_ms=inp.intent_at_ms,
            )
        )
        return OpenEntryOutcome(market=market, outcome=outcome)

    @activity.defn(name="set_leverage")
    async def set_leverage(self, inp: SetLeverageInput) -> int:
        with venue_errors():
            return (await self.client.set_leverage(inp.symbol, inp.leverage)).leverage

    @activity.defn(name="get_mark_price")
    async def get_mark_price(self, inp: MarkPriceInput) -> Decimal:
        with venue_errors():
            return (await self.client.premium_index(inp.symbol)).mark_price

    @activity.defn(name="get_position")
    async def get_position(self, inp: ExchangePositionInput) -> ExchangePosition:
        with venue_errors():
            rows = await self.client.position_risk(inp.symbol)
        row = next((r for r in rows if r.symbol == inp.symbol), None)
        if row is None:
            return ExchangePosition(
                symbol=inp.symbol, position_amt=Decimal(0), entry_price=Decimal(0), mark_price=Decimal(0)
            )
        return ExchangePosition(
            symbol=inp.symbol,
            position_amt=row.position_amt,
            entry_price=row.entry_price,
            mark_price=row.mark_price,
        )

    @activity.defn(name="place_order")
    async def place_order(self, inp: PlaceOrderInput) -> OrderOutcome:
        meter = activity.metric_meter()
        action = "close" if inp.reduce_only else "open"
        meter.create_counter("apply_layer_exec", "orders sent to the venue").add(
            1, {"symbol": inp.symbol, "action": action}
        )
        if inp.reduce_only:
            with exit_priority():
                outcome = await self._place_order(inp)
        else:
            outcome = await self._place_order(inp)
        if outcome.executed_qty > 0:
            meter.create_counter("apply_layer_exec_success", "orders that executed").add(
                1, {"symbol": inp.symbol, "action": action}
            )
        if inp.intent_at_ms is not None and not inp.reduce_only:
            meter.create_histogram_float(
                "quantum_intent_to_order_seconds", "intent to entry order acknowledged", "s"
            ).record(max(0.0, time.time() - inp.intent_at_ms / 1000))
        return outcome

    async def _place_order(self, inp: PlaceOrderInput) -> OrderOutcome:
        with venue_errors(), send_before(attempt_deadline()):
            order: Order | None = None
            recovered = False
            if activity.info().attempt > 1:  # an earlier attempt may have reached the venue
                order = await self.client.find_order(inp.symbol, inp.client_order_id)
                recovered = order is not None
            if order is None:
                try:
                    order = await self.client.new_order(
                        inp.symbol,
                        inp.side,
                        "MARKET",
                        inp.quantity,
                        reduce_only=inp.reduce_only,
                        client_order_id=inp.client_order_id,
                    )
                except UnknownOutcomeError:
                    order = await self._look_up(inp.symbol, inp.client_order_id)
                    if order is None:
                        raise  # retried; the next attempt looks the order up before sending
                    recovered = True
                except RejectedError as err:
                    if inp.reduce_only and err.code == -2022:
                        # Nothing left to reduce: the venue closed the position (hard stop, liquidation).
                        return OrderOutcome(
                            client_order_id=inp.client_order_id,
                            order_id=0,
                            status=OrderStatus.REJECTED,
                            executed_qty=Decimal(0),
                            avg_price=Decimal(0),
                        )
                    raise
            order = await self._until_final(inp.symbol, order)
            fills = await self._fills(inp.symbol, order)
        return OrderOutcome(
            client_order_id=order.client_order_id,
            order_id=order.order_id,
            status=OrderStatus(order.status),
            executed_qty=order.executed_qty,
            avg_price=order.avg_price,
            fills=fills,
            recovered=recovered,
        )

    @activity.defn(name="place_stop")
    async def place_stop(self, inp: PlaceStopInput) -> StopOutcome:
        with venue_errors(), exit_priority(), send_before(attempt_deadline()):
            algo = (
                await self.client.find_algo_order(inp.client_algo_id) if activity.info().attempt > 1 else None
            )
            if algo is None:
                try:
                    algo = await self.client.new_algo_order(
                        inp.symbol,
                        inp.side,
                        "STOP_MARKET",
                        inp.trigger_price,
                        close_position=True,
                        working_type=inp.working_type,
                        client_algo_id=inp.client_algo_id,
                    )
                except UnknownOutcomeError:
                    algo = await self.client.find_algo_order(inp.client_algo_id)
                    if algo is None:
                        raise
        return StopOutcome(
            client_algo_id=algo.client_algo_id,
            algo_id=algo.algo_id,
            status=algo.algo_status,
            trigger_price=algo.trigger_price or inp.trigger_price,
        )

    @activity.defn(name="cancel_stop")
    async def cancel_stop(self, inp: CancelStopInput) -> bool:
        """True when a live stop was cancelled; False when there was none left (already gone)."""
        with venue_errors(), exit_priority():
            try:
                await self.client.cancel_algo_order(client_algo_id=inp.client_algo_id)
            except OrderNotFoundError:
                return False
            except RejectedError as err:
                if err.code in (-2011, -2013):
                    return False
                raise
        return True

    @activity.defn(name="sync_fills")
    async def sync_fills(self, inp: SyncFillsInput) -> list[Fill]:
        """Every fill of the symbol since the position opened (one position per symbol), including
        those the venue made on its own (hard stop, liquidation)."""
        with venue_errors():
            trades = await self.client.user_trades(inp.symbol, start_time=inp.since_ms, limit=1000)
            fills = []
            for t in trades:
                cid = inp.order_ids.get(t.order_id)
                if cid is None:
                    order = await self.client.query_order(inp.symbol, order_id=t.order_id)
                    cid = order.client_order_id
                fills.append(t.to_fill(cid))
        return fills

    # --- helpers ---
    async def _look_up(self, symbol: str, client_order_id: str, tries: int = 3) -> Order | None:
        for attempt in range(tries):
            try:
                order = await self.client.find_order(symbol, client_order_id)
            except ExchangeError:
                order = None
            if order is not None:
                return order
            await asyncio.sleep(0.2 * (attempt + 1))
        return None

    async def _until_final(self, symbol: str, order: Order, wait_s: float = 5.0) -> Order:
        deadline = asyncio.get_running_loop().time() + wait_s
        while order.status not in FINAL_STATUSES and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            order = await self.client.query_order(symbol, client_order_id=order.client_order_id)
        return order

    async def _fills(self, symbol: str, order: Order) -> list[Fill]:
        if order.executed_qty <= 0:
            return []
        trades = await self.client.user_trades(symbol, order_id=order.order_id)
        return [t.to_fill(order.client_order_id) for t in trades if t.order_id == order.order_id]

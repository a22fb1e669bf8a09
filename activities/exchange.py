"""Exchange activities (task queue `exchange`): the lifecycle's only way to the venue.

The client's typed errors decide what Temporal does: a rejection is non-retryable, a rate limit
retries after Retry-After, and an unknown outcome is resolved by looking the order up by its client id.

Never a duplicate order (Binance only refuses a duplicate client id while the first is open):
- every attempt looks its client id up before it sends, the first one too (a workflow reset re-runs the
  activity as attempt 1 with the same client id);
- an attempt sends only until its start-to-close time less the client's HTTP timeout and recvWindow (and
  a dispatch allowance), measured on this process's monotonic clock, so a late send cannot execute after
  the next attempt's look-up;
- after an unknown outcome, "not found" decides only once the request can no longer execute (its
  timestamp + recvWindow has passed); until then the attempt neither resends nor ends.

Under an IP ban (418) a new entry halts at once (`EntriesHalted`, the position gives its slot back) only
while no order with its client id can exist on the venue; once one may (sent, or found), it retries like
an exit. Exits (closing orders, hard stops) run with exit priority and retry when the ban ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.risk_reports import RiskReports
from exchange.client import BinanceFuturesClient
from exchange.errors import (
    ExchangeError,
    IpBannedError,
    OrderNotFoundError,
    RateLimitedError,
    RejectedError,
    RetryableError,
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
from workflows import calls
from workflows.errors import ErrorType

FINAL_STATUSES = {"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"}
# Between the server starting an attempt (its `started_time`, on the server's clock) and this process
# running it: the poll answer's transit and the event loop picking the task up, milliseconds normally.
# It cannot be measured on one clock, so it is allowed for; the margin's HTTP-timeout part is slack
# beyond it (safety needs only recvWindow + this delay).
DISPATCH_ALLOWANCE_S = 1.0
# Beyond recvWindow before "not found" is final: the client's estimate of the venue's clock may be off
# by up to half a round trip, and the venue checks recvWindow on its own clock.
EXPIRY_MARGIN_S = 1.0

_T = TypeVar("_T")


@contextmanager
def venue_errors() -> Iterator[None]:
    """Turn the client's error tree into Temporal's retry decisions."""
    try:
        yield
    except RejectedError as err:
        raise ApplicationError(
            str(err), {"code": err.code}, type=ErrorType.REJECTED, non_retryable=True
        ) from None
    except IpBannedError as err:
        delay = timedelta(seconds=err.retry_after_s) if err.retry_after_s else None
        raise ApplicationError(str(err), type=ErrorType.IP_BANNED, next_retry_delay=delay) from None
    except RateLimitedError as err:
        delay = timedelta(seconds=err.retry_after_s) if err.retry_after_s else None
        raise ApplicationError(str(err), type=ErrorType.RATE_LIMITED, next_retry_delay=delay) from None
    except ExchangeError as err:  # retryable, typed by the client's error class (exchange/errors.py)
        raise ApplicationError(str(err), {"code": err.code}, type=type(err).__name__) from None


@dataclass
class _Attempt:
    """One activity attempt as this process sees it."""

    # When it began running here (`time.monotonic()`); the send deadline counts from it.
    began: float = field(default_factory=time.monotonic)
    # Whether an order with its client id may exist on the venue: an earlier attempt may have sent one
    # until this attempt's own look-up says otherwise.
    may_exist: bool = field(default_factory=lambda: activity.info().attempt > 1)
    # A caller's own limit on sending (monotonic), e.g. the entry's deadline: a send that pacing held
    # past it is refused, and the retry finds nothing and answers "expired".
    send_by: float | None = None


async def _sleep_until(monotonic_at: float) -> None:
    await asyncio.sleep(max(0.0, monotonic_at - time.monotonic()))


class ExchangeActivities:
    def __init__(self, client: BinanceFuturesClient, reports: RiskReports | None = None) -> None:
        """`reports`: where each order's outcome goes for the risk layer (none: not reported)."""
        self.client = client
        self.reports = reports

    @contextmanager
    def _reported(self) -> Iterator[None]:
        """An order placed (accepted) or refused by the venue (Rejected), for the stop's failed-order
        rate; retryable failures are not outcomes (the order is tried again), nor is a reduce-only order
        that found nothing left to reduce."""
        try:
            yield
        except ApplicationError as err:
            if self.reports is not None and err.type == ErrorType.REJECTED:
                self.reports.order(failed=True, detail=str(err.message))
            raise
        if self.reports is not None:
            self.reports.order(failed=False)

    def send_margin_s(self) -> float:
        """How long before the attempt's end the last order may go: the client's HTTP timeout (it may
        still be waiting for the answer) plus recvWindow (the venue may still execute a request that old)
        plus the dispatch allowance."""
        return self.client.timeout_s + self.client.recv_window_ms / 1000 + DISPATCH_ALLOWANCE_S

    def _send_deadline(self, attempt: _Attempt) -> float | None:
        """The monotonic time after which this attempt sends no order. One clock: the Temporal server's
        `started_time` is not compared with this host's clock (a skew of seconds would move the deadline
        by as much); the attempt's time is counted from when it began here."""
        timeout = activity.info().start_to_close_timeout
        ends = None if timeout is None else attempt.began + timeout.total_seconds() - self.send_margin_s()
        limits = [t for t in (ends, attempt.send_by) if t is not None]
        return min(limits) if limits else None

    def _expires_at(self) -> float:
        """When a request signed now can no longer execute (monotonic). A request's signed timestamp is
        no later than now, and the venue refuses one older than recvWindow."""
        return time.monotonic() + self.client.recv_window_ms / 1000 + EXPIRY_MARGIN_S

    @activity.defn(name=calls.PREPARE_ENTRY.name)
    async def prepare_entry(self, inp: PrepareEntryInput) -> EntryMarket:
        with venue_errors():
            rules = await self.client.exchange_info()
            found = rules.get(inp.symbol)
            if found is None or found.status != "TRADING":
                raise ApplicationError(
                    f"{inp.symbol} is not a trading symbol on the exchange",
                    type=ErrorType.UNKNOWN_SYMBOL,
                    non_retryable=True,
                )
            index = await self.client.premium_index(inp.symbol)
        return EntryMarket(rules=found, mark_price=index.mark_price)

    @activity.defn(name=calls.OPEN_ENTRY.name)
    async def open_entry(self, inp: OpenEntryInput) -> OpenEntryOutcome:
        attempt = _Attempt()
        try:
            return await self._open_entry(inp, attempt)
        except ApplicationError as err:
            # Halt only while no order with this client id can exist: halting gives the slot back, and
            # after the order went out (a ban on the fills read or the status poll) the venue would hold
            # a position nobody manages. Otherwise retry: the retry looks the order up first.
            if err.type == ErrorType.IP_BANNED and not attempt.may_exist:
                activity.metric_meter().create_counter(
                    "quantum_entries_halted", "entries refused because the venue banned the IP"
                ).add(1, {"symbol": inp.symbol})
                activity.logger.error("ALERT entries halted by an IP ban: %s", err.message)
                raise ApplicationError(
                    f"entries halted: {err.message}", type=ErrorType.ENTRIES_HALTED, non_retryable=True
                ) from None
            raise

    async def _open_entry(self, inp: OpenEntryInput, attempt: _Attempt) -> OpenEntryOutcome:
        market = await self.prepare_entry(PrepareEntryInput(symbol=inp.symbol))
        qty = entry_quantity(inp.notional_usdt, market.mark_price, market.rules, inp.quantity)
        with venue_errors():
            found = await self._look_up(inp.symbol, inp.client_order_id, attempt)
            if found is None:
                if inp.deadline_ms is not None and self.client.timestamp_ms() > inp.deadline_ms:
                    # A stale intent (after an outage) must not execute now at another price.
                    activity.logger.warning(
                        "entry %s expired before it was sent; nothing sent", inp.client_order_id
                    )
                    return OpenEntryOutcome(market=market, expired=True)
                if qty < market.rules.market_min_qty or qty * market.mark_price < market.rules.min_notional:
                    return OpenEntryOutcome(market=market)
                await self.client.set_leverage(inp.symbol, inp.leverage)
                if inp.deadline_ms is not None:
                    left_s = (inp.deadline_ms - self.client.timestamp_ms()) / 1000
                    attempt.send_by = time.monotonic() + left_s
        order = PlaceOrderInput(
            symbol=inp.symbol,
            side=inp.side,
            quantity=qty if found is None else found.orig_qty,
            client_order_id=inp.client_order_id,
            intent_at_ms=inp.intent_at_ms,
        )
        return OpenEntryOutcome(market=market, outcome=await self._metered(order, attempt, found, True))

    @activity.defn(name=calls.SET_LEVERAGE.name)
    async def set_leverage(self, inp: SetLeverageInput) -> int:
        with venue_errors():
            return (await self.client.set_leverage(inp.symbol, inp.leverage)).leverage

    @activity.defn(name=calls.GET_MARK_PRICE.name)
    async def get_mark_price(self, inp: MarkPriceInput) -> Decimal:
        with venue_errors():
            return (await self.client.premium_index(inp.symbol)).mark_price

    @activity.defn(name=calls.GET_POSITION.name)
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

    @activity.defn(name=calls.PLACE_ORDER.name)
    async def place_order(self, inp: PlaceOrderInput) -> OrderOutcome:
        return await self._metered(inp, _Attempt())

    async def _metered(
        self, inp: PlaceOrderInput, attempt: _Attempt, found: Order | None = None, looked_up: bool = False
    ) -> OrderOutcome:
        meter = activity.metric_meter()
        action = "close" if inp.reduce_only else "open"
        meter.create_counter("apply_layer_exec", "orders sent to the venue").add(
            1, {"symbol": inp.symbol, "action": action}
        )
        with self._reported(), exit_priority() if inp.reduce_only else contextlib.nullcontext():
            outcome = await self._place_order(inp, attempt, found, looked_up)
        if outcome.executed_qty > 0:
            meter.create_counter("apply_layer_exec_success", "orders that executed").add(
                1, {"symbol": inp.symbol, "action": action}
            )
        if inp.intent_at_ms is not None and not inp.reduce_only:
            meter.create_histogram_float(
                "quantum_intent_to_order_seconds", "intent to entry order acknowledged", "s"
            ).record(max(0.0, time.time() - inp.intent_at_ms / 1000))
        return outcome

    async def _place_order(
        self, inp: PlaceOrderInput, attempt: _Attempt, found: Order | None, looked_up: bool
    ) -> OrderOutcome:
        symbol, cid = inp.symbol, inp.client_order_id
        with venue_errors(), send_before(self._send_deadline(attempt)):
            order = found if looked_up else await self._look_up(symbol, cid, attempt)
            recovered = order is not None
            if order is None:
                try:
                    order, recovered = await self._send(
                        lambda: self.client.new_order(
                            symbol,
                            inp.side,
                            "MARKET",
                            inp.quantity,
                            reduce_only=inp.reduce_only,
                            client_order_id=cid,
                        ),
                        lambda: self.client.find_order(symbol, cid),
                        attempt,
                    )
                except RejectedError as err:
                    if inp.reduce_only and err.code == -2022:
                        # Nothing left to reduce: the venue closed the position (hard stop, liquidation).
                        return OrderOutcome(
                            client_order_id=cid,
                            order_id=0,
                            status=OrderStatus.REJECTED,
                            executed_qty=Decimal(0),
                            avg_price=Decimal(0),
                        )
                    raise
            order = await self._until_final(symbol, order)
            fills = await self._fills(symbol, order)
        return OrderOutcome(
            client_order_id=order.client_order_id,
            order_id=order.order_id,
            status=OrderStatus(order.status),
            executed_qty=order.executed_qty,
            avg_price=order.avg_price,
            fills=fills,
            recovered=recovered,
        )

    @activity.defn(name=calls.PLACE_STOP.name)
    async def place_stop(self, inp: PlaceStopInput) -> StopOutcome:
        attempt = _Attempt()
        cid = inp.client_algo_id
        with self._reported(), venue_errors(), exit_priority(), send_before(self._send_deadline(attempt)):
            # Every attempt looks first: a reset run or an earlier attempt may have placed it.
            algo = await self.client.find_algo_order(cid)
            if algo is None:
                algo, _ = await self._send(
                    lambda: self.client.new_algo_order(
                        inp.symbol,
                        inp.side,
                        "STOP_MARKET",
                        inp.trigger_price,
                        close_position=True,
                        working_type=inp.working_type,
                        client_algo_id=cid,
                    ),
                    lambda: self.client.find_algo_order(cid),
                    attempt,
                )
        return StopOutcome(
            client_algo_id=algo.client_algo_id,
            algo_id=algo.algo_id,
            status=algo.algo_status,
            trigger_price=algo.trigger_price or inp.trigger_price,
        )

    @activity.defn(name=calls.CANCEL_STOP.name)
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

    @activity.defn(name=calls.SYNC_FILLS.name)
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
    async def _look_up(self, symbol: str, client_order_id: str, attempt: _Attempt) -> Order | None:
        """The order with this client id, before anything is sent (every attempt: an earlier attempt, or
        the run before a workflow reset, may have placed it)."""
        order = await self.client.find_order(symbol, client_order_id)
        attempt.may_exist = order is not None
        return order

    async def _send(
        self, send: Callable[[], Awaitable[_T]], find: Callable[[], Awaitable[_T | None]], attempt: _Attempt
    ) -> tuple[_T, bool]:
        """Send an order that a look-up just did not find: (the order, whether it was recovered by its
        client id after an unknown outcome). Sends again only once "not found" is final; the client
        refuses to send after this attempt's deadline (a retry then looks and sends)."""
        while True:
            attempt.may_exist = True
            expires_at: float | None = None
            try:
                try:
                    return await send(), False
                except (RetryableError, RejectedError):
                    attempt.may_exist = False  # a certain failure (a 418 too: a refusal): nothing placed
                    raise
                except UnknownOutcomeError:
                    expires_at = self._expires_at()
                    order = await self._settle(find, expires_at)
            except asyncio.CancelledError:
                # Cancelled mid-request (the worker shuts down): the retry starts as soon as this attempt
                # ends, and its look-up must not run while the request may still execute.
                await _sleep_until(expires_at if expires_at is not None else self._expires_at())
                raise
            if order is not None:
                return order, True
            attempt.may_exist = False  # it did not execute and no longer can

    @staticmethod
    async def _settle(find: Callable[[], Awaitable[_T | None]], expires_at: float) -> _T | None:
        """After an unknown outcome: the order if it executed, else None, but only once the request can
        no longer execute (a look-up before then may miss an order still on its way, and a resend would
        place it twice). A failure after the expiry propagates: the retry's look-up then decides."""
        try:
            found = await find()
        except ExchangeError:
            found = None  # decided after the expiry
        if found is not None:
            return found
        await _sleep_until(expires_at)
        return await find()

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

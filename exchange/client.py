"""Async client for Binance USDⓈ-M futures REST (paper, testnet and live speak the same API).

One `httpx.AsyncClient` (HTTP keep-alive) per client; a signed call is: pace against the weight
budget, sign, one request, parse. Decimals in, typed models out; errors are the typed tree of
`exchange.errors`. Orders are rounded to the symbol's filters and refused locally (never sent)
when they cannot pass them.

Retries: GETs are retried by the client itself (bounded, with backoff) on retryable errors and
unknown outcomes (reads are safe); order placement and every other write is never retried, except
once after a -1021 clock-skew rejection (the venue refused it before doing anything) once the
clock has been resynced. An `UnknownOutcomeError` from an order carries its client id: resolve it
with `find_order(symbol, client_order_id)` before sending anything again.

The API key and secret are private attributes; they appear in no repr, log line or error text and
leave the process only as the `X-MBX-APIKEY` header and the signature.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

import httpx

from exchange.errors import (
    ClockSkewError,
    ExchangeError,
    IpBannedError,
    OrderNotFoundError,
    OrderValidationError,
    RateLimitedError,
    RejectedError,
    RetryableError,
    UnknownOutcomeError,
    classify,
)
from exchange.models import (
    Account,
    AlgoCancel,
    AlgoOrder,
    Income,
    Kline,
    Leverage,
    Order,
    PositionRisk,
    PremiumIndex,
    Trade,
)
from exchange.signing import Signer, encode_params
from exchange.weights import WeightTracker, request_weight, send_deadline
from trading.instruments import FilterViolation, SymbolRules

if TYPE_CHECKING:
    from exchange.shared_budget import SharedWeightBudget
    from trading.config import Settings

__all__ = ["CLIENT_ID_RE", "BinanceFuturesClient", "new_client_id"]

_log = logging.getLogger("exchange.client")

CLIENT_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
_SIDES = frozenset({"BUY", "SELL"})
_ORDER_TYPES = frozenset({"MARKET", "LIMIT"})
_ALGO_TYPES = frozenset({"STOP_MARKET", "TAKE_PROFIT_MARKET"})
_CONDITIONAL = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})
_TIFS = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD", "RPI"})
_WORKING_TYPES = frozenset({"MARK_PRICE", "CONTRACT_PRICE"})

Side = Literal["BUY", "SELL"]


def new_client_id(prefix: str = "qt") -> str:
    """A fresh client order id that matches Binance's pattern (for callers that have none)."""
    return f"{prefix}-{secrets.token_hex(12)}"


def _check_client_id(value: str, field: str) -> str:
    if not isinstance(value, str) or not CLIENT_ID_RE.match(value):
        raise OrderValidationError(
            f"{field} {value!r} is not valid: it must match ^[.A-Z:/a-z0-9_-]{{1,36}}$", code=-4015
        )
    return value


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int | str):
        try:
            d = Decimal(value)
        except InvalidOperation:
            raise OrderValidationError(f"{field} {value!r} is not a number", code=-1102) from None
    elif isinstance(value, float):
        d = Decimal(repr(value))
    else:
        raise OrderValidationError(f"{field} must be a Decimal, got {type(value).__name__}", code=-1102)
    if not d.is_finite():
        raise OrderValidationError(f"{field} {value!r} is not a finite number", code=-1102)
    return d


async def _asyncio_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


# A request that failed to get an answer more than this long ago no longer says the venue is down (nothing
# may have been asked since).
UNANSWERED_RECENT_S = 10.0


class BinanceFuturesClient:
    """Async Binance USDⓈ-M REST client. Use as `async with BinanceFuturesClient(...) as client:`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        api_secret: str | None,
        *,
        recv_window_ms: int = 5000,
        timeout_s: float = 10.0,
        weight_limit_1m: int = 2400,
        headroom_pct: float = 80,
        transport: httpx.AsyncBaseTransport | None = None,
        order_limit_10s: int = 300,
        order_limit_1m: int = 1200,
        symbol_rules: Mapping[str, SymbolRules] | None = None,
        get_retries: int = 3,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = _asyncio_sleep,
        max_connections: int = 64,
        shared_budget: SharedWeightBudget | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self.__api_key = api_key
        self.__secret_set = bool(api_secret)
        self._signer = Signer(api_secret) if api_secret else None
        self._key_headers: dict[str, str] = {"X-MBX-APIKEY": api_key} if api_key else {}
        self._form_headers: dict[str, str] = {**self._key_headers, **_FORM}
        self.recv_window_ms = int(recv_window_ms)
        self.timeout_s = float(timeout_s)  # how long one request waits for its answer
        self.get_retries = max(1, int(get_retries))
        self.backoff_s = backoff_s
        self._clock = clock
        self._sleep = sleep
        self.offset_ms: float = 0.0  # serverTime - local time, from sync_time()
        self.unreachable_since: float | None = None  # monotonic: the first unanswered request since an answer
        self._last_unanswered = 0.0
        self.weights = WeightTracker(
            weight_limit_1m,
            headroom_pct,
            order_limit_10s=order_limit_10s,
            order_limit_1m=order_limit_1m,
            clock=self._server_clock,
            sleep=sleep,
        )
        self.shared_budget = shared_budget
        self._rules: dict[str, SymbolRules] | None = dict(symbol_rules) if symbol_rules else None
        self._rules_lock = asyncio.Lock()
        self._last_price: dict[str, Decimal] = {}
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "quantum-trader/0.1"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> BinanceFuturesClient:
        key = settings.binance_api_key.get_secret_value() if settings.binance_api_key else None
        secret = settings.binance_api_secret.get_secret_value() if settings.binance_api_secret else None
        return cls(
            settings.rest_url,
            key,
            secret,
            recv_window_ms=settings.binance_recv_window_ms,
            timeout_s=settings.binance_timeout_s,
            weight_limit_1m=settings.binance_weight_limit_1m,
            headroom_pct=settings.binance_weight_headroom_pct,
            **kwargs,
        )

    # --- lifecycle ---
    async def __aenter__(self) -> BinanceFuturesClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def __repr__(self) -> str:
        return (
            f"BinanceFuturesClient(base_url={self._base_url!r}, "
            f"api_key={'<set>' if self.__api_key else None}, "
            f"api_secret={'<set>' if self.__secret_set else None})"
        )

    __str__ = __repr__

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying keep-alive HTTP client (e.g. for an unsigned benchmark floor)."""
        return self._http

    # --- time ---
    def _server_clock(self) -> float:
        return self._clock() + self.offset_ms / 1000.0

    def timestamp_ms(self) -> int:
        return int(self._clock() * 1000.0 + self.offset_ms)

    async def server_time(self) -> int:
        data = await self._request("GET", "/fapi/v1/time")
        return int(data["serverTime"])

    async def sync_time(self) -> float:
        """Measure `serverTime - local midpoint` and use it for every signed timestamp from now on."""
        t0 = self._clock()
        server_ms = await self.server_time()
        t1 = self._clock()
        self.offset_ms = server_ms - (t0 + t1) * 500.0
        _log.debug("clock offset %.1f ms (round trip %.1f ms)", self.offset_ms, (t1 - t0) * 1000)
        return self.offset_ms

    # --- the one request path ---
    async def _request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        signed: bool = False,
        keyed: bool = False,
        orders: int = 0,
        client_order_id: str | None = None,
    ) -> Any:
        weight = request_weight(method, path, params)
        retry_reads = method == "GET"
        attempts = self.get_retries if retry_reads else 1
        resynced = False
        attempt = 0
        body_in_query = method in ("GET", "DELETE")
        while True:
            attempt += 1
            if signed:
                if self._signer is None or not self._key_headers:
                    raise OrderValidationError(
                        "this endpoint needs an API key and secret", code=-2014, endpoint=f"{method} {path}"
                    )
                query = encode_params(params) if params else ""
                query += ("&" if query else "") + (
                    f"recvWindow={self.recv_window_ms}&timestamp={self.timestamp_ms()}"
                )
                query += "&signature=" + self._signer.sign(query)
            else:
                query = encode_params(params) if params else ""
            if body_in_query:
                url, content = (f"{path}?{query}" if query else path), None
                headers = self._key_headers if (signed or keyed) else None
            else:
                url, content = path, (query.encode() if query else None)
                headers = (
                    (self._form_headers if (signed or keyed) else _FORM)
                    if query
                    else (self._key_headers if (signed or keyed) else None)
                )

            weights = self.weights
            if weights.delay_for(weight, orders) > 0:
                await weights.acquire(weight, orders)
            else:
                weights.reserve(weight, orders)
            if self.shared_budget is not None:
                try:
                    await self.shared_budget.acquire(weight)
                except RateLimitedError as err:
                    # Another worker behind this IP was told to wait: so are we.
                    weights.block(err.retry_after_s, banned=isinstance(err, IpBannedError), counted=False)
                    raise
            deadline = send_deadline() if orders else None  # reads and other writes may still go
            if deadline is not None and time.monotonic() > deadline:
                raise RetryableError(
                    "order not sent: the caller's send deadline has passed (a retry will look first)",
                    endpoint=f"{method} {path}",
                    client_order_id=client_order_id,
                )
            try:
                resp = await self._http.request(method, url, content=content, headers=headers)
            except httpx.TransportError as exc:
                self._unanswered()
                err = classify(None, None, exc, endpoint=f"{method} {path}", client_order_id=client_order_id)
            else:
                if resp.status_code >= 500:
                    self._unanswered()
                else:
                    self.unreachable_since = None  # the venue answers (even a refusal is an answer)
                self.weights.update(resp.headers)
                if self.shared_budget is not None:
                    await self._share_usage(resp.headers)
                if resp.status_code < 300:
                    return resp.json()
                err = self._error_from(resp, method, path, client_order_id)

            if isinstance(err, ClockSkewError) and not resynced:
                resynced = True
                _log.warning("%s %s: %s; resyncing the clock and retrying once", method, path, err.message)
                await self.sync_time()
                attempt -= 1
                continue
            if isinstance(err, RateLimitedError):
                banned = isinstance(err, IpBannedError)
                self.weights.block(err.retry_after_s, banned=banned)
                if self.shared_budget is not None:
                    await self.shared_budget.block(
                        err.retry_after_s, banned=banned, endpoint=f"{method} {path}"
                    )
            elif retry_reads and attempt < attempts and isinstance(err, RetryableError | UnknownOutcomeError):
                delay = self.backoff_s * (2 ** (attempt - 1))
                _log.warning(
                    "%s %s failed (%s); retry %d/%d in %.2f s",
                    method,
                    path,
                    err,
                    attempt,
                    attempts - 1,
                    delay,
                )
                await self._sleep(delay)
                continue
            self._scrub(err)
            _log.log(
                logging.DEBUG if isinstance(err, OrderNotFoundError) else logging.WARNING,
                "%s %s failed: %s",
                method,
                path,
                err,
            )
            raise err

    async def _share_usage(self, headers: httpx.Headers) -> None:
        used = headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            await self.shared_budget.observe(int(used))  # type: ignore[union-attr]

    def _error_from(
        self, resp: httpx.Response, method: str, path: str, client_order_id: str | None
    ) -> ExchangeError:
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text
        retry_after: float | None = None
        header = resp.headers.get("retry-after")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return classify(
            resp.status_code,
            body,
            None,
            retry_after_s=retry_after,
            endpoint=f"{method} {path}",
            client_order_id=client_order_id,
        )

    def _scrub(self, err: ExchangeError) -> None:
        """Belt and braces: no key material in an error's text, whatever the venue echoed."""
        key = self.__api_key
        if key and key in err.message:
            err.message = err.message.replace(key, "<api-key>")
            err.args = (err.message,)

    # --- market data and metadata ---
    async def exchange_info(self, *, refresh: bool = False) -> dict[str, SymbolRules]:
        """Symbol rules from exchangeInfo (cached after the first call)."""
        if self._rules is not None and not refresh:
            return self._rules
        async with self._rules_lock:
            if self._rules is not None and not refresh:
                return self._rules
            data = await self._request("GET", "/fapi/v1/exchangeInfo")
            rules: dict[str, SymbolRules] = {}
            for entry in data.get("symbols", []):
                try:
                    rules[entry["symbol"]] = SymbolRules.from_exchange_info(entry)
                except (KeyError, ValueError) as exc:
                    _log.warning("exchangeInfo: skipping %s (%s)", entry.get("symbol"), exc)
            self._rules = rules
            return rules

    def set_symbol_rules(self, rules: Mapping[str, SymbolRules]) -> None:
        self._rules = dict(rules)

    async def rules_for(self, symbol: str) -> SymbolRules:
        rules = self._rules if self._rules is not None else await self.exchange_info()
        try:
            return rules[symbol]
        except KeyError:
            raise OrderValidationError(
                f"Invalid symbol {symbol!r}: not in exchangeInfo", code=-1121
            ) from None

    async def klines(
        self,
        symbol: str,
        interval: str,
        *,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int | None = None,
    ) -> list[Kline]:
        rows = await self._request(
            "GET",
            "/fapi/v1/klines",
            {
                "symbol": symbol,
                "interval": interval,
                "startTime": start_time,
                "endTime": end_time,
                "limit": limit,
            },
        )
        klines = [Kline.from_row(r) for r in rows]
        if klines:
            self._last_price[symbol] = klines[-1].close
        return klines

    async def premium_index(self, symbol: str) -> PremiumIndex:
        data = await self._request("GET", "/fapi/v1/premiumIndex", {"symbol": symbol})
        index = PremiumIndex.model_validate(data)
        self._last_price[symbol] = index.mark_price
        return index

    # --- account settings ---
    async def set_leverage(self, symbol: str, leverage: int) -> Leverage:
        if not isinstance(leverage, int) or isinstance(leverage, bool) or not 1 <= leverage <= 125:
            raise OrderValidationError(f"leverage {leverage!r} must be an integer from 1 to 125", code=-4028)
        data = await self._request(
            "POST", "/fapi/v1/leverage", {"symbol": symbol, "leverage": leverage}, signed=True
        )
        return Leverage.model_validate(data)

    async def set_margin_type(self, symbol: str, margin_type: Literal["ISOLATED", "CROSSED"]) -> None:
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise OrderValidationError(f"marginType {margin_type!r} must be ISOLATED or CROSSED", code=-1102)
        try:
            await self._request(
                "POST", "/fapi/v1/marginType", {"symbol": symbol, "marginType": margin_type}, signed=True
            )
        except RejectedError as err:
            if err.code != -4046:  # "No need to change margin type." is success
                raise

    # --- orders ---
    async def new_order(
        self,
        symbol: str,
        side: Side,
        type: Literal["MARKET", "LIMIT"],
        quantity: Decimal,
        *,
        price: Decimal | None = None,
        time_in_force: str | None = None,
        reduce_only: bool = False,
        client_order_id: str | None = None,
        price_hint: Decimal | None = None,
    ) -> Order:
        """Place a MARKET or LIMIT order (`newOrderRespType=RESULT`). Never retried by the client.

        The quantity is rounded down to the step and the price to the tick; an order that still
        breaks a filter (quantity ≤ 0 or below min qty, notional below min unless reduce-only) is
        refused locally with `OrderValidationError`. A MARKET order's notional is checked against
        `price_hint`, else the last price this client saw for the symbol (fetched once if none).
        Without `client_order_id` one is generated; an `UnknownOutcomeError` carries it.
        """
        if side not in _SIDES:
            raise OrderValidationError(f"side {side!r} must be BUY or SELL", code=-1102)
        if type in _CONDITIONAL:
            raise OrderValidationError(
                f"{type} orders go to the algo endpoint: use new_algo_order()", code=-4120
            )
        if type not in _ORDER_TYPES:
            raise OrderValidationError(f"order type {type!r} must be MARKET or LIMIT", code=-1116)
        cid = (
            _check_client_id(client_order_id, "newClientOrderId")
            if client_order_id is not None
            else new_client_id()
        )
        qty_in = _decimal(quantity, "quantity")
        if qty_in <= 0:
            raise OrderValidationError(f"quantity {qty_in} must be greater than zero", code=-4003)
        rules = await self.rules_for(symbol)
        market = type == "MARKET"
        qty = rules.round_qty(qty_in, market=market)
        try:
            rules.check_qty(qty, market=market)
        except FilterViolation as v:
            raise self._refusal(
                v,
                symbol,
                f"quantity {qty_in} (rounded down to {qty} at step "
                f"{rules.market_step_size if market else rules.step_size}; min "
                f"{rules.market_min_qty if market else rules.min_qty})",
            ) from None
        params: dict[str, Any] = {"symbol": symbol, "side": side, "type": type}
        if market:
            if price is not None:
                raise OrderValidationError("a MARKET order takes no price", code=-1106)
            if not reduce_only:
                ref = (
                    _decimal(price_hint, "price_hint")
                    if price_hint is not None
                    else (self._last_price.get(symbol))
                )
                if ref is None:
                    ref = (await self.premium_index(symbol)).mark_price
                self._check_notional(rules, qty, ref, symbol, "at about")
            params["quantity"] = qty
        else:
            if price is None:
                raise OrderValidationError("a LIMIT order needs a price", code=-1102)
            px_in = _decimal(price, "price")
            px = rules.round_price(px_in)
            try:
                rules.check_price(px)
            except FilterViolation as v:
                raise self._refusal(
                    v, symbol, f"price {px_in} (rounded to {px} at tick {rules.tick_size})"
                ) from None
            if not reduce_only:
                self._check_notional(rules, qty, px, symbol, "at")
            tif = time_in_force or "GTC"
            if tif not in _TIFS:
                raise OrderValidationError(f"timeInForce {tif!r} is not one of {sorted(_TIFS)}", code=-1115)
            params["timeInForce"] = tif
            params["quantity"] = qty
            params["price"] = px
        if reduce_only:
            params["reduceOnly"] = "true"
        params["newClientOrderId"] = cid
        params["newOrderRespType"] = "RESULT"
        data = await self._request(
            "POST", "/fapi/v1/order", params, signed=True, orders=1, client_order_id=cid
        )
        order = Order.model_validate(data)
        if order.avg_price > 0:
            self._last_price[symbol] = order.avg_price
        return order

    @staticmethod
    def _refusal(v: FilterViolation, symbol: str, detail: str) -> OrderValidationError:
        return OrderValidationError(f"{symbol}: {v.message} {detail}; not sent", code=v.code)

    @staticmethod
    def _check_notional(rules: SymbolRules, qty: Decimal, price: Decimal, symbol: str, how: str) -> None:
        try:
            rules.check_notional(qty, price)
        except FilterViolation as v:
            raise OrderValidationError(
                f"{symbol}: notional {qty} x {price} = {qty * price} is below the minimum "
                f"{rules.min_notional} (unless reduce-only); not sent",
                code=v.code,
            ) from None

    async def new_algo_order(
        self,
        symbol: str,
        side: Side,
        type: Literal["STOP_MARKET", "TAKE_PROFIT_MARKET"],
        trigger_price: Decimal,
        *,
        quantity: Decimal | None = None,
        close_position: bool = False,
        reduce_only: bool = False,
        working_type: Literal["MARK_PRICE", "CONTRACT_PRICE"] = "MARK_PRICE",
        client_algo_id: str | None = None,
    ) -> AlgoOrder:
        """Place a conditional STOP_MARKET / TAKE_PROFIT_MARKET on /fapi/v1/algoOrder."""
        if side not in _SIDES:
            raise OrderValidationError(f"side {side!r} must be BUY or SELL", code=-1102)
        if type not in _ALGO_TYPES:
            raise OrderValidationError(
                f"algo order type {type!r} must be STOP_MARKET or TAKE_PROFIT_MARKET", code=-1116
            )
        if working_type not in _WORKING_TYPES:
            raise OrderValidationError(
                f"workingType {working_type!r} must be MARK_PRICE or CONTRACT_PRICE", code=-1102
            )
        cid = (
            _check_client_id(client_algo_id, "clientAlgoId")
            if client_algo_id is not None
            else new_client_id("qta")
        )
        rules = await self.rules_for(symbol)
        tp_in = _decimal(trigger_price, "triggerPrice")
        tp = rules.round_price(tp_in)
        try:
            rules.check_price(tp)
        except FilterViolation as v:
            raise self._refusal(v, symbol, f"triggerPrice {tp_in} (rounded to {tp})") from None
        params: dict[str, Any] = {"algoType": "CONDITIONAL", "symbol": symbol, "side": side, "type": type}
        if close_position:
            if quantity is not None or reduce_only:
                raise OrderValidationError(
                    "closePosition cannot be combined with quantity or reduceOnly", code=-1106
                )
        else:
            if quantity is None:
                raise OrderValidationError(
                    "an algo order needs a quantity or close_position=True", code=-1102
                )
            qty_in = _decimal(quantity, "quantity")
            if qty_in <= 0:
                raise OrderValidationError(f"quantity {qty_in} must be greater than zero", code=-4003)
            qty = rules.round_qty(qty_in, market=True)
            try:
                rules.check_qty(qty, market=True)
            except FilterViolation as v:
                raise self._refusal(v, symbol, f"quantity {qty_in} (rounded down to {qty})") from None
            if not reduce_only:
                self._check_notional(rules, qty, tp, symbol, "at")
            params["quantity"] = qty
        params["triggerPrice"] = tp
        params["workingType"] = working_type
        if close_position:
            params["closePosition"] = "true"
        if reduce_only:
            params["reduceOnly"] = "true"
        params["clientAlgoId"] = cid
        data = await self._request(
            "POST", "/fapi/v1/algoOrder", params, signed=True, orders=1, client_order_id=cid
        )
        return AlgoOrder.model_validate(data)

    @staticmethod
    def _order_ref(symbol: str, client_order_id: str | None, order_id: int | None) -> dict[str, Any]:
        if client_order_id is None and order_id is None:
            raise OrderValidationError("give client_order_id or order_id", code=-1102)
        params: dict[str, Any] = {"symbol": symbol}
        if order_id is not None:
            params["orderId"] = int(order_id)
        if client_order_id is not None:
            params["origClientOrderId"] = _check_client_id(client_order_id, "origClientOrderId")
        return params

    async def query_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        params = self._order_ref(symbol, client_order_id, order_id)
        data = await self._request(
            "GET", "/fapi/v1/order", params, signed=True, client_order_id=client_order_id
        )
        return Order.model_validate(data)

    async def find_order(self, symbol: str, client_order_id: str) -> Order | None:
        """The order with this client id, or None when the venue has none (-2013)."""
        try:
            return await self.query_order(symbol, client_order_id=client_order_id)
        except OrderNotFoundError:
            return None

    async def cancel_order(
        self, symbol: str, *, client_order_id: str | None = None, order_id: int | None = None
    ) -> Order:
        data = await self._request(
            "DELETE",
            "/fapi/v1/order",
            self._order_ref(symbol, client_order_id, order_id),
            signed=True,
            client_order_id=client_order_id,
        )
        return Order.model_validate(data)

    async def open_orders(self, symbol: str | None = None) -> list[Order]:
        rows = await self._request("GET", "/fapi/v1/openOrders", {"symbol": symbol}, signed=True)
        return [Order.model_validate(r) for r in rows]

    @staticmethod
    def _algo_ref(algo_id: int | None, client_algo_id: str | None) -> dict[str, Any]:
        if algo_id is None and client_algo_id is None:
            raise OrderValidationError("give client_algo_id or algo_id", code=-1102)
        params: dict[str, Any] = {}
        if algo_id is not None:
            params["algoId"] = int(algo_id)
        if client_algo_id is not None:
            params["clientAlgoId"] = _check_client_id(client_algo_id, "clientAlgoId")
        return params

    async def query_algo_order(
        self, *, client_algo_id: str | None = None, algo_id: int | None = None
    ) -> AlgoOrder:
        data = await self._request(
            "GET",
            "/fapi/v1/algoOrder",
            self._algo_ref(algo_id, client_algo_id),
            signed=True,
            client_order_id=client_algo_id,
        )
        return AlgoOrder.model_validate(data)

    async def find_algo_order(self, client_algo_id: str) -> AlgoOrder | None:
        """The algo order with this client id, or None when the venue has none."""
        try:
            return await self.query_algo_order(client_algo_id=client_algo_id)
        except OrderNotFoundError:
            return None

    async def cancel_algo_order(
        self, *, client_algo_id: str | None = None, algo_id: int | None = None
    ) -> AlgoCancel:
        data = await self._request(
            "DELETE",
            "/fapi/v1/algoOrder",
            self._algo_ref(algo_id, client_algo_id),
            signed=True,
            client_order_id=client_algo_id,
        )
        return AlgoCancel.model_validate(data)

    async def open_algo_orders(self, symbol: str | None = None) -> list[AlgoOrder]:
        rows = await self._request("GET", "/fapi/v1/openAlgoOrders", {"symbol": symbol}, signed=True)
        return [AlgoOrder.model_validate(r) for r in rows]

    # --- account ---
    async def position_risk(self, symbol: str | None = None) -> list[PositionRisk]:
        rows = await self._request("GET", "/fapi/v3/positionRisk", {"symbol": symbol}, signed=True)
        return [PositionRisk.model_validate(r) for r in rows]

    async def account(self) -> Account:
        return Account.model_validate(await self._request("GET", "/fapi/v3/account", signed=True))

    async def user_trades(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        from_id: int | None = None,
        limit: int | None = None,
    ) -> list[Trade]:
        rows = await self._request(
            "GET",
            "/fapi/v1/userTrades",
            {
                "symbol": symbol,
                "orderId": order_id,
                "startTime": start_time,
                "endTime": end_time,
                "fromId": from_id,
                "limit": limit,
            },
            signed=True,
        )
        return [Trade.model_validate(r) for r in rows]

    async def income(
        self,
        *,
        symbol: str | None = None,
        income_type: str | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int | None = None,
    ) -> list[Income]:
        rows = await self._request(
            "GET",
            "/fapi/v1/income",
            {
                "symbol": symbol,
                "incomeType": income_type,
                "startTime": start_time,
                "endTime": end_time,
                "limit": limit,
            },
            signed=True,
        )
        return [Income.model_validate(r) for r in rows]

    # --- user data stream ---
    async def new_listen_key(self) -> str:
        data = await self._request("POST", "/fapi/v1/listenKey", keyed=True)
        return str(data["listenKey"])

    async def keepalive_listen_key(self) -> None:
        """Extend the listenKey by 60 min. A -1125 RejectedError (unknown key): call new_listen_key()."""
        await self._request("PUT", "/fapi/v1/listenKey", keyed=True)

    async def close_listen_key(self) -> None:
        await self._request("DELETE", "/fapi/v1/listenKey", keyed=True)

    # --- figures ---
    def _unanswered(self) -> None:
        now = time.monotonic()
        if self.unreachable_since is None:
            self.unreachable_since = now
        self._last_unanswered = now

    def unreachable_s(self) -> float:
        """How long every request has failed to get an answer (no connection, a timeout, or a 5xx), while
        requests still fail (one in the last `UNANSWERED_RECENT_S`): 0 once the venue answers, or when
        nothing was asked since. The risk layer's `venue_outage` input (workers/exchange_worker.py)."""
        if self.unreachable_since is None or time.monotonic() - self._last_unanswered > UNANSWERED_RECENT_S:
            return 0.0
        return time.monotonic() - self.unreachable_since

    def rate_limits(self) -> dict[str, float | int | bool]:
        """Current request-weight / order-count figures (for metrics); the shared budget's too, if any."""
        snap = self.weights.snapshot()
        if self.shared_budget is not None:
            snap.update(self.shared_budget.snapshot())
            snap["pauses"] = int(snap["pauses"]) + int(snap["shared_pauses"])
        return snap

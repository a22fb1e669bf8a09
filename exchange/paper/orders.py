"""Orders (MARKET and LIMIT): a new order is validated in full before anything changes, then filled
at once (taker), rested on the book or expired (IOC / FOK); query, cancel and the order lists."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.book import Order
from exchange.paper.errors import ApiError
from exchange.paper.fills import FillsMixin
from exchange.paper.params import (
    CONDITIONAL_TYPES,
    TIFS,
    _bool,
    _dec,
    _filter_error,
    _int,
    _invalid,
    _limit,
    _req,
)
from exchange.paper.shapes import ack_shape, order_shape
from exchange.paper.split_fills import plan_split
from exchange.paper.state import ZERO
from trading.instruments import FilterViolation, SymbolRules

GTX_MSG = (
    "Due to the order could not be executed as maker, the Post Only order will be rejected. "
    "The order will not be recorded in the order history"
)


class OrdersMixin(FillsMixin):
    """The /fapi/v1/order endpoints and the order lists."""

    def new_order(self, p: dict[str, str], *, pieces: int = 1, interval_ms: int = 0) -> dict[str, Any]:
        """POST /fapi/v1/order. `pieces` > 1 (the `partial_fills` fault): a MARKET order fills in that
        many parts, the first now and one more every `interval_ms` from `advance()`."""
        now = self.wall_ms()
        sym = self._symbol(p)
        assert sym is not None
        rules = self.rules[sym]
        side = self._side(p)
        otype = p.get("type") or ""
        if otype in CONDITIONAL_TYPES:
            raise ApiError(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API "
                "endpoints instead.",
            )
        if otype not in ("MARKET", "LIMIT"):
            raise ApiError(-1116, "Invalid orderType.")
        self._position_side(p)
        is_limit = otype == "LIMIT"
        tif = "GTC"
        price = ZERO
        if is_limit:
            tif = _req(p, "timeInForce")
            if tif not in TIFS:
                raise ApiError(-1115, "Invalid timeInForce.")
        qty = _dec(p, "quantity")
        assert qty is not None
        if is_limit:
            price = _dec(p, "price")  # type: ignore[assignment]
        reduce_only = _bool(p, "reduceOnly")
        if _bool(p, "closePosition"):
            raise ApiError(-1106, "Parameter 'closePosition' sent when not required.")
        resp = p.get("newOrderRespType") or "ACK"
        if resp not in ("ACK", "RESULT"):
            raise _invalid("newOrderRespType")
        cid = self._client_id(p, "newClientOrderId")
        try:
            rules.check_qty(qty, market=not is_limit)
            if is_limit:
                rules.check_price(price)
        except FilterViolation as e:
            raise _filter_error(e) from None
        mkt = self.last[sym]
        if is_limit:
            self._check_percent_price(rules, side, price, mkt)
        try:
            rules.check_notional(qty, price if is_limit else mkt, reduce_only=reduce_only)
        except FilterViolation as e:
            raise _filter_error(e) from None
        if cid is not None and self._open_client_id(sym, cid):
            raise ApiError(-4116, "clientOrderId is duplicated.")
        marketable = not is_limit or (price >= mkt if side == "BUY" else price <= mkt)
        if is_limit and tif == "GTX" and marketable:
            raise ApiError(-5022, GTX_MSG)
        fill_qty = qty
        if reduce_only:
            fill_qty = self._reduce_cap(sym, side, qty)
            if not fill_qty:
                raise ApiError(-2022, "ReduceOnly Order is rejected.")
        if marketable:
            fill_price = self._taker_price(sym, side)
            if is_limit:
                fill_price = min(price, fill_price) if side == "BUY" else max(price, fill_price)
            if not reduce_only:
                self._check_margin(sym, side, qty, fill_price)
        elif tif in ("GTC", "GTX") and not reduce_only:
            self._check_margin(sym, side, qty, price)
        # ---- validated: mutate
        o = self._new_order_record(sym, cid, side, otype, tif, qty, price, reduce_only, now)
        ack = ack_shape(o, rules) if resp == "ACK" else None
        if marketable:
            split = None
            if pieces > 1 and not is_limit:
                split = plan_split(fill_qty, pieces, rules.market_step_size, now, interval_ms)
            self._fill(o, split.piece if split else fill_qty, fill_price, False, now)
            if split is not None:  # the rest fills in parts: open (PARTIALLY_FILLED) meanwhile
                self._splits[o.order_id] = split
                self.book[sym][o.order_id] = o
            elif o.is_open:  # a capped reduce-only order: the rest cannot execute
                self._end_order(o, "EXPIRED", now)
        elif tif in ("IOC", "FOK"):
            self._end_order(o, "EXPIRED", now)
        else:
            self.book[sym][o.order_id] = o
        self._commit()
        return ack if ack is not None else order_shape(o, rules, kind="new")

    def _check_percent_price(self, rules: SymbolRules, side: str, price: Decimal, mark: Decimal) -> None:
        if side == "BUY":
            cap = rules.round_price(mark * Decimal("1.05"))
            if price > cap:
                raise ApiError(-4016, f"Limit price can't be higher than {cap}.")
        else:
            floor = rules.round_price(mark * Decimal("0.95"))
            if price < floor:
                raise ApiError(-4024, f"Limit price can't be lower than {floor}.")

    def _open_client_id(self, sym: str, cid: str) -> bool:
        oid = self.client_index.get((sym, cid))
        if oid is not None and self.orders[oid].is_open:
            return True
        return any(o.client_id == cid for o in self.book[sym].values())

    def _find_order(self, p: dict[str, str], code: int, msg: str) -> Order:
        sym = self._symbol(p)
        oid = _int(p, "orderId")
        cid = p.get("origClientOrderId") or None
        if oid is None and cid is None:
            raise ApiError(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        o = self.orders.get(oid) if oid is not None else None
        if oid is None and cid is not None:
            found = self.client_index.get((sym, cid))  # type: ignore[arg-type]
            o = self.orders.get(found) if found is not None else None
        if o is None or o.symbol != sym or (cid is not None and o.client_id != cid):
            raise ApiError(code, msg)
        return o

    def query_order(self, p: dict[str, str]) -> dict[str, Any]:
        o = self._find_order(p, -2013, "Order does not exist.")
        return order_shape(o, self.rules[o.symbol])

    def cancel_order(self, p: dict[str, str]) -> dict[str, Any]:
        o = self._find_order(p, -2011, "Unknown order sent.")
        if not o.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        self._end_order(o, "CANCELED", self.wall_ms())
        self._commit()
        return order_shape(o, self.rules[o.symbol], kind="cancel")

    def open_orders(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        books = [self.book[sym]] if sym else list(self.book.values())
        out = [o for b in books for o in b.values()]
        out.sort(key=lambda o: o.order_id)
        return [order_shape(o, self.rules[o.symbol]) for o in out]

    def all_orders(self, p: dict[str, str]) -> list:
        sym = self._symbol(p)
        from_id = _int(p, "orderId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = _limit(p, 500, 1000)
        rows = [
            o
            for o in self.orders.values()
            if o.symbol == sym
            and (from_id is None or o.order_id >= from_id)
            and (start is None or o.time >= start)
            and (end is None or o.time <= end)
        ]
        rows = rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]
        return [order_shape(o, self.rules[o.symbol]) for o in rows]

    def admin_orders(self, symbol: str | None = None) -> list[dict]:
        return [
            order_shape(o, self.rules[o.symbol])
            for o in self.orders.values()
            if symbol is None or o.symbol == symbol
        ]

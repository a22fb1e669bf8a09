"""Algo (conditional) orders: STOP, TAKE_PROFIT, their MARKET forms and TRAILING_STOP_MARKET, held
until the price triggers them (`_trigger`, called by the clock), then placed as a MARKET or LIMIT
order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.book import AlgoOrder
from exchange.paper.errors import ApiError
from exchange.paper.fills import FillsMixin
from exchange.paper.params import CONDITIONAL_TYPES, TIFS, _bool, _dec, _filter_error, _int, _invalid, _req
from exchange.paper.shapes import algo_shape, algo_update
from exchange.paper.state import ZERO, _b62
from trading.instruments import FilterViolation


class AlgoOrdersMixin(FillsMixin):
    """The /fapi/v1/algoOrder endpoints and the trigger that places an algo order's order."""

    def new_algo_order(self, p: dict[str, str]) -> dict[str, Any]:
        now = self.wall_ms()
        algo_type = _req(p, "algoType")
        if algo_type != "CONDITIONAL":
            raise _invalid("algoType")
        sym = self._symbol(p)
        assert sym is not None
        rules = self.rules[sym]
        side = self._side(p)
        otype = p.get("type") or ""
        if otype not in CONDITIONAL_TYPES:
            raise ApiError(-1116, "Invalid orderType.")
        self._position_side(p)
        close_position = _bool(p, "closePosition")
        reduce_only = _bool(p, "reduceOnly")
        working = p.get("workingType") or "CONTRACT_PRICE"
        if working not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise _invalid("workingType")
        price_protect = _bool(p, "priceProtect")
        tif = p.get("timeInForce") or "GTC"
        if tif not in TIFS:
            raise ApiError(-1115, "Invalid timeInForce.")
        trailing = otype == "TRAILING_STOP_MARKET"
        callback = activate = None
        trigger = ZERO
        if trailing:
            callback = _dec(p, "callbackRate")
            assert callback is not None
            if not Decimal("0.1") <= callback <= Decimal("10"):
                raise ApiError(-2007, "Invalid callBack rate.")
            activate = _dec(p, "activatePrice", required=False)
        else:
            trigger = _dec(p, "triggerPrice")  # type: ignore[assignment]
        price = ZERO
        if otype in ("STOP", "TAKE_PROFIT"):
            price = _dec(p, "price")  # type: ignore[assignment]
        qty: Decimal | None = None
        if close_position:
            if otype not in ("STOP_MARKET", "TAKE_PROFIT_MARKET"):
                raise _invalid("closePosition")
            if p.get("quantity"):
                raise ApiError(-1106, "Parameter 'quantity' sent when not required.")
            if p.get("reduceOnly"):
                raise ApiError(-1106, "Parameter 'reduceOnly' sent when not required.")
        else:
            qty = _dec(p, "quantity")
        cid = self._client_id(p, "clientAlgoId")
        try:
            if qty is not None:
                rules.check_qty(qty, market=price == 0)
            for px in (trigger, price, activate):
                if px:
                    rules.check_price(px)
        except FilterViolation as e:
            raise _filter_error(e) from None
        if qty is not None:
            ref_px = price or trigger or activate or self.last[sym]
            try:
                rules.check_notional(qty, ref_px, reduce_only=reduce_only)
            except FilterViolation as e:
                raise _filter_error(e) from None
        if cid is not None:
            existing = self.algo_client_index.get(cid)
            if existing is not None and self.algos[existing].is_open:
                raise ApiError(-4116, "clientOrderId is duplicated.")
        amt = abs(self.positions[sym].amt)
        if (reduce_only or close_position) and not self._reduce_cap(sym, side, qty or amt):
            raise ApiError(-2022, "ReduceOnly Order is rejected.")
        a = AlgoOrder(
            algo_id=0,
            symbol=sym,
            client_algo_id=cid or "",
            side=side,
            order_type=otype,
            tif=tif,
            qty=qty,
            price=price,
            trigger_price=trigger,
            working_type=working,
            close_position=close_position,
            reduce_only=reduce_only,
            price_protect=price_protect,
            create_time=now,
            update_time=now,
            activate_price=activate,
            callback_rate=callback,
        )
        if not trailing and a.should_trigger(self.last[sym]):
            raise ApiError(-2021, "Order would immediately trigger.")
        # ---- validated: mutate
        a.algo_id = self._next("algo")
        if cid is None:
            a.client_algo_id = _b62(f"{self.config.seed}:a:{a.algo_id}", 22)
        self.algos[a.algo_id] = a
        self.algo_client_index[a.client_algo_id] = a.algo_id
        self.open_algos[sym][a.algo_id] = a
        self._dirty["algos"][a.algo_id] = a
        if self._listeners:
            self._user(algo_update(a, rules, now))
        if trailing and a.should_trigger(self.last[sym]):
            self._trigger(a, now)
        self._commit()
        return algo_shape(a, rules)

    def _find_algo(self, p: dict[str, str], code: int, msg: str) -> AlgoOrder:
        aid = _int(p, "algoId")
        cid = p.get("clientAlgoId") or None
        if aid is None and cid is None:
            raise ApiError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!")
        sym = self._symbol(p, required=False)
        if aid is None:
            aid = self.algo_client_index.get(cid)  # type: ignore[arg-type]
        a = self.algos.get(aid) if aid is not None else None
        if a is None or (sym is not None and a.symbol != sym):
            raise ApiError(code, msg)
        if cid is not None and a.client_algo_id != cid:
            raise ApiError(code, msg)
        return a

    def query_algo_order(self, p: dict[str, str]) -> dict[str, Any]:
        a = self._find_algo(p, -2013, "Order does not exist.")
        return algo_shape(a, self.rules[a.symbol], detail=True)

    def cancel_algo_order(self, p: dict[str, str]) -> dict[str, Any]:
        a = self._find_algo(p, -2011, "Unknown order sent.")
        if not a.is_open:
            raise ApiError(-2011, "Unknown order sent.")
        now = self.wall_ms()
        a.status = "CANCELED"
        a.update_time = now
        del self.open_algos[a.symbol][a.algo_id]
        self._dirty["algos"][a.algo_id] = a
        if self._listeners:
            self._user(algo_update(a, self.rules[a.symbol], now))
        self._commit()
        return {"algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"}

    def open_algo_orders(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        books = [self.open_algos[sym]] if sym else list(self.open_algos.values())
        out = sorted((a for b in books for a in b.values()), key=lambda a: a.algo_id)
        return [algo_shape(a, self.rules[a.symbol]) for a in out]

    def admin_algo_orders(self, symbol: str | None = None) -> list[dict]:
        return [
            algo_shape(a, self.rules[a.symbol], detail=True)
            for a in self.algos.values()
            if symbol is None or a.symbol == symbol
        ]

    def _trigger(self, a: AlgoOrder, now: int) -> None:
        """Fire an algo order: TRIGGERED, place its MARKET/LIMIT order, then FINISHED (or REJECTED)."""
        sym = a.symbol
        rules = self.rules[sym]
        del self.open_algos[sym][a.algo_id]
        a.trigger_time = now
        a.update_time = now
        a.status = "TRIGGERED"
        self._dirty["algos"][a.algo_id] = a
        reduce = a.reduce_only or a.close_position
        qty = abs(self.positions[sym].amt) if a.close_position else a.qty
        assert qty is not None
        if reduce:
            qty = self._reduce_cap(sym, a.side, qty)
        reject = ""
        taker = self._taker_price(sym, a.side)
        fill_price = taker if a.child_type == "MARKET" else a.price
        if not qty:
            reject = "ReduceOnly Order is rejected."
        elif not reduce:
            try:
                self._check_margin(sym, a.side, qty, fill_price)
            except ApiError as e:
                reject = e.msg
        if reject:
            a.status = "REJECTED"
            a.reject_reason = reject
            if self._listeners:
                self._user(algo_update(a, rules, now))
            return
        if self._listeners:
            self._user(algo_update(a, rules, now))
        otype = a.child_type
        tif = a.tif if otype == "LIMIT" else "GTC"
        o = self._new_order_record(
            sym,
            a.client_algo_id,
            a.side,
            otype,
            tif,
            qty,
            a.price if otype == "LIMIT" else ZERO,
            reduce,
            now,
            orig_type=a.order_type,
            stop_price=a.trigger_price,
            working_type=a.working_type,
            close_position=a.close_position,
            price_protect=a.price_protect,
        )
        a.actual_order_id = o.order_id
        mkt = self.last[sym]
        if otype == "MARKET" or (a.price >= mkt if a.side == "BUY" else a.price <= mkt):
            px = (
                taker
                if otype == "MARKET"
                else (min(a.price, taker) if a.side == "BUY" else max(a.price, taker))
            )
            self._fill(o, qty, px, False, now)
        elif tif in ("IOC", "FOK"):
            self._end_order(o, "EXPIRED", now)
        else:
            self.book[sym][o.order_id] = o
        a.actual_price = o.avg_price
        a.actual_qty = o.executed
        a.status = "FINISHED"
        a.update_time = now
        if self._listeners:
            self._user(algo_update(a, rules, now))

"""Binance's JSON shapes for the paper exchange: decimals as strings, ids and times as ints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.book import AlgoOrder, Order
from trading.instruments import SymbolRules

E8 = Decimal("0.00000001")
ZERO = Decimal(0)


def money(d: Decimal) -> str:
    """A money amount with Binance's 8 decimals, e.g. "9974.00000000"."""
    return format(d.quantize(E8), "f")


def num(d: Decimal) -> str:
    """A decimal without exponent and without trailing zeros beyond 8 places ("65000", "0.065")."""
    if not d:
        return "0"
    return format(d.quantize(E8).normalize(), "f")


def qty_str(rules: SymbolRules, q: Decimal) -> str:
    return str(q.quantize(rules.step_size))


def price_str(rules: SymbolRules, p: Decimal) -> str:
    return str(p.quantize(rules.tick_size)) if p else "0"


def order_shape(o: Order, rules: SymbolRules, *, kind: str = "get") -> dict[str, Any]:
    """`kind`: "get" (GET /order, openOrders, allOrders: has `time`), "new" and "cancel" (have `cumQty`)."""
    d: dict[str, Any] = {
        "avgPrice": num(o.avg_price) if o.executed else "0.00",
        "clientOrderId": o.client_id,
        "cumQuote": num(o.cum_quote),
        "executedQty": qty_str(rules, o.executed),
        "orderId": o.order_id,
        "origQty": qty_str(rules, o.qty),
        "origType": o.orig_type,
        "price": price_str(rules, o.price),
        "reduceOnly": o.reduce_only,
        "side": o.side,
        "positionSide": "BOTH",
        "status": o.status,
        "stopPrice": price_str(rules, o.stop_price),
        "closePosition": o.close_position,
        "symbol": o.symbol,
        "timeInForce": o.tif,
        "type": o.type,
        "updateTime": o.update_time,
        "workingType": o.working_type,
        "priceProtect": o.price_protect,
        "priceMatch": "NONE",
        "selfTradePreventionMode": o.stp,
        "goodTillDate": o.gtd,
    }
    if kind == "get":
        d["time"] = o.time
    else:
        d["cumQty"] = qty_str(rules, o.executed)
    return d


def ack_shape(o: Order, rules: SymbolRules) -> dict[str, Any]:
    """The ACK answer of POST /order: the order as accepted, before any fill."""
    d = order_shape(o, rules, kind="new")
    d.update(
        status="NEW",
        executedQty=qty_str(rules, ZERO),
        cumQty=qty_str(rules, ZERO),
        cumQuote="0",
        avgPrice="0.00",
        updateTime=o.time,
    )
    return d


def algo_shape(a: AlgoOrder, rules: SymbolRules, *, detail: bool = False) -> dict[str, Any]:
    d: dict[str, Any] = {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side,
        "positionSide": "BOTH",
        "timeInForce": a.tif,
        "quantity": qty_str(rules, a.qty) if a.qty is not None else "0",
        "algoStatus": a.status,
        "triggerPrice": price_str(rules, a.trigger_price),
        "price": price_str(rules, a.price),
        "icebergQuantity": None,
        "selfTradePreventionMode": a.stp,
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "activatePrice": price_str(rules, a.activate_price) if a.activate_price is not None else "",
        "callbackRate": num(a.callback_rate) if a.callback_rate is not None else "",
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": a.gtd,
    }
    if detail:
        d.update(
            actualOrderId=str(a.actual_order_id) if a.actual_order_id is not None else "",
            actualPrice=num(a.actual_price),
            tpTriggerPrice="0",
            tpPrice="0",
            slTriggerPrice="0",
            slPrice="0",
            tpOrderType="",
        )
    return d


def algo_update(a: AlgoOrder, rules: SymbolRules, now: int) -> dict[str, Any]:
    return {
        "e": "ALGO_UPDATE",
        "T": now,
        "E": now,
        "o": {
            "caid": a.client_algo_id,
            "aid": a.algo_id,
            "at": "CONDITIONAL",
            "o": a.order_type,
            "s": a.symbol,
            "S": a.side,
            "ps": "BOTH",
            "f": a.tif,
            "q": qty_str(rules, a.qty) if a.qty is not None else "0",
            "X": a.status,
            "ai": str(a.actual_order_id) if a.actual_order_id is not None else "",
            "ap": num(a.actual_price),
            "aq": qty_str(rules, a.actual_qty),
            "act": a.child_type if a.actual_order_id is not None else "",
            "tp": price_str(rules, a.trigger_price),
            "p": price_str(rules, a.price),
            "V": a.stp,
            "wt": a.working_type,
            "pm": "NONE",
            "cp": a.close_position,
            "pP": a.price_protect,
            "R": a.reduce_only,
            "tt": a.trigger_time,
            "gtd": a.gtd,
            "rm": a.reject_reason,
        },
    }


def order_trade_update(
    o: Order,
    rules: SymbolRules,
    x: str,
    now: int,
    *,
    last_qty: Decimal = ZERO,
    last_price: Decimal = ZERO,
    fee: Decimal | None = None,
    trade_id: int = 0,
    maker: bool = False,
    realized: Decimal = ZERO,
) -> dict[str, Any]:
    od: dict[str, Any] = {
        "s": o.symbol,
        "c": o.client_id,
        "S": o.side,
        "o": o.type,
        "f": o.tif,
        "q": qty_str(rules, o.qty),
        "p": price_str(rules, o.price),
        "ap": num(o.avg_price),
        "sp": price_str(rules, o.stop_price),
        "x": x,
        "X": o.status,
        "i": o.order_id,
        "l": qty_str(rules, last_qty),
        "z": qty_str(rules, o.executed),
        "L": price_str(rules, last_price),
        "T": now,
        "t": trade_id,
        "b": "0",
        "a": "0",
        "m": maker,
        "R": o.reduce_only,
        "wt": o.working_type,
        "ot": o.orig_type,
        "ps": "BOTH",
        "cp": o.close_position,
        "rp": money(realized),
        "pP": o.price_protect,
        "si": 0,
        "ss": 0,
        "V": o.stp,
        "pm": "NONE",
        "gtd": o.gtd,
    }
    if fee is not None:
        od["N"] = "USDT"
        od["n"] = money(fee)
    if x == "EXPIRED":
        od["er"] = "0"
    return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": od}

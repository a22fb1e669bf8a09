"""Timed faults across the process boundary: outage windows, late execution, a ban that starts at a
chosen request, and MARKET orders filled in parts over time.

Each fault is shown to happen, to end by itself, and to refuse a bad setting with a 400 naming it.
Time is only ever bounded far above what is measured (a window must be over within 3× its length).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from exchange.client import BinanceFuturesClient
from exchange.errors import UnknownOutcomeError
from tests.conftest import PaperExchange, start_paper_exchange
from tests.exchange.paper.test_server_support import Api

SYMBOL = "ETHUSDT"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PaperExchange]:
    ex = start_paper_exchange(Path(tmp_path_factory.mktemp("timed-faults")))
    try:
        ex.set_price(SYMBOL, "3000")
        yield ex
    finally:
        ex.process.stop()


@pytest.fixture
def api(exchange: PaperExchange) -> Iterator[Api]:
    exchange.clear_faults()
    with Api(exchange) as a:
        _flatten(a)
        yield a
    exchange.clear_faults()


# How long a poll waits for what must happen (a window's end, a late execution): a hang guard, never a
# latency bound (a healthy venue gets there in a fraction of it; a loaded machine may take several times
# the window). Only the venue's behaviour is asserted, not how fast this machine shows it.
GUARD_S = 30.0


def _until(pred: Callable[[], bool], limit_s: float = GUARD_S) -> bool:
    """Poll `pred` until it holds; False when `limit_s` (a hang guard) passed."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _order(cid: str, side: str = "BUY", qty: str = "0.010", **extra: str) -> dict[str, str]:
    return {
        "symbol": SYMBOL,
        "side": side,
        "type": "MARKET",
        "quantity": qty,
        "newClientOrderId": cid,
        "newOrderRespType": "RESULT",
        **extra,
    }


def _lookup(api: Api, cid: str) -> httpx.Response:
    return api.signed("GET", "/fapi/v1/order", {"symbol": SYMBOL, "origClientOrderId": cid})


def _missing(api: Api, cid: str) -> bool:
    resp = _lookup(api, cid)
    return resp.status_code == 400 and resp.json()["code"] == -2013


def _flatten(api: Api) -> None:
    for o in api.ok("GET", "/fapi/v1/openOrders", {"symbol": SYMBOL}):
        api.signed("DELETE", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": o["orderId"]})
    amt = Decimal(str(api.position_amt(SYMBOL))).quantize(Decimal("0.001"))
    if amt:
        side = "SELL" if amt > 0 else "BUY"
        api.ok(
            "POST",
            "/fapi/v1/order",
            _order(f"flat-{time.monotonic_ns()}", side, str(abs(amt)), reduceOnly="true"),
        )


def _bad(exchange: PaperExchange, body: Any) -> httpx.Response:
    return httpx.post(
        f"{exchange.base_url}/admin/faults", json=body, headers={"X-MBX-APIKEY": exchange.api_key}, timeout=10
    )


def _faults_of(exchange: PaperExchange, kind: str) -> float:
    return exchange.metric("paper_exchange_faults_injected_total", kind=kind)


# ---- outage windows ------------------------------------------------------------------------------


def test_outage_5xx_covers_its_paths_and_ends_by_itself(api: Api, exchange: PaperExchange) -> None:
    before = _faults_of(exchange, "outage_5xx")
    exchange.set_faults(outage={"paths": ["/fapi/v1/premiumIndex", "/fapi/v1/order"], "seconds": 1.5})
    shown = exchange.admin("GET", "faults")
    assert shown["active"] is True
    assert [(w["paths"], w["mode"], w["seconds"]) for w in shown["outage"]] == [
        (["/fapi/v1/premiumIndex", "/fapi/v1/order"], "5xx", 1.5)
    ]
    resp = api.public("/fapi/v1/premiumIndex", symbol=SYMBOL)
    assert resp.status_code == 503 and resp.json() == {"code": -1001, "msg": "Service Unavailable."}
    assert api.public("/fapi/v1/time").status_code == 200  # not covered
    refused = api.signed("POST", "/fapi/v1/order", _order("outage-5xx"))
    assert refused.status_code == 503
    assert _faults_of(exchange, "outage_5xx") - before == 2
    assert _until(lambda: api.public("/fapi/v1/premiumIndex", symbol=SYMBOL).status_code == 200)
    assert exchange.admin("GET", "faults")["outage"] == []
    assert _missing(api, "outage-5xx")  # (GET /fapi/v1/order was covered too) it never executed
    assert api.ok("POST", "/fapi/v1/order", _order("after-outage"))["status"] == "FILLED"


def test_outage_refuse_drops_the_connection_without_an_answer(api: Api, exchange: PaperExchange) -> None:
    before = _faults_of(exchange, "outage_refuse")
    exchange.set_faults(outage={"paths": "/fapi/v1/ticker/price", "mode": "refuse", "seconds": 1.5})
    with pytest.raises(httpx.TransportError):
        api.public("/fapi/v1/ticker/price", symbol=SYMBOL)
    assert api.public("/fapi/v1/ticker/bookTicker", symbol=SYMBOL).status_code == 200
    assert _faults_of(exchange, "outage_refuse") - before == 1

    def served() -> bool:
        try:
            return api.public("/fapi/v1/ticker/price", symbol=SYMBOL).status_code == 200
        except httpx.TransportError:
            return False

    assert _until(served)


def test_outage_hang_holds_then_drops_without_executing(api: Api, exchange: PaperExchange) -> None:
    exchange.set_faults(outage={"paths": ["/fapi/v1/order"], "mode": "hang", "seconds": 2})
    with pytest.raises(httpx.TimeoutException):  # the client gives up first
        api.signed("POST", "/fapi/v1/order", _order("hang-short"), timeout=0.3)
    # A patient client is held until the window ends, then loses the connection.
    with pytest.raises(httpx.TransportError) as err:
        api.signed("POST", "/fapi/v1/order", _order("hang-long"), timeout=20)
    assert not isinstance(err.value, httpx.TimeoutException)  # dropped by the venue, not the client's 20 s
    assert _faults_of(exchange, "outage_hang") >= 2
    assert exchange.admin("GET", "faults")["outage"] == []
    assert _missing(api, "hang-short") and _missing(api, "hang-long")  # neither was executed
    assert api.position_amt(SYMBOL) == 0
    assert api.ok("POST", "/fapi/v1/order", _order("after-hang"))["status"] == "FILLED"


def test_several_windows_at_once_each_ends_by_itself(api: Api, exchange: PaperExchange) -> None:
    exchange.set_faults(outage={"paths": ["/fapi/v1/premiumIndex"], "seconds": 1})
    exchange.set_faults(outage=[{"paths": ["/fapi/v1/ticker/price"], "mode": "refuse", "seconds": 3}])
    assert len(exchange.admin("GET", "faults")["outage"]) == 2
    assert api.public("/fapi/v1/premiumIndex", symbol=SYMBOL).status_code == 503
    with pytest.raises(httpx.TransportError):
        api.public("/fapi/v1/ticker/price", symbol=SYMBOL)
    assert _until(lambda: api.public("/fapi/v1/premiumIndex", symbol=SYMBOL).status_code == 200)
    windows = exchange.admin("GET", "faults")["outage"]
    assert [w["mode"] for w in windows] == ["refuse"] or windows == []  # the longer one may be over too
    assert _until(lambda: exchange.admin("GET", "faults")["outage"] == [])


# ---- late execution ------------------------------------------------------------------------------


def test_late_execution_503_order_appears_later(api: Api, exchange: PaperExchange) -> None:
    before = _faults_of(exchange, "late_execution")
    exchange.set_faults(late_execution={"delay_s": 2})
    resp = api.signed("POST", "/fapi/v1/order", _order("late-503"))
    assert resp.status_code == 503
    assert resp.json() == {
        "code": -1000,
        "msg": "Unknown error, please check your request or try again later.",
    }
    assert _missing(api, "late-503")  # look-up-before-resend finds nothing
    shown = exchange.admin("GET", "faults")
    assert shown["late_execution"] is None  # count 1: used up
    assert [(o["symbol"], o["clientOrderId"]) for o in shown["late_pending"]] == [(SYMBOL, "late-503")]
    assert api.position_amt(SYMBOL) == 0
    assert _faults_of(exchange, "late_execution") - before == 1
    assert _until(lambda: not _missing(api, "late-503"))
    found = _lookup(api, "late-503").json()
    assert found["status"] == "FILLED" and found["type"] == "MARKET"
    assert api.position_amt(SYMBOL) == pytest.approx(0.01)
    assert exchange.admin("GET", "faults")["late_pending"] == []
    assert api.ok("POST", "/fapi/v1/order", _order("late-next"))["status"] == "FILLED"  # back to normal


def test_late_execution_timeout_fills_at_the_price_of_its_time(api: Api, exchange: PaperExchange) -> None:
    exchange.set_faults(late_execution={"delay_s": 2, "answer": "timeout", "hang_s": 5})
    with pytest.raises(httpx.TimeoutException):
        api.signed("POST", "/fapi/v1/order", _order("late-timeout"), timeout=0.3)
    assert _missing(api, "late-timeout")
    exchange.set_price(SYMBOL, "3100")  # before it executes: a MARKET order takes the price of its time
    try:
        assert _until(lambda: not _missing(api, "late-timeout"))
        found = _lookup(api, "late-timeout").json()
        assert found["status"] == "FILLED" and Decimal(found["avgPrice"]) == Decimal("3100")
    finally:
        exchange.set_price(SYMBOL, "3000")


def test_resending_the_client_id_before_the_late_copy_makes_a_double_order(
    api: Api, exchange: PaperExchange
) -> None:
    exchange.set_faults(late_execution={"delay_s": 1.5})
    assert api.signed("POST", "/fapi/v1/order", _order("late-twice")).status_code == 503
    assert _missing(api, "late-twice")
    # A client that trusts its look-up sends the order again: it fills at once...
    assert api.ok("POST", "/fapi/v1/order", _order("late-twice"))["status"] == "FILLED"
    # ...and the late copy still executes: its twin is filled, not open, so the id is not refused.
    assert _until(lambda: exchange.admin("GET", "faults")["late_pending"] == [])
    twins = [
        o
        for o in api.ok("GET", "/fapi/v1/allOrders", {"symbol": SYMBOL})
        if o["clientOrderId"] == "late-twice"
    ]
    assert [o["status"] for o in twins] == ["FILLED", "FILLED"]
    assert api.position_amt(SYMBOL) == pytest.approx(0.02)


def test_late_copy_of_an_open_client_id_is_refused_as_a_duplicate(api: Api, exchange: PaperExchange) -> None:
    rejected = exchange.metric("paper_exchange_rejections_total", code="-4116")
    resting = {
        "symbol": SYMBOL,
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.010",
        "price": "2900",
        "newClientOrderId": "late-open",
    }
    exchange.set_faults(late_execution={"delay_s": 1.5})
    assert api.signed("POST", "/fapi/v1/order", resting).status_code == 503
    assert api.ok("POST", "/fapi/v1/order", resting)["status"] == "NEW"  # resent; rests in the book
    assert _until(lambda: exchange.admin("GET", "faults")["late_pending"] == [])
    same = [
        o
        for o in api.ok("GET", "/fapi/v1/allOrders", {"symbol": SYMBOL})
        if o["clientOrderId"] == "late-open"
    ]
    assert len(same) == 1 and same[0]["status"] == "NEW"
    assert exchange.metric("paper_exchange_rejections_total", code="-4116") - rejected == 1


def test_late_reduce_only_order_is_judged_at_execution(api: Api, exchange: PaperExchange) -> None:
    api.ok("POST", "/fapi/v1/order", _order("late-ro-open"))
    exchange.set_faults(late_execution={"delay_s": 1.5})
    assert (
        api.signed("POST", "/fapi/v1/order", _order("late-ro", "SELL", reduceOnly="true")).status_code == 503
    )
    api.ok("POST", "/fapi/v1/order", _order("late-ro-close", "SELL", reduceOnly="true"))  # closed meanwhile
    assert _until(lambda: exchange.admin("GET", "faults")["late_pending"] == [])
    assert _missing(api, "late-ro")  # nothing left to reduce: rejected, no order, no short
    assert api.position_amt(SYMBOL) == 0


async def test_project_client_finds_nothing_then_the_order_appears(api: Api, exchange: PaperExchange) -> None:
    """What look-up-before-resend sees: an unknown outcome, a look-up that finds nothing, and later the
    order anyway."""
    client = BinanceFuturesClient(exchange.base_url, exchange.api_key, exchange.api_secret, get_retries=1)
    async with client:
        exchange.set_faults(late_execution={"delay_s": 1.5})
        with pytest.raises(UnknownOutcomeError) as err:
            await client.new_order(SYMBOL, "BUY", "MARKET", Decimal("0.010"), client_order_id="client-late")
        assert err.value.client_order_id == "client-late"
        assert await client.find_order(SYMBOL, "client-late") is None
        deadline = time.monotonic() + GUARD_S
        found = None
        while found is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            found = await client.find_order(SYMBOL, "client-late")
        assert found is not None and found.status == "FILLED" and found.executed_qty == Decimal("0.010")
        exchange.set_faults(outage={"paths": ["/fapi/v1/premiumIndex"], "mode": "refuse", "seconds": 1})
        with pytest.raises(UnknownOutcomeError, match="connection failed"):
            await client.premium_index(SYMBOL)


# ---- a ban starting at a chosen request ----------------------------------------------------------


def test_ban_starts_at_the_chosen_request_covers_every_path_and_ends(
    api: Api, exchange: PaperExchange
) -> None:
    before = _faults_of(exchange, "ban")
    exchange.set_faults(ban_at={"path": "/fapi/v1/userTrades", "after": 1, "seconds": 2})
    assert exchange.admin("GET", "faults")["ban_at"] == {
        "path": "/fapi/v1/userTrades",
        "after": 1,
        "seconds": 2.0,
        "seen": 0,
    }
    assert api.signed("GET", "/fapi/v1/userTrades", {"symbol": SYMBOL}).status_code == 200  # the 1st
    assert api.public("/fapi/v1/time").status_code == 200  # another path: not counted
    banned = api.signed("GET", "/fapi/v1/userTrades", {"symbol": SYMBOL})  # the 2nd: banned
    assert banned.status_code == 418
    body = banned.json()
    assert body["code"] == -1003 and body["msg"].startswith(
        "Way too many requests; IP(127.0.0.1) banned until"
    )
    assert 1 <= int(banned.headers["retry-after"]) <= 2
    assert api.public("/fapi/v1/time").status_code == 418  # from now on every /fapi path
    refused = api.signed("POST", "/fapi/v1/order", _order("banned-order"))
    assert refused.status_code == 418 and "retry-after" in refused.headers
    shown = exchange.admin("GET", "faults")  # /admin is not /fapi: still served
    assert shown["ban_at"] is None and list(shown["bans"]) == ["127.0.0.1"]
    assert _until(lambda: api.public("/fapi/v1/time").status_code == 200)
    assert _missing(api, "banned-order")
    assert _faults_of(exchange, "ban") - before >= 3


# ---- partial fills over time ---------------------------------------------------------------------


def test_market_order_fills_in_parts_over_time(api: Api, exchange: PaperExchange) -> None:
    key = api.http.post("/fapi/v1/listenKey", headers={"X-MBX-APIKEY": api.key}).json()["listenKey"]
    updates: list[dict[str, Any]] = []
    with connect(f"{exchange.ws_url}/private/ws?listenKey={key}") as ws:
        time.sleep(0.1)
        exchange.set_faults(partial_fills={"pieces": 3, "interval_s": 0.5})
        first = api.ok("POST", "/fapi/v1/order", _order("parts"))
        assert (first["status"], first["executedQty"]) == ("PARTIALLY_FILLED", "0.003")
        oid = first["orderId"]
        seen = api.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": oid})
        assert seen["status"] in ("PARTIALLY_FILLED", "FILLED")
        if seen["status"] == "PARTIALLY_FILLED":
            assert [o["orderId"] for o in api.ok("GET", "/fapi/v1/openOrders", {"symbol": SYMBOL})] == [oid]
        assert _until(
            lambda: api.ok("GET", "/fapi/v1/order", {"symbol": SYMBOL, "orderId": oid})["status"] == "FILLED",
        )
        deadline = time.monotonic() + GUARD_S
        while time.monotonic() < deadline and len(updates) < 3:
            try:
                msg = json.loads(ws.recv(timeout=deadline - time.monotonic()))
            except TimeoutError:
                break
            if msg.get("e") == "ORDER_TRADE_UPDATE" and msg["o"]["i"] == oid and msg["o"]["x"] == "TRADE":
                updates.append(msg["o"])
    assert [(u["l"], u["z"], u["X"]) for u in updates] == [
        ("0.003", "0.003", "PARTIALLY_FILLED"),
        ("0.003", "0.006", "PARTIALLY_FILLED"),
        ("0.004", "0.010", "FILLED"),
    ]
    trades = api.ok("GET", "/fapi/v1/userTrades", {"symbol": SYMBOL, "orderId": oid})
    assert [t["qty"] for t in trades] == ["0.003", "0.003", "0.004"]
    assert len({t["time"] for t in trades}) == 3  # spread over time
    assert api.position_amt(SYMBOL) == pytest.approx(0.01)
    shown = exchange.admin("GET", "faults")
    assert shown["partial_fills"] is None and shown["fired"].get("partial_fills") == 1
    assert api.ok("POST", "/fapi/v1/order", _order("whole"))["status"] == "FILLED"  # count 1: used up


# ---- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"outage": {"mode": "down", "seconds": 1}}, "outage.mode must be one of '5xx', 'refuse', 'hang'"),
        ({"outage": {"seconds": 0}}, "outage.seconds must be > 0"),
        ({"outage": {"mode": "5xx"}}, "outage.seconds is required"),
        ({"outage": {"paths": ["fapi/v1/order"], "seconds": 1}}, "outage.paths"),
        ({"outage": {"seconds": 1, "path": "/fapi"}}, "unknown key 'outage.path'"),
        ({"outage": [{"seconds": 1}, {"seconds": "x"}]}, "outage[1].seconds must be a number"),
        ({"outage": "soon"}, "outage must be a JSON object"),
        ({"late_execution": {}}, "late_execution.delay_s is required"),
        ({"late_execution": {"delay_s": -1}}, "late_execution.delay_s must be >= 0"),
        ({"late_execution": {"delay_s": 1, "answer": "lost"}}, "late_execution.answer must be one of '503'"),
        ({"late_execution": {"delay_s": 1, "count": 0}}, "late_execution.count must be between 1"),
        ({"ban_at": {"after": -1, "seconds": 5}}, "ban_at.after must be between 0"),
        ({"ban_at": {"path": "/fapi", "seconds": "later"}}, "ban_at.seconds must be a number"),
        ({"ban_at": {"path": "/fapi"}}, "ban_at.seconds is required"),
        ({"partial_fills": {"pieces": 1}}, "partial_fills.pieces must be between 2"),
        ({"partial_fills": {"pieces": True}}, "partial_fills.pieces must be a whole number"),
        ({"partial_fills": {"pieces": 3, "interval_s": "fast"}}, "partial_fills.interval_s must be a number"),
        ({"partial_fill": {"pieces": 3}}, "unknown fault 'partial_fill'"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(exchange: PaperExchange, body: Any, named: str) -> None:
    exchange.clear_faults()
    resp = _bad(exchange, {"latency_ms": 5, **body})
    assert resp.status_code == 400
    assert resp.json()["code"] == -1102 and named in resp.json()["msg"], resp.json()
    shown = exchange.admin("GET", "faults")  # a refused POST changes nothing
    assert shown["latency_ms"] == 0 and shown["active"] is False


def test_delete_clears_windows_bans_and_late_orders(api: Api, exchange: PaperExchange) -> None:
    exchange.set_faults(outage={"paths": ["/fapi/v1/premiumIndex"], "mode": "hang", "seconds": 60})
    outcome: list[str] = []

    def held() -> None:
        try:
            api_held = httpx.get(f"{exchange.base_url}/fapi/v1/premiumIndex", timeout=90)
            outcome.append(str(api_held.status_code))
        except httpx.TransportError as exc:
            outcome.append(type(exc).__name__)

    thread = threading.Thread(target=held)
    thread.start()
    assert _until(lambda: exchange.admin("GET", "faults")["fired"].get("outage_hang") == 1)
    exchange.set_faults(late_execution={"delay_s": 1}, partial_fills={"pieces": 2})
    assert api.signed("POST", "/fapi/v1/order", _order("late-cleared")).status_code == 503
    exchange.set_faults(ban_at={"path": "/fapi/v1/time", "seconds": 60})
    assert api.public("/fapi/v1/time").status_code == 418
    shown = exchange.admin("GET", "faults")
    assert shown["outage"] and shown["bans"] and shown["late_pending"] and shown["partial_fills"]
    cleared = exchange.admin("DELETE", "faults")
    assert (cleared["outage"], cleared["bans"], cleared["late_pending"], cleared["active"]) == (
        [],
        {},
        [],
        False,
    )
    thread.join(timeout=10)  # released long before the 60 s window
    assert not thread.is_alive() and outcome and outcome[0] != "200"
    assert api.public("/fapi/v1/time").status_code == 200  # the ban is lifted
    time.sleep(1.5)  # past the late order's time: it was dropped, never executed
    assert _missing(api, "late-cleared")
    assert api.ok("POST", "/fapi/v1/order", _order("after-clear"))["status"] == "FILLED"  # no split

"""`GET /metrics`: the paper exchange's Prometheus counters move by exactly what a client did."""

from __future__ import annotations

import time
from decimal import Decimal

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from exchange.paper.config import PaperConfig
from exchange.paper.server import create_app
from tests.conftest import PaperExchange
from tests.exchange.paper.test_server_support import FORM, Api, sign

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def scrape(base_url: str) -> Samples:
    resp = httpx.get(f"{base_url}/metrics", timeout=10)  # no API key: Prometheus scrapes without one
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return parse(resp.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def total_delta(before: Samples, after: Samples, name: str) -> float:
    return total(after, name) - total(before, name)


def test_an_order_and_a_rejection_move_the_counters_by_exactly_one(paper_exchange: PaperExchange) -> None:
    ex = paper_exchange
    ex.set_price("ETHUSDT", "3000")
    with Api(ex) as api:
        before = scrape(ex.base_url)
        assert value(before, "paper_exchange_open_positions") == 0
        assert value(before, "paper_exchange_wallet_balance_usdt") == 10000
        api.ok(
            "POST",
            "/fapi/v1/order",
            {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.010"},
        )
        refused = api.signed(
            "POST",
            "/fapi/v1/order",
            {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001"},
        )  # 3 USDT < 20 minimum
        assert refused.status_code == 400 and refused.json()["code"] == -4164
        after = scrape(ex.base_url)

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    assert d("paper_exchange_orders_total", symbol="ETHUSDT", type="MARKET", side="BUY") == 1
    assert total_delta(before, after, "paper_exchange_orders_total") == 1
    assert d("paper_exchange_fills_total", symbol="ETHUSDT") == 1
    assert total_delta(before, after, "paper_exchange_fills_total") == 1
    assert d("paper_exchange_rejections_total", code="-4164") == 1
    assert total_delta(before, after, "paper_exchange_rejections_total") == 1
    assert d("paper_exchange_requests_total", method="POST", path="/fapi/v1/order", status="200") == 1
    assert d("paper_exchange_requests_total", method="POST", path="/fapi/v1/order", status="400") == 1
    assert d("paper_exchange_request_seconds_count", method="POST", path="/fapi/v1/order") == 2
    assert d("paper_exchange_request_seconds_sum", method="POST", path="/fapi/v1/order") > 0
    # the first scrape is counted by the second
    assert d("paper_exchange_requests_total", method="GET", path="/metrics", status="200") == 1
    assert total(after, "paper_exchange_faults_injected_total") == 0
    assert value(after, "paper_exchange_liquidations_total") == 0
    assert value(after, "paper_exchange_open_positions") == 1
    # 0.010 ETH at 3000, taker fee 0.04 %: 0.012 USDT
    assert Decimal(str(value(after, "paper_exchange_wallet_balance_usdt"))) == Decimal("9999.988")


def test_injected_faults_are_counted_apart_from_rejections(paper_exchange: PaperExchange) -> None:
    ex = paper_exchange
    before = scrape(ex.base_url)
    ex.set_faults(http_429_rate=1, count=1, paths=["/fapi/v1/ticker/price"])
    resp = httpx.get(f"{ex.base_url}/fapi/v1/ticker/price", params={"symbol": "BTCUSDT"})
    assert resp.status_code == 429
    resp = httpx.get(f"{ex.base_url}/fapi/v1/ticker/price", params={"symbol": "NOPEUSDT"})
    assert resp.status_code == 400 and resp.json()["code"] == -1121
    after = scrape(ex.base_url)
    assert delta(before, after, "paper_exchange_faults_injected_total", kind="429") == 1
    assert total_delta(before, after, "paper_exchange_rejections_total") == 1
    assert delta(before, after, "paper_exchange_rejections_total", code="-1121") == 1
    assert (
        delta(
            before,
            after,
            "paper_exchange_requests_total",
            method="GET",
            path="/fapi/v1/ticker/price",
            status="429",
        )
        == 1
    )


def test_ws_connections_gauge(paper_exchange: PaperExchange) -> None:
    ex = paper_exchange
    assert value(scrape(ex.base_url), "paper_exchange_ws_connections") == 0
    with connect(f"{ex.ws_url}/ws/btcusdt@markPrice"):
        deadline = time.monotonic() + 5
        while value(scrape(ex.base_url), "paper_exchange_ws_connections") != 1:
            assert time.monotonic() < deadline, "the gauge never showed the connection"
            time.sleep(0.05)


# ---- in process ---------------------------------------------------------------------------------
def _signed_order(params: str) -> tuple[str, dict[str, str]]:
    payload = f"{params}&timestamp={int(time.time() * 1000)}"
    return f"{payload}&signature={sign('SECRET', payload)}", {"X-MBX-APIKEY": "KEY", **FORM}


async def test_each_app_has_its_own_registry_and_paths_stay_bounded() -> None:
    apps = [create_app(PaperConfig(api_key="KEY", api_secret="SECRET")) for _ in range(2)]
    assert apps[0].metrics.registry is not apps[1].metrics.registry
    first, second = (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://paper") for a in apps
    )
    async with first, second:
        for i in range(5):
            assert (await first.get(f"/fapi/v1/nothing/{i}")).status_code == 404
        assert (await first.get("/admin/nothing")).status_code == 404
        assert (await first.post("/metrics")).status_code == 405
        one = parse((await first.get("/metrics")).text)
        two = parse((await second.get("/metrics")).text)
    assert value(one, "paper_exchange_requests_total", method="GET", path="other", status="404") == 6
    assert value(one, "paper_exchange_requests_total", method="POST", path="/metrics", status="405") == 1
    assert value(one, "paper_exchange_rejections_total", code="-5000") == 5
    assert total(two, "paper_exchange_requests_total") == 0  # the second app saw only its own scrape
    paths = {dict(labels)["path"] for (name, labels) in one if name == "paper_exchange_requests_total"}
    assert paths == {"other", "/metrics"}


async def test_liquidation_is_counted() -> None:
    app = create_app(PaperConfig(api_key="KEY", api_secret="SECRET", prices="manual"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://paper") as c:

        async def set_price(price: str) -> None:
            resp = await c.post(
                "/admin/price", json={"symbol": "ETHUSDT", "price": price}, headers={"X-MBX-APIKEY": "KEY"}
            )
            resp.raise_for_status()

        await set_price("3000")
        body, headers = _signed_order("symbol=ETHUSDT&side=BUY&type=MARKET&quantity=50")  # 150k at 20x
        resp = await c.post("/fapi/v1/order", content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        await set_price("2000")
        samples = parse((await c.get("/metrics")).text)
    assert value(samples, "paper_exchange_liquidations_total") == 1
    assert value(samples, "paper_exchange_fills_total", symbol="ETHUSDT") == 2
    assert value(samples, "paper_exchange_open_positions") == 0
    assert (
        value(samples, "paper_exchange_requests_total", method="POST", path="/admin/price", status="200") == 2
    )

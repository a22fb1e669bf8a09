"""A small signed-request helper for the paper exchange server tests (independent of exchange/client.py),
plus fast in-process tests of the server's pure parts: signing, parameter merge, limits, faults."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from exchange.paper.auth import Authenticator, merge_params, split_signature
from exchange.paper.errors import ApiError
from exchange.paper.faults import FaultConfigError, Faults
from exchange.paper.limits import LimitError, RateLimiter

FORM = {"content-type": "application/x-www-form-urlencoded"}


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


class Api:
    """Raw HTTP against one paper exchange: public GETs, signed calls, and a state snapshot."""

    def __init__(self, ex: Any, timeout: float = 10.0) -> None:
        self.ex = ex
        self.key = ex.api_key
        self.secret = ex.api_secret
        self.http = httpx.Client(base_url=ex.base_url, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def public(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params or None)

    def signed(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        in_body: bool | None = None,
        key: str | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        recv_window: int | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Sign like Binance: HMAC-SHA256 over the urlencoded parameters, `signature` last.
        POST/PUT/DELETE put them in a form body unless `in_body=False`; GET uses the query."""
        p = {k: v for k, v in (params or {}).items() if v is not None}
        p["timestamp"] = int(time.time() * 1000) if timestamp is None else timestamp
        if recv_window is not None:
            p["recvWindow"] = recv_window
        payload = urlencode(p)
        signature = sign(secret or self.secret, payload)
        headers = {"X-MBX-APIKEY": self.key if key is None else key}
        if in_body is None:
            in_body = method.upper() != "GET"
        extra = {"timeout": timeout} if timeout is not None else {}
        if in_body:
            return self.http.request(
                method, path, content=f"{payload}&signature={signature}", headers={**headers, **FORM}, **extra
            )
        return self.http.request(method, f"{path}?{payload}&signature={signature}", headers=headers, **extra)

    def ok(self, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        resp = self.signed(method, path, params, **kw)
        assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    def admin(self, method: str, path: str, json: Any = None) -> Any:
        return self.ex.admin(method, path, json)

    def snapshot(self) -> dict[str, Any]:
        """What must not change when a request is refused (times and marks left out)."""
        positions = [
            {k: p[k] for k in ("symbol", "positionSide", "positionAmt", "entryPrice")}
            for p in self.ok("GET", "/fapi/v3/positionRisk")
            if float(p["positionAmt"]) != 0
        ]
        account = self.ok("GET", "/fapi/v3/account")
        balances = sorted((a["asset"], a["walletBalance"]) for a in account["assets"])
        return {
            "positions": positions,
            "open_orders": self.ok("GET", "/fapi/v1/openOrders"),
            "open_algo": self.ok("GET", "/fapi/v1/openAlgoOrders"),
            "wallet": account["totalWalletBalance"],
            "balances": balances,
            "admin_orders": self.admin("GET", "orders"),
            "admin_algo": self.admin("GET", "algo-orders"),
        }

    def position_amt(self, symbol: str) -> float:
        for p in self.ok("GET", "/fapi/v3/positionRisk", {"symbol": symbol}):
            if p["symbol"] == symbol and p["positionSide"] in ("BOTH", "LONG", "SHORT"):
                return float(p["positionAmt"])
        return 0.0


# ---- pure parts, in process ----------------------------------------------------------------


def test_signing_vector_from_binance_docs() -> None:
    secret = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
    payload = (
        "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC"
        "&recvWindow=5000&timestamp=1591702613943"
    )
    want = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
    assert Authenticator("k", secret).sign(payload.encode()) == want
    assert sign(secret, payload) == want


def test_query_and_body_merge_query_wins_and_signature_spans_both() -> None:
    a = Authenticator("KEY", "SECRET")
    query, body = b"symbol=BTCUSDT&side=BUY", b"side=SELL&quantity=1&timestamp=1000"
    sig = sign("SECRET", query.decode() + body.decode()).encode()
    body_signed = body + b"&signature=" + sig
    params = merge_params(query, body_signed)
    assert params == {"symbol": "BTCUSDT", "side": "BUY", "quantity": "1", "timestamp": "1000"}
    a.check_signed(b"KEY", query, body_signed, params, now_ms=1500)
    assert split_signature(body_signed) == (body, sig)
    with pytest.raises(ApiError) as err:  # the signature covers the query too
        a.check_signed(b"KEY", b"symbol=ETHUSDT&side=BUY", body_signed, params, now_ms=1500)
    assert err.value.code == -1022


@pytest.mark.parametrize(
    ("key", "ts", "recv", "now", "code", "status"),
    [
        (None, 1000, None, 1000, -2014, 401),
        (b"WRONG", 1000, None, 1000, -2015, 401),
        (b"KEY", 1000, None, 7000, -1021, 400),  # older than the default 5000 ms window
        (b"KEY", 1000, "10000", 7000, None, 200),  # inside a wider window
        (b"KEY", 2000, None, 1000, -1021, 400),  # 1000 ms ahead of the server
        (b"KEY", 1000, "70000", 1000, -1131, 400),  # recvWindow above 60000
    ],
)
def test_key_and_timestamp_rules(
    key: bytes | None, ts: int, recv: str | None, now: int, code: int | None, status: int
) -> None:
    a = Authenticator("KEY", "SECRET")
    q = f"timestamp={ts}" + (f"&recvWindow={recv}" if recv else "")
    query = f"{q}&signature={sign('SECRET', q)}".encode()
    params = merge_params(query, b"")
    if code is None:
        a.check_signed(key, query, b"", params, now)
        return
    with pytest.raises(ApiError) as err:
        a.check_signed(key, query, b"", params, now)
    assert (err.value.code, err.value.http_status) == (code, status)


def test_missing_timestamp_and_signature() -> None:
    a = Authenticator("KEY", "SECRET")
    for query, name in ((b"symbol=X", "signature"), (b"symbol=X&signature=ab", "timestamp")):
        with pytest.raises(ApiError) as err:
            a.check_signed(b"KEY", query, b"", merge_params(query, b""), 1000)
        assert err.value.code == -1102 and name in err.value.msg


def test_weight_limit_429_then_418_ban() -> None:
    lim = RateLimiter(weight_limit_1m=10, strikes_to_ban=3, ban_s=120)
    now = 1_000_000
    for i in range(10):
        assert lim.charge("1.2.3.4", 1, now + i) == i + 1
    with pytest.raises(LimitError) as err:
        lim.charge("1.2.3.4", 1, now + 20)
    assert (err.value.http_status, err.value.code) == (429, -1003) and err.value.retry_after_s >= 1
    assert lim.charge("5.6.7.8", 1, now + 21) == 1  # per IP
    with pytest.raises(LimitError) as err:
        lim.charge("1.2.3.4", 1, now + 30)
    assert err.value.http_status == 429
    with pytest.raises(LimitError) as err:
        lim.charge("1.2.3.4", 1, now + 40)
    assert err.value.http_status == 418 and 119 <= err.value.retry_after_s <= 120
    with pytest.raises(LimitError) as err:  # long after the window, still banned
        lim.charge("1.2.3.4", 1, now + 100_000)
    assert err.value.http_status == 418
    assert lim.charge("1.2.3.4", 1, now + 121_000) == 1  # the ban is over, the window rolled


def test_order_counters() -> None:
    lim = RateLimiter(order_limit_10s=3, order_limit_1m=5)
    t = 5_000_000
    assert [lim.charge_order(t) for _ in range(3)] == [(1, 1), (2, 2), (3, 3)]
    with pytest.raises(LimitError) as err:
        lim.charge_order(t)
    assert err.value.code == -1015 and "TEN_SECONDS" in err.value.msg
    assert lim.charge_order(t + 11_000) == (1, 4)
    lim.charge_order(t + 11_000)
    with pytest.raises(LimitError) as err:
        lim.charge_order(t + 12_000)
    assert "MINUTE" in err.value.msg


def test_faults_count_paths_and_validation() -> None:
    f = Faults()
    assert not f.active
    f.update({"http_5xx_rate": 1, "count": 2, "paths": ["/fapi/v1/order"]})
    assert f.decide("/fapi/v1/time", False, 0) is None
    d = f.decide("/fapi/v1/order", True, 0)
    assert d is not None and (d.kind, d.status, d.code, d.msg) == ("5xx", 503, -1001, "Service Unavailable.")
    assert f.decide("/fapi/v1/order", True, 0) is not None
    assert not f.active  # count used up
    f.update({"lost_answer_rate": 1})
    assert f.decide("/fapi/v1/order", False, 0) is None  # only order placement loses answers
    d = f.decide("/fapi/v1/order", True, 0)
    assert d is not None and (d.kind, d.code) == ("lost", -1000) and d.msg.startswith("Unknown error")
    f.clear()
    f.update({"http_5xx_rate": 1, "http_5xx_status": 500})
    d = f.decide("/fapi/v1/time", False, 0)
    assert d is not None and (d.status, d.code) == (500, -1001) and d.msg.startswith("Internal error")
    for bad in ({"nope": 1}, {"http_429_rate": 2}, {"lost_answer_mode": "x"}, {"http_5xx_status": 404}):
        with pytest.raises(FaultConfigError):
            f.update(bad)
    f.clear()
    f.update({"http_429_rate": 0.5, "seed": 3})
    first = [f.decide("/fapi/v1/time", False, 0) is not None for _ in range(20)]
    f.update({"seed": 3})
    assert [f.decide("/fapi/v1/time", False, 0) is not None for _ in range(20)] == first


class _BrokenEngine:
    """Every engine method fails unexpectedly; only the plumbing the server needs works."""

    def add_listener(self, fn: Any) -> None:
        pass

    def listen_key_valid(self, key: str) -> bool:
        return False

    def wall_ms(self) -> int:
        return int(time.time() * 1000)

    def server_time(self, p: dict[str, str]) -> Any:
        return {"serverTime": self.wall_ms()}

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"boom in {name}")

        return fail


async def test_unexpected_engine_error_is_a_binance_500() -> None:
    from exchange.paper.config import PaperConfig
    from exchange.paper.server import create_app

    app = create_app(PaperConfig(api_key="KEY", api_secret="SECRET"), engine=_BrokenEngine())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paper") as client:
        ok = await client.get("/fapi/v1/time")
        assert ok.status_code == 200 and "serverTime" in ok.json()
        resp = await client.get("/fapi/v1/exchangeInfo")
        assert resp.status_code == 500
        assert resp.json() == {"code": -1000, "msg": "An unknown error occured while processing the request."}
        assert "x-mbx-used-weight-1m" in resp.headers
        ts = int(time.time() * 1000)
        payload = f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&timestamp={ts}"
        resp = await client.post(
            "/fapi/v1/order",
            content=f"{payload}&signature={sign('SECRET', payload)}",
            headers={"X-MBX-APIKEY": "KEY", **FORM},
        )
        assert resp.status_code == 500 and resp.json()["code"] == -1000
        assert resp.headers["x-mbx-order-count-10s"] == "1"
        resp = await client.post("/admin/faults", json={"latency_ms": 1})
        assert resp.status_code == 401

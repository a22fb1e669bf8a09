"""The user-data stream: the pure decisions (what is forwarded, the signal's shape, routing,
catch-up snapshots), then the real thing — a paper exchange, redis-server, a Temporal dev server, the
service as a child process, and test-only recorder workflows that keep every `exchange_event` signal
with the wall time it arrived."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from temporalio import workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from exchange.client import BinanceFuturesClient
from exchange.errors import RejectedError
from feeds.user_events import (
    EVENT_FIELDS,
    Route,
    canonical_decimal,
    classify_order,
    decode,
    parse_route,
    snapshot_events,
)
from tests.conftest import REPO, PaperExchange
from workers.devservers import start_redis, start_temporal
from workers.processes import ManagedProcess, free_port

QUEUE = "user-stream-test"


# ------------------------------------------------------------------------------------------------
# pure decisions
def otu(x: str, status: str, cid: str = "qt-1", **extra: Any) -> dict[str, Any]:
    o = {
        "s": "BTCUSDT",
        "c": cid,
        "S": "BUY",
        "o": "MARKET",
        "x": x,
        "X": status,
        "i": 7,
        "l": "0.010",
        "L": "60000.00",
        "rp": "0.00000000",
        "n": "0.24000000",
        **extra,
    }
    return {"e": "ORDER_TRADE_UPDATE", "E": 1_700_000_000_123, "T": 1_700_000_000_120, "o": o}


def test_order_updates_forwarded_only_for_trades_and_terminal_states() -> None:
    assert decode(otu("NEW", "NEW")).events == [] and decode(otu("NEW", "NEW")).ignored
    assert decode(otu("AMENDMENT", "NEW")).events == []
    [ev] = decode(otu("TRADE", "PARTIALLY_FILLED")).events
    assert tuple(ev) == EVENT_FIELDS
    assert ev == {
        "kind": "order_update",
        "symbol": "BTCUSDT",
        "event_ms": 1_700_000_000_123,
        "client_order_id": "qt-1",
        "order_id": 7,
        "order_status": "PARTIALLY_FILLED",
        "exec_type": "TRADE",
        "order_type": "MARKET",
        "side": "BUY",
        "last_qty": "0.01",
        "last_price": "60000",
        "realized_pnl": "0",
        "commission": "0.24",
        "position_amt": None,
        "entry_price": None,
        "reason": "venue",
    }
    for status in ("CANCELED", "EXPIRED", "FILLED"):
        [ev] = decode(otu(status if status != "FILLED" else "CALCULATED", status)).events
        assert ev["order_status"] == status
    no_fee = otu("TRADE", "FILLED")
    del no_fee["o"]["n"]
    assert decode(no_fee).events[0]["commission"] is None
    # wrapped like a combined stream
    assert decode({"stream": "k", "data": otu("TRADE", "FILLED")}).events[0]["kind"] == "order_update"


def test_reason_classification() -> None:
    assert classify_order("autoclose-1700000000000") == "liquidation"
    assert classify_order("adl_autoclose") == "adl"
    assert classify_order("qt-abc") == classify_order(None) == "venue"
    [ev] = decode(otu("CALCULATED", "FILLED", cid="autoclose-17", o="LIQUIDATION")).events
    assert (ev["reason"], ev["order_type"], ev["exec_type"]) == ("liquidation", "LIQUIDATION", "CALCULATED")


def test_account_update_one_event_per_changed_position() -> None:
    msg = {
        "e": "ACCOUNT_UPDATE",
        "E": 5,
        "T": 5,
        "a": {
            "m": "ORDER",
            "B": [],
            "P": [
                {
                    "s": "BTCUSDT",
                    "pa": "0.000",
                    "ep": "0.0",
                    "bep": "0",
                    "cr": "1",
                    "up": "0",
                    "mt": "cross",
                    "iw": "0",
                    "ps": "BOTH",
                },
                {"s": "ETHUSDT", "pa": "-1.500", "ep": "3000.10", "ps": "BOTH"},
            ],
        },
    }
    a, b = decode(msg).events
    assert (a["kind"], a["symbol"], a["position_amt"], a["entry_price"], a["reason"]) == (
        "account_update",
        "BTCUSDT",
        "0",
        "0",
        "ORDER",
    )
    assert (b["symbol"], b["position_amt"], b["entry_price"], b["event_ms"]) == (
        "ETHUSDT",
        "-1.5",
        "3000.1",
        5,
    )
    funding = {"e": "ACCOUNT_UPDATE", "E": 6, "a": {"m": "FUNDING_FEE", "B": [{"a": "USDT"}], "P": []}}
    assert decode(funding).events == []


def test_algo_update_forwarded_when_triggered_or_ended() -> None:
    def algo(status: str) -> dict[str, Any]:
        o = {
            "caid": "hs-1",
            "aid": 42,
            "o": "STOP_MARKET",
            "s": "BTCUSDT",
            "S": "SELL",
            "X": status,
            "aq": "0.010",
            "ap": "58900.0",
            "rm": "",
        }
        return {"e": "ALGO_UPDATE", "E": 9, "T": 9, "o": o}

    assert decode(algo("NEW")).events == [] and decode(algo("TRIGGERING")).events == []
    for status in ("TRIGGERED", "FINISHED", "CANCELED", "REJECTED", "EXPIRED"):
        [ev] = decode(algo(status)).events
        assert (ev["kind"], ev["client_order_id"], ev["order_id"], ev["order_status"]) == (
            "algo_update",
            "hs-1",
            42,
            status,
        )
        assert (ev["last_qty"], ev["last_price"], ev["reason"]) == ("0.01", "58900", None)


def test_listen_key_expired_and_other_events_and_malformed() -> None:
    d = decode({"e": "listenKeyExpired", "E": "1576653824250", "listenKey": "abc"})
    assert (d.expired_key, d.event_ms, d.events) == ("abc", 1576653824250, [])
    assert decode({"e": "MARGIN_CALL", "E": 1, "p": []}).ignored
    for bad in ({"e": "ORDER_TRADE_UPDATE", "E": 1}, {"x": 1}, {"e": "ACCOUNT_UPDATE", "a": {"P": [{}]}}):
        with pytest.raises((KeyError, ValueError, TypeError)):
            decode(bad)


def test_canonical_decimals_and_routes() -> None:
    assert [canonical_decimal(v) for v in ("0.000", "65000.10", "1E+3", "-0.0010", None, "", "x")] == [
        "0",
        "65000.1",
        "1000",
        "-0.001",
        None,
        None,
        "x",
    ]
    assert parse_route("BTCUSDT", b"pos-1", b"OPEN") == Route("BTCUSDT", "pos-1", "OPEN")
    assert parse_route("BTCUSDT", "pos-1", "closing") == Route("BTCUSDT", "pos-1", "CLOSING")
    for wf, st in (("pos-1", "CLOSED"), ("pos-1", "ENTERING"), ("", "OPEN"), (None, None)):
        assert parse_route("BTCUSDT", wf, st) is None


def test_catch_up_snapshot_for_every_tracked_symbol_flat_when_absent() -> None:
    tracked = [Route("BTCUSDT", "a", "OPEN"), Route("ETHUSDT", "b", "CLOSING")]
    got = dict(
        snapshot_events(
            tracked, [("BTCUSDT", D("0.020"), D("60000.5")), ("SOLUSDT", D(3), D(1))], 1234, "reconnect"
        )
    )
    assert got["a"]["kind"] == "position_snapshot"
    assert (got["a"]["position_amt"], got["a"]["entry_price"], got["a"]["reason"], got["a"]["event_ms"]) == (
        "0.02",
        "60000.5",
        "reconnect",
        1234,
    )
    assert (got["b"]["symbol"], got["b"]["position_amt"], got["b"]["entry_price"]) == ("ETHUSDT", "0", None)
    assert set(got) == {"a", "b"}  # SOLUSDT is nobody's: no snapshot


# ------------------------------------------------------------------------------------------------
# real processes
RECEIVED: dict[str, list[tuple[float, dict[str, Any]]]] = {}
ARRIVED = asyncio.Event()


@workflow.defn(name="ExchangeEventRecorder", sandboxed=False)
class ExchangeEventRecorder:
    """Stands in for a position workflow: records every exchange_event signal (test-only side effect)."""

    def __init__(self) -> None:
        self.done = False

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.done)

    @workflow.signal(name="exchange_event")
    def exchange_event(self, payload: dict[str, Any]) -> None:
        if not workflow.unsafe.is_replaying():
            RECEIVED.setdefault(workflow.info().workflow_id, []).append((time.time(), payload))
            ARRIVED.set()


@dataclass
class Env:
    tmp: Path
    exchange: PaperExchange
    temporal: str
    redis_port: int
    client: Client
    redis: aioredis.Redis
    venue: BinanceFuturesClient
    procs: list[ManagedProcess]

    def start_service(self, keepalive: float = 1.0, lease_s: float = 5.0) -> Service:
        port = free_port()
        proc = ManagedProcess(
            name="user-stream",
            argv=[
                sys.executable,
                "-m",
                "feeds.user_stream",
                "--metrics-port",
                str(port),
                "--keepalive",
                str(keepalive),
            ],
            log_path=self.tmp / f"user-stream-{len(self.procs)}.log",
            env={
                **os.environ,
                "TRADING_MODE": "paper",
                "PAPER_REST_URL": self.exchange.base_url,
                "PAPER_WS_URL": self.exchange.ws_url,
                "BINANCE_API_KEY": self.exchange.api_key,
                "BINANCE_API_SECRET": self.exchange.api_secret,
                "REDIS_HOST": "127.0.0.1",
                "REDIS_PORT": str(self.redis_port),
                "TEMPORAL_ADDRESS": self.temporal,
                "TEMPORAL_NAMESPACE": "default",
                "FEED_LEASE_SECONDS": str(lease_s),
            },
            cwd=REPO,
        )
        proc.start()
        self.procs.append(proc)
        return Service(proc, port)

    async def track(self, symbol: str, wf: str, status: str = "OPEN") -> None:
        """A projection like the position workflow's: the symbol's snapshot points at `wf`."""
        await self.client.start_workflow(ExchangeEventRecorder.run, id=wf, task_queue=QUEUE)
        await self.redis.hset(
            f"quantum:position:snapshot:{symbol}",
            mapping={"workflow_id": wf, "status": status, "symbol": symbol, "side": "LONG", "qty": "0"},
        )

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self.exchange.admin, method, path, body)


@dataclass
class Service:
    proc: ManagedProcess
    metrics_port: int

    def metrics(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    async def wait_metric(self, name: str, at_least: float, timeout: float = 15.0) -> float:
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise AssertionError(f"user stream exited:\n{self.proc.log_tail()}")
            try:
                last = (await asyncio.to_thread(self.metrics)).get(name)
            except httpx.HTTPError:
                last = None
            if last is not None and last >= at_least:
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"{name} = {last}, wanted >= {at_least}:\n{self.proc.log_tail()}")


# How long a wait for a signal may take before the test gives up: a hang guard, not a latency bound
# (the event-to-workflow lag is printed here and measured by `python -m bench.truth`).
GUARD_S = 30.0


async def wait_for(
    wf: str, match: Callable[[dict[str, Any]], bool], timeout: float = GUARD_S, since: int = 0
) -> tuple[float, dict[str, Any]]:
    """The first signal to `wf` (from index `since`) that `match`es."""
    deadline = time.monotonic() + timeout
    while True:
        for t, p in RECEIVED.get(wf, [])[since:]:
            if match(p):
                return t, p
        left = deadline - time.monotonic()
        if left <= 0:
            got = [(p["kind"], p.get("exec_type"), p.get("order_status")) for _, p in RECEIVED.get(wf, [])]
            raise AssertionError(f"{wf}: no matching signal within {timeout}s; got {got}")
        ARRIVED.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ARRIVED.wait(), min(left, 0.2))


def count(wf: str) -> int:
    return len(RECEIVED.get(wf, []))


@pytest.fixture
async def env(tmp_path: Path, paper_exchange: PaperExchange) -> AsyncIterator[Env]:
    global ARRIVED
    RECEIVED.clear()
    ARRIVED = asyncio.Event()  # bound to this test's loop
    temporal_proc, address = start_temporal(tmp_path)
    redis_proc = None
    procs: list[ManagedProcess] = []
    try:
        redis_proc, redis_port = start_redis(tmp_path)
        client = await Client.connect(address, data_converter=pydantic_data_converter)
        redis = aioredis.Redis(port=redis_port)
        await asyncio.to_thread(paper_exchange.set_price, "BTCUSDT", "60000")
        await asyncio.to_thread(paper_exchange.set_price, "ETHUSDT", "3000")
        async with (
            BinanceFuturesClient(
                paper_exchange.base_url, paper_exchange.api_key, paper_exchange.api_secret
            ) as venue,
            Worker(client, task_queue=QUEUE, workflows=[ExchangeEventRecorder]),
        ):
            e = Env(tmp_path, paper_exchange, address, redis_port, client, redis, venue, procs)
            try:
                yield e
            finally:
                for p in procs:
                    p.stop()
                await redis.aclose()
    finally:
        if redis_proc is not None:
            redis_proc.stop()
        temporal_proc.stop()


def lag_ms(t: float, p: dict[str, Any]) -> float:
    return (t - p["event_ms"] / 1000) * 1000


async def test_user_stream_end_to_end(env: Env) -> None:
    """Fills, an algo stop, a liquidation, an expired listenKey and a dropped socket all reach the
    owning workflow, in order; every reconnect is followed by a REST catch-up snapshot. The lags are
    printed, not asserted: latency belongs to the benchmark (`python -m bench.truth`)."""
    btc, eth, ghost = "pos-btc", "pos-eth", "pos-ghost"
    await env.track("BTCUSDT", btc)
    await env.track("ETHUSDT", eth)
    # SOLUSDT points at a workflow that does not exist: a not-found signal, not an error
    await env.redis.hset(
        "quantum:position:snapshot:SOLUSDT", mapping={"workflow_id": ghost, "status": "OPEN"}
    )
    # BNBUSDT's position already CLOSED: unroutable
    await env.redis.hset(
        "quantum:position:snapshot:BNBUSDT", mapping={"workflow_id": "old", "status": "CLOSED"}
    )
    svc = env.start_service(keepalive=1.0)
    lags: list[float] = []

    # start: a catch-up snapshot for each tracked symbol (flat: "0")
    _, p = await wait_for(btc, lambda p: p["kind"] == "position_snapshot", timeout=20)
    assert (p["symbol"], p["position_amt"], p["reason"]) == ("BTCUSDT", "0", "start")
    await wait_for(eth, lambda p: p["kind"] == "position_snapshot")

    # 1. a MARKET order: order_update (TRADE) and account_update, each signalled to the owner
    for i in range(4):  # buy, sell, buy, sell: flat again
        n = count(btc)
        cid = f"t-mkt-{i}"
        side = "BUY" if i % 2 == 0 else "SELL"
        await env.venue.new_order("BTCUSDT", side, "MARKET", D("0.010"), client_order_id=cid)
        t1, o = await wait_for(
            btc,
            lambda p, cid=cid: (
                p["kind"] == "order_update" and p["client_order_id"] == cid and p["exec_type"] == "TRADE"
            ),
            since=n,
        )
        t2, a = await wait_for(btc, lambda p: p["kind"] == "account_update", since=n)
        assert (o["order_status"], o["side"], o["last_qty"], o["order_type"], o["reason"]) == (
            "FILLED",
            side,
            "0.01",
            "MARKET",
            "venue",
        )
        assert o["commission"] is not None and D(o["last_price"]) > 0 and isinstance(o["order_id"], int)
        assert (a["position_amt"], a["reason"]) == ("0.01" if side == "BUY" else "0", "ORDER")
        lags += [lag_ms(t1, o), lag_ms(t2, a)]
    await env.venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.010"), client_order_id="t-open")
    await wait_for(btc, lambda p: p["kind"] == "account_update" and p["position_amt"] == "0.01")
    await wait_for(btc, lambda p: p.get("client_order_id") == "t-open")

    # 2. a STOP_MARKET algo that triggers on a price move: algo_update, then the child order's fill
    n = count(btc)
    await env.venue.new_algo_order(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        D("59000"),
        quantity=D("0.010"),
        reduce_only=True,
        client_algo_id="t-hardstop",
    )
    await env.admin("POST", "price", {"symbol": "BTCUSDT", "price": "58900"})
    t1, al = await wait_for(
        btc, lambda p: p["kind"] == "algo_update" and p["order_status"] == "TRIGGERED", since=n
    )
    t2, fin = await wait_for(
        btc, lambda p: p["kind"] == "algo_update" and p["order_status"] == "FINISHED", since=n
    )
    t3, o = await wait_for(
        btc, lambda p: p["kind"] == "order_update" and p["client_order_id"] == "t-hardstop", since=n
    )
    _, a = await wait_for(btc, lambda p: p["kind"] == "account_update" and p["position_amt"] == "0", since=n)
    assert (al["client_order_id"], al["order_type"], fin["last_qty"]) == ("t-hardstop", "STOP_MARKET", "0.01")
    assert (o["exec_type"], o["order_status"], o["side"]) == ("TRADE", "FILLED", "SELL")
    lags += [lag_ms(t1, al), lag_ms(t2, fin), lag_ms(t3, o)]
    seen = [(p["kind"], p["order_status"]) for _, p in RECEIVED[btc][n:] if p["kind"] != "account_update"]
    assert seen == [("algo_update", "TRIGGERED"), ("order_update", "FILLED"), ("algo_update", "FINISHED")]

    # 3. a liquidation: isolated, high leverage, the price through the liquidation price
    await env.venue.set_margin_type("ETHUSDT", "ISOLATED")
    await env.venue.set_leverage("ETHUSDT", 50)
    await env.venue.new_order("ETHUSDT", "BUY", "MARKET", D("0.5"), client_order_id="t-eth-long")
    await wait_for(eth, lambda p: p["kind"] == "account_update" and p["position_amt"] == "0.5")
    [pos] = [r for r in await env.venue.position_risk("ETHUSDT") if r.position_amt != 0]
    assert 0 < pos.liquidation_price < D(3000)
    n = count(eth)
    await env.admin("POST", "price", {"symbol": "ETHUSDT", "price": str(pos.liquidation_price - 20)})
    t1, o = await wait_for(
        eth, lambda p: p["kind"] == "order_update" and p["reason"] == "liquidation", since=n
    )
    t2, a = await wait_for(eth, lambda p: p["kind"] == "account_update" and p["position_amt"] == "0", since=n)
    assert o["client_order_id"].startswith("autoclose-") and o["order_status"] == "FILLED"
    assert (o["order_type"], o["side"]) == ("LIQUIDATION", "SELL")
    lags += [lag_ms(t1, o), lag_ms(t2, a)]

    # 4. routing: a ghost workflow is counted as not found; a CLOSED position is unroutable
    await env.venue.new_order("SOLUSDT", "BUY", "MARKET", D("1"), client_order_id="t-sol")
    await env.venue.new_order("BNBUSDT", "BUY", "MARKET", D("0.1"), client_order_id="t-bnb")
    await svc.wait_metric("user_stream_workflow_not_found_total", 2)  # order + account update
    await svc.wait_metric('user_stream_unroutable_total{kind="order_update"}', 1)
    await svc.wait_metric('user_stream_unroutable_total{kind="account_update"}', 1)
    assert ghost not in RECEIVED and "old" not in RECEIVED

    # 5. the venue expires the listenKey: a new key, a reconnect, a catch-up, events keep arriving
    await svc.wait_metric('user_stream_listen_key_keepalives_total{result="ok"}', 1)
    old_key = await env.venue.new_listen_key()  # POST returns the active key
    n = count(btc)
    await env.admin("POST", "listen-keys/expire")
    await svc.wait_metric('user_stream_listen_key_renewals_total{reason="expired_event"}', 1)
    await wait_for(btc, lambda p: p["kind"] == "position_snapshot", since=n)
    await env.venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.010"), client_order_id="t-after-expire")
    t1, o = await wait_for(btc, lambda p: p.get("client_order_id") == "t-after-expire", since=n)
    lags.append(lag_ms(t1, o))
    new_key = await env.venue.new_listen_key()
    assert new_key != old_key

    # 6. the venue drops the socket: reconnect, catch-up snapshot with the venue's position, events flow
    n = count(btc)
    dropped = await env.admin("POST", "ws/drop")
    assert dropped["dropped"] >= 1
    await svc.wait_metric("user_stream_reconnects_total", 2)
    _, snap = await wait_for(btc, lambda p: p["kind"] == "position_snapshot", since=n)
    assert (snap["position_amt"], snap["reason"]) == ("0.01", "reconnect") and D(snap["entry_price"]) > 0
    _, snap_eth = await wait_for(
        eth, lambda p: p["kind"] == "position_snapshot" and p["reason"] == "reconnect"
    )
    assert snap_eth["position_amt"] == "0"  # liquidated: flat, absent from positionRisk v3
    await env.venue.new_order("BTCUSDT", "SELL", "MARKET", D("0.010"), client_order_id="t-after-drop")
    t1, o = await wait_for(btc, lambda p: p.get("client_order_id") == "t-after-drop", since=n)
    _, a = await wait_for(btc, lambda p: p["kind"] == "account_update" and p["position_amt"] == "0", since=n)
    lags.append(lag_ms(t1, o))

    # 7. the key vanishes without an event (closed elsewhere): the keepalive's -1125 renews it
    n = count(btc)
    await env.venue.close_listen_key()
    await svc.wait_metric('user_stream_listen_key_renewals_total{reason="keepalive_1125"}', 1)
    await svc.wait_metric("user_stream_reconnects_total", 3)
    await wait_for(btc, lambda p: p["kind"] == "position_snapshot", since=n)
    await env.venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.010"), client_order_id="t-after-1125")
    t1, o = await wait_for(btc, lambda p: p.get("client_order_id") == "t-after-1125", since=n)
    lags.append(lag_ms(t1, o))
    third_key = await env.venue.new_listen_key()
    assert third_key not in (old_key, new_key)

    # metrics, Redis streams, no secret in the log, the key closed on SIGTERM
    m = await asyncio.to_thread(svc.metrics)
    assert m['user_stream_events_received_total{type="ORDER_TRADE_UPDATE"}'] >= 10
    assert m['user_stream_events_received_total{type="listenKeyExpired"}'] == 1
    assert m['user_stream_catchup_runs_total{result="ok"}'] >= 3
    assert m['user_stream_signals_sent_total{kind="order_update"}'] >= 8
    assert m["user_stream_event_to_signal_seconds_count" + '{kind="order_update"}'] >= 8
    assert sum(v for k, v in m.items() if k.startswith("user_stream_signal_errors_total")) == 0
    assert await env.redis.xlen("quantum:stream:exchange.raw") >= 20
    norm = await env.redis.xrange("quantum:stream:exchange.normalized", count=1)
    assert norm and b"kind" in norm[0][1]
    os.kill(svc.proc.pid, signal.SIGTERM)
    await asyncio.to_thread(svc.proc.popen.wait, 15)  # type: ignore[union-attr]
    with pytest.raises(RejectedError) as closed:
        await env.venue.keepalive_listen_key()
    assert closed.value.code == -1125
    text = svc.proc.log_path.read_text()
    for secret in (env.exchange.api_key, env.exchange.api_secret, old_key, new_key, third_key):
        assert secret not in text
    assert "listenKey closed" in text

    lags.sort()
    print(
        json.dumps(
            {
                "event_to_workflow_ms": {
                    "n": len(lags),
                    "p50": round(statistics.median(lags), 2),
                    "p90": round(lags[int(0.9 * (len(lags) - 1))], 2),
                    "max": round(lags[-1], 2),
                }
            }
        )
    )


async def test_of_two_streams_one_forwards_and_the_other_takes_over_when_it_is_killed(env: Env) -> None:
    """Two copies (as on two machines): one holds the lease and forwards each event once, the other
    stands by; SIGKILLed, the active is replaced once its lease lapses, and the new one catches up with
    a snapshot of what changed while nobody streamed."""
    btc = "pos-two"
    await env.track("BTCUSDT", btc)
    services = [env.start_service(lease_s=1.0), env.start_service(lease_s=1.0)]
    _, p = await wait_for(btc, lambda p: p["kind"] == "position_snapshot", timeout=20)
    assert p["reason"] == "start"
    async with asyncio.timeout(GUARD_S):
        while True:
            try:
                active = [(await asyncio.to_thread(svc.metrics)).get("feed_lease_active") for svc in services]
            except httpx.HTTPError:  # not serving yet
                active = []
            if active.count(1.0) == 1 and active.count(0.0) == 1:  # each has set its gauge: one active
                break
            await asyncio.sleep(0.05)
    first, standby = (services[0], services[1]) if active[0] == 1.0 else (services[1], services[0])
    n = count(btc)
    await env.venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.010"), client_order_id="two-1")
    await wait_for(btc, lambda p: p.get("client_order_id") == "two-1", since=n)
    await wait_for(btc, lambda p: p["kind"] == "account_update", since=n)
    await asyncio.sleep(0.5)  # a second copy forwarding would have signalled by now
    forwarded = [p for _, p in RECEIVED[btc][n:] if p.get("client_order_id") == "two-1"]
    assert len(forwarded) == 1
    os.kill(first.proc.pid, signal.SIGKILL)
    n = count(btc)
    await env.venue.new_order("BTCUSDT", "BUY", "MARKET", D("0.010"), client_order_id="two-2")  # unseen
    await standby.wait_metric("feed_lease_active", 1)
    _, p = await wait_for(btc, lambda p: p["kind"] == "position_snapshot", since=n)
    assert (p["reason"], p["position_amt"]) == ("start", "0.02")  # caught up on the fill nobody streamed
    n = count(btc)
    await env.venue.new_order("BTCUSDT", "SELL", "MARKET", D("0.020"), client_order_id="two-3")
    _, o = await wait_for(btc, lambda p: p.get("client_order_id") == "two-3", since=n)
    assert o["order_status"] == "FILLED"

"""The stream hub in process: a slow consumer is dropped and never stalls the engine's callback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.websockets import WebSocket

from exchange.paper import streams
from exchange.paper.events import Event
from exchange.paper.streams import StreamHub


class FakeSocket:
    """The ASGI side of one WebSocket; `stuck=True` never completes a send (a peer that stops reading)."""

    def __init__(self, path: str, query: str = "", stuck: bool = False) -> None:
        self.scope = {
            "type": "websocket",
            "path": path,
            "query_string": query.encode(),
            "headers": [],
            "subprotocols": [],
        }
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.incoming.put_nowait({"type": "websocket.connect"})
        self.sent: list[Any] = []
        self.closed: int | None = None
        self.stuck = stuck

    async def receive(self) -> dict[str, Any]:
        return await self.incoming.get()

    async def send(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "websocket.send":
            if self.stuck:
                await asyncio.Event().wait()
            self.sent.append(json.loads(msg["text"]))
        elif msg["type"] == "websocket.close":
            self.closed = msg.get("code", 1000)
            self.incoming.put_nowait({"type": "websocket.disconnect", "code": self.closed})

    def websocket(self) -> WebSocket:
        return WebSocket(self.scope, self.receive, self.send)


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_slow_consumer_is_dropped_without_stalling(monkeypatch: Any) -> None:
    monkeypatch.setattr(streams, "MAX_BUFFER", 50)
    hub = StreamHub(lambda key: key == "K" * 64)
    hub.bind_loop()
    slow = FakeSocket("/market/ws/btcusdt@aggTrade", stuck=True)
    fast = FakeSocket("/market/stream", "streams=btcusdt@aggTrade")
    tasks = [asyncio.create_task(hub.serve(s.websocket())) for s in (slow, fast)]
    await _settle()
    assert hub.connection_count == 2
    # Without stalling: publishing never waits on a consumer (on_event returns at once, the stuck one
    # included), and a few loop turns are enough for the fast one to get everything (asserted below).
    for i in range(200):
        hub.on_event(Event("market", {"e": "aggTrade", "a": i}, "btcusdt@aggTrade"))
        if i % 10 == 0:
            await _settle()
    await _settle()
    assert tasks[0].done(), "the stuck connection's handler should have ended"
    assert hub.connection_count == 1
    await _settle()
    assert [m["data"]["a"] for m in fast.sent] == list(range(200))
    assert all(m["stream"] == "btcusdt@aggTrade" for m in fast.sent)
    fast.incoming.put_nowait({"type": "websocket.disconnect", "code": 1000})
    await asyncio.wait_for(tasks[1], 2)
    assert hub.connection_count == 0


async def test_user_events_filter_and_expiry() -> None:
    hub = StreamHub(lambda key: key == "K" * 64)
    hub.bind_loop()
    everything = FakeSocket("/private/ws", "listenKey=" + "K" * 64)
    only_orders = FakeSocket("/private/ws", f"listenKey={'K' * 64}&events=ORDER_TRADE_UPDATE")
    legacy = FakeSocket("/ws/" + "K" * 64)
    bad = FakeSocket("/private/ws", "listenKey=wrong")
    tasks = [asyncio.create_task(hub.serve(s.websocket())) for s in (everything, only_orders, legacy, bad)]
    await _settle()
    assert bad.closed == 1008 and tasks[3].done()
    hub.on_event(Event("user", {"e": "ACCOUNT_UPDATE"}))
    hub.on_event(Event("user", {"e": "ORDER_TRADE_UPDATE"}))
    hub.on_event(Event("user", {"e": "listenKeyExpired", "listenKey": "K" * 64}))
    await asyncio.wait_for(asyncio.gather(*tasks[:3]), 2)
    assert [m["e"] for m in everything.sent] == ["ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE", "listenKeyExpired"]
    assert [m["e"] for m in legacy.sent] == ["ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE", "listenKeyExpired"]
    assert [m["e"] for m in only_orders.sent] == ["ORDER_TRADE_UPDATE", "listenKeyExpired"]
    assert everything.closed == only_orders.closed == legacy.closed == 1000
    assert hub.connection_count == 0


async def test_control_frames() -> None:
    hub = StreamHub(lambda key: False)
    hub.bind_loop()
    sock = FakeSocket("/public/ws")
    task = asyncio.create_task(hub.serve(sock.websocket()))
    for frame in (
        {"method": "SUBSCRIBE", "params": ["btcusdt@bookTicker"], "id": 1},
        {"method": "LIST_SUBSCRIPTIONS", "id": 2},
        {"method": "GET_PROPERTY", "params": ["combined"], "id": 3},
        {"method": "NOPE", "id": 4},
    ):
        sock.incoming.put_nowait({"type": "websocket.receive", "text": json.dumps(frame)})
    sock.incoming.put_nowait({"type": "websocket.receive", "text": "{not json"})
    await _settle()
    hub.on_event(Event("market", {"e": "bookTicker"}, "btcusdt@bookTicker"))
    await _settle()
    assert sock.sent[:3] == [
        {"result": None, "id": 1},
        {"result": ["btcusdt@bookTicker"], "id": 2},
        {"result": False, "id": 3},
    ]
    assert sock.sent[3]["id"] == 4 and sock.sent[3]["error"]["code"] == 2
    assert sock.sent[4]["error"]["code"] == 3
    assert sock.sent[5] == {"e": "bookTicker"}
    hub.drop_all()
    await asyncio.wait_for(task, 2)
    assert sock.closed == 1001

"""What the paper engine tells its streams: one event per user-data or market-stream message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Event:
    """`channel="user"`: a user-data payload (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE, ALGO_UPDATE,
    listenKeyExpired, ...) for every connection holding a valid listenKey.
    `channel="market"`: a market payload for subscribers of `stream`, a Binance stream name in
    lower case such as `btcusdt@markPrice@1s`, `btcusdt@aggTrade`, `btcusdt@kline_1m`,
    `btcusdt@bookTicker`."""

    channel: Literal["user", "market"]
    payload: dict[str, Any]
    stream: str = ""
    extra_streams: tuple[str, ...] = field(default=())


Listener = Callable[[Event], None]

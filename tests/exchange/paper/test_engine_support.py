"""Helpers for the in-process paper engine tests: an injectable clock and an engine factory."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange.paper.config import PaperConfig
from exchange.paper.engine import PaperEngine
from exchange.paper.errors import ApiError
from exchange.paper.events import Event
from exchange.paper.prices import ManualPrices, PriceSource

# 2023-11-14 22:13:20 UTC: the next funding time is 2023-11-15 00:00 UTC.
T0 = 1_700_000_000_000
NEXT_FUNDING = 1_700_006_400_000
D = Decimal


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms

    def tick(self, ms: int) -> None:
        self.ms += ms


class Harness:
    """One engine on manual prices, a clock, and every event it emitted."""

    def __init__(self, tmp: Path | None = None, prices: PriceSource | None = None, **cfg: Any) -> None:
        self.clock = Clock()
        self.config = PaperConfig(api_key="k", api_secret="s", clock=self.clock, **cfg)
        self.prices = prices or ManualPrices(["BTCUSDT", "ETHUSDT"])
        self.path = tmp / "paper.sqlite" if tmp is not None else None
        self.engine = PaperEngine(self.config, self.prices, self.path)
        self.events: list[Event] = []
        self.engine.add_listener(self.events.append)

    def user(self, kind: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events if e.channel == "user" and e.payload.get("e") == kind]

    def market(self, suffix: str) -> list[Event]:
        return [e for e in self.events if e.channel == "market" and e.stream.endswith(suffix)]

    def market_buy(self, qty: str, symbol: str = "BTCUSDT", **extra: str) -> dict[str, Any]:
        return self.engine.new_order(
            {
                "symbol": symbol,
                "side": "BUY",
                "type": "MARKET",
                "quantity": qty,
                "newOrderRespType": "RESULT",
                **extra,
            }
        )

    def market_sell(self, qty: str, symbol: str = "BTCUSDT", **extra: str) -> dict[str, Any]:
        return self.engine.new_order(
            {
                "symbol": symbol,
                "side": "SELL",
                "type": "MARKET",
                "quantity": qty,
                "newOrderRespType": "RESULT",
                **extra,
            }
        )

    def position(self, symbol: str = "BTCUSDT") -> dict[str, Any]:
        return next(p for p in self.engine.position_risk({"symbol": symbol}, 2))

    def wallet(self) -> Decimal:
        return Decimal(self.engine.balance({}, 3)[0]["balance"])


def api_error(fn: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value

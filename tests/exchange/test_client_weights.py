"""Weight / order-count pacing with an injected clock: it slows down before the limit, not after a 429."""

from __future__ import annotations

import pytest

from exchange.errors import IpBannedError, RateLimitedError
from exchange.weights import WeightTracker, klines_weight, request_weight


class FakeTime:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def tracker(t: FakeTime, **kw: object) -> WeightTracker:
    return WeightTracker(kw.pop("limit", 100), kw.pop("headroom", 80.0), clock=t.clock, sleep=t.sleep, **kw)  # type: ignore[arg-type]


def test_endpoint_weights_follow_the_notes() -> None:
    assert request_weight("POST", "/fapi/v1/order") == 0
    assert request_weight("GET", "/fapi/v1/order") == 1
    assert request_weight("GET", "/fapi/v1/openOrders", {"symbol": "BTCUSDT"}) == 1
    assert request_weight("GET", "/fapi/v1/openOrders", {"symbol": None}) == 40
    assert request_weight("GET", "/fapi/v1/openAlgoOrders") == 40
    assert request_weight("GET", "/fapi/v3/positionRisk") == 5
    assert request_weight("GET", "/fapi/v3/account") == 5
    assert request_weight("GET", "/fapi/v1/userTrades", {"symbol": "X"}) == 5
    assert request_weight("GET", "/fapi/v1/income") == 30
    assert request_weight("GET", "/fapi/v1/premiumIndex", {"symbol": "X"}) == 1
    assert request_weight("GET", "/fapi/v1/premiumIndex") == 10
    limits = (None, 99, 100, 499, 500, 1000, 1001, 1500)
    assert [klines_weight(n) for n in limits] == [5, 1, 2, 2, 5, 5, 10, 10]
    assert request_weight("GET", "/fapi/v1/klines", {"limit": 1500}) == 10


async def test_sleeps_before_crossing_the_headroom_then_resumes_in_the_next_minute() -> None:
    t = FakeTime(start=1_700_000_000.0)  # 20 s into a minute (1_700_000_000 % 60 == 20)
    w = tracker(t)  # budget: 80 of 100
    for _ in range(16):
        await w.acquire(5)
    assert w.used_weight_1m == 80 and t.sleeps == []
    await w.acquire(5)  # 85 > 80: wait for the minute to turn *before* sending
    assert len(t.sleeps) == 1 and t.sleeps[0] == pytest.approx(40.0, abs=0.01)
    assert w.used_weight_1m == 5
    assert w.snapshot()["pauses"] == 1


async def test_venue_header_figures_drive_the_pacing() -> None:
    t = FakeTime(start=1_700_000_010.0)  # 30 s into a minute
    w = tracker(t)
    w.update({"x-mbx-used-weight-1m": "79"})
    assert w.used_weight_1m == 79
    await w.acquire(1)  # 80: still inside the budget
    assert t.sleeps == []
    w.update({"x-mbx-used-weight-1m": "78"})  # a late answer never lowers the count within the window
    assert w.used_weight_1m == 80
    await w.acquire(1)
    assert t.sleeps and t.sleeps[0] == pytest.approx(30.0, abs=0.01)


async def test_order_counters_pace_on_the_10s_window() -> None:
    t = FakeTime(start=1_700_000_003.0)  # 3 s into a 10 s window
    w = WeightTracker(2400, 80.0, order_limit_10s=10, order_limit_1m=1200, clock=t.clock, sleep=t.sleep)
    w.update({"x-mbx-order-count-10s": "8", "x-mbx-order-count-1m": "8"})
    await w.acquire(0, orders=1)  # 9 > 8 = 80 % of 10
    assert t.sleeps and t.sleeps[0] == pytest.approx(7.0, abs=0.01)
    assert w.order_count_10s == 1 and w.order_count_1m == 9


async def test_retry_after_blocks_sending_and_long_blocks_refuse() -> None:
    t = FakeTime()
    w = tracker(t, max_wait_s=30.0)
    w.block(2.0)
    await w.acquire(1)
    assert t.sleeps == [pytest.approx(2.005)]
    w.block(120.0)
    with pytest.raises(RateLimitedError) as info:
        await w.acquire(1)
    assert info.value.retry_after_s == pytest.approx(120.0)
    t.now += 121
    await w.acquire(1)


async def test_ban_refuses_until_it_ends() -> None:
    t = FakeTime()
    w = tracker(t)
    w.block(5.0, banned=True)
    with pytest.raises(IpBannedError):
        await w.acquire(1)
    assert w.snapshot()["banned"] is True
    t.now += 6
    await w.acquire(1)
    assert w.snapshot()["banned"] is False


async def test_a_single_heavy_request_in_an_empty_window_is_not_blocked_forever() -> None:
    t = FakeTime()
    w = tracker(t, limit=10)
    await w.acquire(30)
    assert t.sleeps == []

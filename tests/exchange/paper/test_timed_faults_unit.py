"""The timed faults' bookkeeping in process, on an explicit clock: windows, bans, late orders, splits."""

from __future__ import annotations

from decimal import Decimal

import pytest

from exchange.paper.faults import FaultConfigError, Faults
from exchange.paper.split_fills import plan_split

T = 1_700_000_000_000
D = Decimal


def test_outage_windows_open_together_and_end_by_themselves() -> None:
    f = Faults()
    f.update({"outage": {"paths": ["/fapi/v1/order"], "mode": "hang", "seconds": 2}}, T)
    f.update({"outage": [{"mode": "refuse", "seconds": 5}, {"paths": "/fapi/v2", "seconds": 1}]}, T + 500)
    assert f.armed and [w["mode"] for w in f.snapshot(T + 500)["outage"]] == ["hang", "refuse", "5xx"]
    block = f.gate("/fapi/v1/order", "1.2.3.4", T + 600)
    assert block is not None and (block.kind, block.drop) == ("outage_hang", True)  # the oldest decides
    assert block.outage is not None and f.outages.is_open(block.outage, T + 1999)
    assert not f.outages.is_open(block.outage, T + 2000)
    block = f.gate("/fapi/v2/account", "1.2.3.4", T + 1000)  # refuse is older than the /fapi/v2 one
    assert block is not None and block.kind == "outage_refuse"
    block = f.gate("/fapi/v1/order", "1.2.3.4", T + 2000)  # the hang window is over
    assert block is not None and block.kind == "outage_refuse"
    assert f.gate("/fapi/v1/time", "1.2.3.4", T + 5500) is None  # all over
    assert not f.armed and f.snapshot(T + 5500)["outage"] == []
    assert f.fired == {"outage_hang": 1, "outage_refuse": 2}


def test_outage_5xx_answer_and_clearing_releases_held_requests() -> None:
    f = Faults()
    f.update({"outage": {"seconds": 10}}, T)
    block = f.gate("/fapi/v1/klines", "1.2.3.4", T + 1)
    assert block is not None and (block.status, block.code, block.msg, block.drop) == (
        503,
        -1001,
        "Service Unavailable.",
        False,
    )
    f.update({"outage": {"mode": "hang", "seconds": 10}}, T)
    held = f.outages.windows[-1]
    f.update({"outage": None}, T + 2)  # null closes every window
    assert not f.outages.is_open(held, T + 3) and not f.armed


def test_ban_at_counts_matching_requests_and_bans_that_ip_only() -> None:
    f = Faults()
    f.update({"ban_at": {"path": "/fapi/v1/userTrades", "after": 2, "seconds": 10}}, T)
    for _ in range(2):
        assert f.gate("/fapi/v1/userTrades", "1.1.1.1", T) is None
    assert f.gate("/fapi/v1/time", "1.1.1.1", T) is None  # not counted
    block = f.gate("/fapi/v1/userTrades", "1.1.1.1", T + 100)
    assert block is not None and (block.kind, block.status, block.code, block.retry_after_s) == (
        "ban",
        418,
        -1003,
        10,
    )
    assert f"IP(1.1.1.1) banned until {T + 10_100}" in block.msg
    late = f.gate("/fapi/v1/time", "1.1.1.1", T + 9_001)
    assert late is not None and late.retry_after_s == 2  # rounded up
    assert f.gate("/fapi/v1/time", "2.2.2.2", T + 200) is None  # another IP
    assert f.gate("/fapi/v1/userTrades", "2.2.2.2", T + 200) is None  # the trigger fired once
    assert f.gate("/fapi/v1/time", "1.1.1.1", T + 10_100) is None  # over
    assert not f.armed


def test_late_orders_wait_their_turn_and_count_down() -> None:
    f = Faults()
    f.update({"late_execution": {"delay_s": 1, "count": 2, "answer": "timeout", "hang_s": 4}}, T)
    assert f.hold_back({"newClientOrderId": "a", "symbol": "BTCUSDT"}, T) == ("timeout", 4.0)
    assert f.snapshot(T)["late_execution"]["count"] == 1
    assert f.hold_back({"newClientOrderId": "b", "symbol": "BTCUSDT"}, T + 10) == ("timeout", 4.0)
    assert f.late.config is None and f.hold_back({"newClientOrderId": "c"}, T + 20) is None
    assert [o["clientOrderId"] for o in f.snapshot(T + 20)["late_pending"]] == ["a", "b"]
    assert f.late.due(T + 999) == []
    assert [p["newClientOrderId"] for p in f.late.due(T + 1000)] == ["a"]
    assert [p["newClientOrderId"] for p in f.late.due(T + 5000)] == ["b"]
    assert f.snapshot(T + 5000)["active"] is False


def test_rate_fault_count_leaves_the_timed_faults_alone() -> None:
    f = Faults()
    f.update({"http_5xx_rate": 1, "count": 1, "partial_fills": {"pieces": 2}, "outage": {"seconds": 9}}, T)
    assert f.decide("/fapi/v1/time", False, T) is not None
    assert not f.active  # the rate faults are used up...
    shown = f.snapshot(T)
    assert shown["partial_fills"] == {"pieces": 2, "interval_s": 0.5, "count": 1} and shown["outage"]
    assert shown["active"] is True  # ...the timed ones are not
    assert f.take_split() is not None and f.partial is None
    f.clear(T)
    assert f.snapshot(T)["active"] is False and f.fired == {}


def test_a_refused_update_changes_nothing() -> None:
    f = Faults()
    with pytest.raises(FaultConfigError, match=r"late_execution\.answer"):
        f.update(
            {"latency_ms": 10, "outage": {"seconds": 1}, "late_execution": {"delay_s": 1, "answer": "x"}}, T
        )
    shown = f.snapshot(T)
    assert shown["latency_ms"] == 0 and shown["outage"] == [] and shown["active"] is False


@pytest.mark.parametrize(
    ("qty", "pieces", "parts"),
    [
        ("0.010", 3, ["0.003", "0.003", "0.004"]),
        ("0.009", 3, ["0.003", "0.003", "0.003"]),
        ("1.000", 4, ["0.250", "0.250", "0.250", "0.250"]),
        ("0.002", 5, ["0.001", "0.001"]),  # too few steps for five parts
    ],
)
def test_split_plans_are_step_rounded_equal_parts(qty: str, pieces: int, parts: list[str]) -> None:
    plan = plan_split(D(qty), pieces, D("0.001"), T, 500)
    assert plan is not None
    got = [plan.piece]
    due = []
    while not plan.done:
        due.append(plan.next_ms)
        got.append(plan.take())
    assert [str(q) for q in got] == parts and sum(got) == D(qty)
    assert due == [T + 500 * i for i in range(1, len(parts))]


def test_an_order_of_one_step_is_not_split() -> None:
    assert plan_split(D("0.001"), 3, D("0.001"), T, 500) is None

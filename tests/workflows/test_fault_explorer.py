"""The seeded fault explorer (`python -m bench.faults`): its schedules are a pure function of the seed,
each invariant checker flags a violation planted in a fabricated venue record, and a short run on
fixed seeds against the real processes finds no violation."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from decimal import Decimal

import pytest

from bench.faults_drive import FaultLog
from bench.faults_invariants import (
    Bounds,
    FinishedPosition,
    Monitor,
    Sample,
    TemporalSnapshot,
    VenueSnapshot,
    duplicate_client_ids,
    entries_per_workflow,
    live_stops,
    nondeterminism,
    over_limit,
    pnl_mismatch,
    positions_from_orders,
    unfinished,
    unmanaged,
    unprotected,
)
from bench.faults_schedule import VENUE_KINDS, DrawConfig, Schedule, draw_schedule
from bench.faults_stack import venue_fault
from tests.conftest import REPO
from trading.pnl import Fill

D = Decimal
BOUNDS = Bounds(limit=3, unmanaged_s=10.0, unprotected_s=3.0, slots_s=2.0)


# ---------------------------------------------------------------- fabricated venue records
def order(cid: str, symbol: str, side: str, qty: str, *, oid: int, reduce: bool = False) -> dict:
    return {
        "clientOrderId": cid,
        "orderId": oid,
        "symbol": symbol,
        "side": side,
        "executedQty": qty,
        "reduceOnly": reduce,
        "status": "FILLED" if D(qty) else "NEW",
    }


def algo(cid: str, symbol: str, *, status: str = "NEW", child: int | None = None) -> dict:
    return {
        "clientAlgoId": cid,
        "symbol": symbol,
        "algoStatus": status,
        "reduceOnly": True,
        "closePosition": False,
        "actualOrderId": str(child) if child is not None else "",
    }


def trade(tid: int, oid: int, symbol: str, side: str, price: str, qty: str, fee: str) -> dict:
    return {
        "id": tid,
        "orderId": oid,
        "symbol": symbol,
        "side": side,
        "price": price,
        "qty": qty,
        "commission": fee,
        "time": 1_000 + tid,
    }


def fill(cid: str, side: str, price: str, qty: str, fee: str, *, oid: int, tid: int) -> Fill:
    return Fill(
        client_order_id=cid,
        side=side,
        price=D(price),
        qty=D(qty),
        fee=D(fee),
        order_id=oid,
        trade_id=tid,
        time_ms=1_000 + tid,
    )  # type: ignore[arg-type]


# ---------------------------------------------------------------- schedules
def test_the_schedule_is_a_pure_function_of_the_seed() -> None:
    cfg = DrawConfig()
    assert draw_schedule(7, cfg) == draw_schedule(7, cfg)
    assert draw_schedule(7, cfg).dumps() == draw_schedule(7, cfg).dumps()
    assert draw_schedule(7, cfg) != draw_schedule(8, cfg)
    again = Schedule.from_json(json.loads(draw_schedule(7, cfg).dumps()))
    assert again == draw_schedule(7, cfg)  # what a failing seed prints replays as it was


def test_schedules_stay_in_their_window_and_the_venue_holds_one_fault_at_a_time() -> None:
    cfg = DrawConfig(time_factor=0.1, window_s=20.0)
    kinds: set[str] = set()
    for seed in range(1, 150):
        s = draw_schedule(seed, cfg)
        assert 6 <= len(s.lifecycles) <= 12 and s.time_factor == 0.1
        assert all(0 <= lc.start_s <= lc.end_s <= cfg.window_s for lc in s.lifecycles)
        venue = sorted((e for e in s.events if e.kind in VENUE_KINDS), key=lambda e: e.at_s)
        assert all(a.end_s <= b.at_s for a, b in itertools.pairwise(venue))
        assert all(e.duration_s <= 120 * cfg.time_factor + 1e-9 for e in s.events if e.kind == "outage")
        kinds |= {e.label for e in s.events}
        kinds |= {f"end:{lc.end}" for lc in s.lifecycles}
        kinds |= {"continue_as_new"} if any(lc.max_history_events for lc in s.lifecycles) else set()
    expected = {
        "kill:lifecycle",
        "kill:exchange",
        "kill:user-stream",
        "kill:watcher",
        "temporal_restart",
        "redis_outage",
        "ban",
        "rate_limit",
        "late_execution",
        "partial_fills",
        "outage:5xx",
        "outage:refuse",
        "outage:hang",
        "lost_answers:503",
        "lost_answers:timeout",
        "flatten",
        "kill_switch",
        "price_gap",
        "end:close",
        "end:partial_close",
        "end:cancel",
        "end:hold",
        "continue_as_new",
    }
    assert expected <= kinds, expected - kinds


def test_a_venue_fault_uses_the_venues_own_key_or_the_nearest_one_it_has() -> None:
    s = draw_schedule(3)
    outage = next(e for seed in range(1, 60) for e in draw_schedule(seed).events if e.kind == "outage")
    native = venue_fault(outage, {"outage"}, 2.0)
    assert native.config is not None and native.config["outage"]["mode"] == outage.params["mode"]
    old = venue_fault(outage, set(), 2.0)
    assert old.config is not None and old.config["http_5xx_rate"] == 1.0
    split = next(e for seed in range(1, 60) for e in draw_schedule(seed).events if e.kind == "partial_fills")
    assert venue_fault(split, set(), 2.0).config is None  # skipped on a venue without it
    assert s.seed == 3


def test_a_late_execution_is_disarmed_not_cleared_so_held_orders_still_execute() -> None:
    late = next(e for seed in range(1, 60) for e in draw_schedule(seed).events if e.kind == "late_execution")
    fault = venue_fault(late, {"late_execution"}, 2.0)
    assert fault.config is not None and fault.config["late_execution"]["delay_s"] >= 2.5  # past the timeout
    assert fault.disarm == {"late_execution": None} and fault.tail_s >= 2.5


def test_fault_log_excuses_only_while_a_fault_is_on_and_from_its_end() -> None:
    log = FaultLog()
    i = log.begin("outage:5xx", 1.0)
    assert log.quiet_since(2.0) == 2.0 and log.active(2.0)
    log.end(i, 4.0)
    assert log.quiet_since(5.0) == 4.0 and not log.active(5.0)
    log.begin("kill:watcher", 6.0)  # a dead watcher excuses nothing
    assert log.quiet_since(7.0) == 4.0 and log.active(7.0)


def test_a_fault_that_can_lose_an_activity_excuses_for_one_activity_timeout_more() -> None:
    log = FaultLog(activity_timeout_s=30.0)
    log.end(log.begin("kill:exchange", 1.0), 3.0)
    assert not log.active(4.0)  # recoveries are timed from the end of the fault itself
    assert log.quiet_since(20.0) == 20.0 and log.quiet_since(40.0) == 33.0


# ---------------------------------------------------------------- each checker flags a planted violation
def test_more_open_positions_than_the_limit_is_flagged() -> None:
    orders = [order(f"w{i}.entry", f"S{i}USDT", "BUY", "1", oid=i) for i in range(4)]
    assert over_limit(positions_from_orders(orders), 3) is not None
    assert over_limit(positions_from_orders(orders[:3]), 3) is None
    closed = [*orders, order("w3.x1", "S3USDT", "SELL", "1", oid=9, reduce=True)]
    assert over_limit(positions_from_orders(closed), 3) is None


def test_a_client_id_recorded_twice_is_flagged_but_a_fired_stop_is_one_order() -> None:
    orders = [order("w1.entry", "AUSDT", "BUY", "1", oid=1), order("w1.entry", "AUSDT", "BUY", "1", oid=2)]
    assert duplicate_client_ids(orders, []) == {"w1.entry": 2}
    fired = [order("w1.entry", "AUSDT", "BUY", "1", oid=1), order("w1.hstop1", "AUSDT", "SELL", "1", oid=3)]
    assert duplicate_client_ids(fired, [algo("w1.hstop1", "AUSDT", status="FINISHED", child=3)]) == {}


def test_a_position_entered_twice_is_flagged() -> None:
    orders = [
        order("fx1-00.entry", "AUSDT", "BUY", "1", oid=1),
        order("fx1-00.x1", "AUSDT", "BUY", "1", oid=2),  # not reduce-only: adds to the position
        order("fx1-01.entry", "BUSDT", "SELL", "1", oid=3),
        order("fx1-01.x1", "BUSDT", "BUY", "1", oid=4, reduce=True),
    ]
    assert entries_per_workflow(orders, {"fx1-00": "LONG", "fx1-01": "SHORT"}) == {"fx1-00": 2}


def test_exposure_without_a_running_workflow_or_a_live_stop_is_found() -> None:
    pos = positions_from_orders([order("w.entry", "AUSDT", "BUY", "1", oid=1)])
    assert unmanaged(pos, ["BUSDT"]) == {"AUSDT"} and unmanaged(pos, ["AUSDT"]) == set()
    assert unprotected(pos, live_stops([algo("w.hstop1", "AUSDT", status="CANCELED")])) == {"AUSDT"}
    assert unprotected(pos, live_stops([algo("w.hstop2", "AUSDT")])) == set()


def _sample(t: float, *, running: dict[str, str], slots: int, stops: int = 1, quiet: float = 0.0) -> Sample:
    venue = VenueSnapshot({"AUSDT": D(1)}, {"AUSDT": stops} if stops else {})
    quiet_since = dict.fromkeys(("unmanaged_exposure", "unprotected_exposure", "slots_mismatch"), quiet)
    return Sample(t, venue, TemporalSnapshot(running, slots), quiet_since=quiet_since)


def test_the_monitor_flags_unmanaged_exposure_once_it_outlasts_the_bound() -> None:
    m = Monitor(1, BOUNDS)
    for t in range(0, 12):
        m.feed(_sample(float(t), running={}, slots=1))
    assert [v.invariant for v in m.violations] == ["unmanaged_exposure"]
    assert m.max_unmanaged_s == 11.0


def test_the_monitor_counts_from_the_end_of_an_excusing_fault() -> None:
    m = Monitor(1, BOUNDS)
    for t in range(0, 12):
        m.feed(_sample(float(t), running={}, slots=1, quiet=min(float(t), 5.0)))  # a fault until 5 s
    assert m.violations == []  # 11 - 5 = 6 s < 10 s
    assert m.max_unmanaged_s == 11.0 and m.timers["unmanaged_exposure"].max_quiet == 6.0
    m.feed(_sample(16.0, running={}, slots=1, quiet=5.0))
    assert [v.invariant for v in m.violations] == ["unmanaged_exposure"]


def test_the_monitor_flags_a_missing_stop_and_a_slot_count_that_does_not_settle() -> None:
    m = Monitor(1, BOUNDS)
    for t in (0.0, 1.0, 2.0, 3.5):
        m.feed(_sample(t, running={"w": "AUSDT"}, slots=2, stops=0))
    assert sorted(v.invariant for v in m.violations) == ["slots_mismatch", "unprotected_exposure"]


def test_the_monitor_flags_a_close_that_is_not_carried_out() -> None:
    m = Monitor(1, BOUNDS)
    for t in range(0, 12):
        s = _sample(float(t), running={"w": "AUSDT"}, slots=1)
        m.feed(Sample(s.t, s.venue, s.temporal, quiet_since=s.quiet_since, exits={"w": "AUSDT"}))
    assert [v.invariant for v in m.violations] == ["exit_not_carried_out"]


def test_the_monitor_flags_more_positions_than_the_limit_at_once() -> None:
    m = Monitor(1, BOUNDS)
    venue = VenueSnapshot({f"S{i}USDT": D(1) for i in range(4)}, {f"S{i}USDT": 1 for i in range(4)})
    m.feed(Sample(0.0, venue, None))
    assert [v.invariant for v in m.violations] == ["max_open_positions"]


def test_a_recovery_is_the_time_from_the_faults_clearing_to_a_clean_sample() -> None:
    m = Monitor(1, BOUNDS)
    m.faults_cleared(10.0)
    m.feed(_sample(11.0, running={}, slots=1))  # unmanaged: not clean
    m.feed(_sample(12.5, running={"w": "AUSDT"}, slots=1))
    assert m.recoveries == [2.5]


def test_a_pnl_that_differs_from_the_venues_trades_is_flagged() -> None:
    orders = [
        order("fx1-00.entry", "AUSDT", "BUY", "1", oid=1),
        order("fx1-00.x1", "AUSDT", "SELL", "1", oid=2, reduce=True),
    ]
    trades = [
        trade(10, 1, "AUSDT", "BUY", "100", "1", "0.04"),
        trade(11, 2, "AUSDT", "SELL", "110", "1", "0.044"),
    ]
    right = [
        fill("fx1-00.entry", "BUY", "100", "1", "0.04", oid=1, tid=10),
        fill("fx1-00.x1", "SELL", "110", "1", "0.044", oid=2, tid=11),
    ]
    pos = FinishedPosition("fx1-00", "AUSDT", "LONG", right)
    assert pnl_mismatch(pos, orders, trades) is None
    wrong = [right[0], fill("fx1-00.x1", "SELL", "111", "1", "0.044", oid=2, tid=11)]
    assert pnl_mismatch(FinishedPosition("fx1-00", "AUSDT", "LONG", wrong), orders, trades) is not None
    missed = [*trades, trade(12, 3, "AUSDT", "BUY", "100", "1", "0.04")]  # a second entry it never saw
    orders3 = [*orders, order("fx1-00.x2", "AUSDT", "BUY", "1", oid=3)]
    assert pnl_mismatch(pos, orders3, missed) is not None


def test_nondeterminism_in_a_worker_log_and_an_unfinished_workflow_are_flagged() -> None:
    text = "fine\nWorkflow task failed: Nondeterminism error: [TMPRL1100] something\nfine"
    assert len(nondeterminism(text)) == 1 and nondeterminism("all good") == []
    assert unfinished({"a": "COMPLETED", "b": "RUNNING", "c": "CANCELED"}) == ["b"]


# ---------------------------------------------------------------- the explorer against real processes
SEEDS = ["--seed", "9", "--seed", "10"]  # between them: every service killed but the watcher, an outage,
# lost answers, a late execution, a Temporal restart, a flatten, a price gap, a cancel and a partial close
SMALL = [
    "--window",
    "10",
    "--lifecycles",
    "4",
    "6",
    "--sample",
    "0.5",
    "--drain",
    "40",
    "--seed-cap",
    "80",
    "--budget",
    "170",
]


@pytest.mark.timeout(240)
def test_the_explorer_finds_no_violation_on_fixed_seeds(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.faults", *SEEDS, *SMALL, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=230,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["seeds"] == 2 and out["lifecycles"] > 0 and out["floor_lifecycle_s"] > 0, out
    assert sum(out["faults"].values()) > 0
    assert out["violations"] == 0, (out["violation_list"], proc.stderr[-3000:])
    assert proc.returncode == 0


def test_slots_are_checked_between_exposure_and_running_holders() -> None:
    from bench.faults_invariants import slot_mismatch

    assert slot_mismatch(1, set(), {"w": "AUSDT"}) == set()  # still entering: holds its slot
    assert slot_mismatch(1, {"AUSDT"}, {}) == set()  # died exposed: keeps its slot until adopted
    assert slot_mismatch(1, {"AUSDT", "BUSDT"}, {"w": "AUSDT", "v": "BUSDT"})  # the limit could be passed
    assert slot_mismatch(2, {"AUSDT"}, {"w": "AUSDT"})  # a slot with no holder: leaked

"""The collector's pauses are measured where an operator sees them: on the worker's Prometheus endpoint
(the Temporal runtime's), by generation, and in its log when one is long (a full collection over 5,000
cached workflows stopped the lifecycle worker for about 1.4 s)."""

from __future__ import annotations

import gc
import logging
import urllib.request
import weakref
from collections.abc import Iterator

import pytest
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from workers.gc_pauses import Freezer, GcPauses
from workers.processes import free_port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_full_collections_are_on_the_runtimes_metrics_endpoint() -> None:
    port = free_port()
    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}", durations_as_seconds=True)
        )
    )
    pauses = GcPauses(runtime.metric_meter)
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.remove()
    text = scrape(port)
    counts = {
        line.split("{")[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("quantum_gc_pause_seconds_count")
    }
    assert any('generation="2"' in labels and n >= 1 for labels, n in counts.items()), text
    assert any('generation="0"' in labels and n >= 1 for labels, n in counts.items()), text
    assert pauses.longest_s > 0


def test_a_long_pause_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    pauses = GcPauses(warn_s=0.0, name="the test worker")
    try:
        with caplog.at_level(logging.WARNING, logger="workers.gc_pauses"):
            gc.collect()
    finally:
        pauses.remove()
    assert pauses.long_pauses >= 1
    assert any(
        "gc paused the test worker" in r.getMessage() and "generation 2" in r.getMessage()
        for r in caplog.records
    )


def test_removed_it_measures_nothing_more() -> None:
    pauses = GcPauses()
    pauses.remove()
    gc.collect()
    assert pauses.longest_s == 0.0
    assert pauses._on_gc not in gc.callbacks


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def freezer() -> Iterator[Freezer]:
    yield Freezer(growth=0.25)
    gc.unfreeze()  # the rest of the suite runs with Python's own collector


def test_frozen_objects_are_out_of_the_collectors_sight(freezer: Freezer) -> None:
    assert freezer.step() is True  # the first step is a full pass
    node = Node()
    ref = weakref.ref(node)
    assert freezer.step() is False
    del node
    gc.collect()
    assert ref() is not None  # a frozen cycle that died waits for a full pass (the price of freezing)


def test_a_full_pass_reclaims_dead_frozen_cycles_once_a_quarter_more_is_frozen(freezer: Freezer) -> None:
    freezer.step()
    node = Node()
    ref = weakref.ref(node)
    freezer.step()
    del node
    ballast = [[] for _ in range(int(gc.get_freeze_count() * 0.3))]  # a third more survives
    assert freezer.step() is False  # frozen now: the next step sees the growth
    assert ref() is not None
    assert freezer.step() is True
    assert ref() is None
    assert freezer.full_passes == 2
    assert len(ballast) > 0


def test_young_garbage_is_collected_before_it_is_frozen(freezer: Freezer) -> None:
    freezer.step()
    node = Node()
    ref = weakref.ref(node)
    del node
    freezer.step()  # not a full pass, but the cycle was not frozen yet
    assert ref() is None


def test_what_was_frozen_and_freed_since_forces_no_full_pass(freezer: Freezer) -> None:
    freezer.step()
    ballast = [[] for _ in range(int(gc.get_freeze_count() * 0.3))]
    freezer.step()  # frozen: a third more, by the steps' count
    del ballast  # freed by reference counting, frozen or not
    assert freezer.step() is False  # the exact count finds no growth: no full pass (about 1 s at 5,000 open)
    assert freezer.full_passes == 1

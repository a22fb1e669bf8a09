"""How long Python's cyclic garbage collector stops a worker, and a way to make its full passes cheap.

A lifecycle worker caches every open position's workflow: at 5,000 that is about 1 GB of Python
objects, and a full (generation 2) collection walks all of them while holding the GIL. Everything in
the process waits meanwhile: bench.scale's slowest exits spent about 1.4 s inside one workflow task
with nothing else in their way.

`GcPauses` times every collection (`quantum_gc_pause_seconds` by generation, through the Temporal
runtime's meter) and logs each pause of `warn_s` or more.

`Freezer` moves the objects that have survived a collection out of the collector's sight
(`gc.freeze()`), so that its passes walk only what is newer. At 5,000 open positions, without it, four
pauses of 100 ms or more (up to 1.16 s) fell in 45 s of bench.scale's exits. What it costs and
bounds: its docstring.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class GcPauses:
    """Times the collector's passes (install once per process; `remove()` takes the callback out)."""

    def __init__(self, meter: Any | None = None, *, warn_s: float = 0.1, name: str = "") -> None:
        self.warn_s = warn_s
        self.name = name
        self.longest_s = 0.0
        self.long_pauses = 0
        self._started = 0.0
        self._histogram = (
            meter.create_histogram_float(
                "quantum_gc_pause_seconds", "Python garbage collector pauses by generation", "s"
            )
            if meter is not None
            else None
        )
        gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        paused = time.perf_counter() - self._started
        generation = info.get("generation", -1)
        if self._histogram is not None:
            self._histogram.record(paused, {"generation": str(generation)})
        self.longest_s = max(self.longest_s, paused)
        if paused >= self.warn_s:
            self.long_pauses += 1
            log.warning(
                "gc paused %s %.0f ms: generation %d, %d collected",
                self.name or "the process",
                paused * 1000,
                generation,
                info.get("collected", 0),
            )


class Freezer:
    """Keeps the long-lived heap out of the collector's full passes.

    Each `step()` collects what is not frozen (cheap: only what is new since the last step) and freezes
    what survived. Frozen objects are still freed by reference counting; a cycle among them that dies
    (a closed position's workflow, evicted from the cache) waits for a full pass: one unfreeze and
    collection of everything, taken once the steps since the last have frozen `growth` times what it
    left (the same rule as Python's own: a full pass once a quarter more has survived), so the garbage
    waiting is bounded by that share of the heap."""

    def __init__(self, growth: float = 0.25) -> None:
        self.growth = growth
        self.full_passes = 0
        self._left = -1  # objects the last full pass left (none yet: the first step is one)
        self._frozen_since = 0  # objects frozen by the steps since

    def step(self) -> bool:
        """One step; True when it was a full pass."""
        full = self._left < 0 or (
            self._frozen_since > self.growth * self._left and self._exact_growth() > self.growth * self._left
        )
        if full:
            gc.unfreeze()
        gc.collect()
        survivors = len(gc.get_objects(2))  # all of them after a full pass, else the new ones
        gc.freeze()
        if full:
            self.full_passes += 1
            log.info("gc full pass %d: %d objects frozen, %d before", self.full_passes, survivors, self._left)
            self._left, self._frozen_since = survivors, 0
        else:
            self._frozen_since += survivors
        return full

    def _exact_growth(self) -> int:
        """What the frozen objects grew by since the last full pass. The steps' sum is an upper bound
        (much of what they froze was freed since by reference counting) and costs nothing; this count
        walks every frozen object, so it is taken only when that bound is past the threshold, and it
        becomes the new bound."""
        self._frozen_since = max(0, gc.get_freeze_count() - self._left)
        return self._frozen_since

    async def run(self, every_s: float) -> None:
        """`step()` every `every_s` seconds until cancelled; unfreezes when it ends."""
        try:
            while True:
                await asyncio.sleep(every_s)
                self.step()
        finally:
            gc.unfreeze()

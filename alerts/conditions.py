"""Conditions the notifier watches itself (pure: the caller reads Temporal and the clock).

**A worker down.** Temporal lists, per task queue, the pollers it saw in the last few minutes with the
time of each one's latest poll. A live worker polls again at least once a minute (an idle poll waits
about a minute on the server before it is answered empty), so a queue is `UP` while some poller polled
within `stale_s`, `DOWN` when pollers are known but none polled that recently, and `ABSENT` when none
is known at all (never started, or gone for longer than the server remembers). The state last told is
kept in Redis, so a restart of the notifier neither repeats an alert nor misses a worker that died
while it was away.

**The daily summary.** The summary of UTC day D is due at D+1 plus the configured time of day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from alerts.events import Kind

__all__ = [
    "DAY_MS",
    "Health",
    "Poller",
    "consequence",
    "latest_due_day",
    "queue_health",
    "step",
    "summary_offset_ms",
]

DAY_MS = 86_400_000


class Health(StrEnum):
    UP = "up"
    DOWN = "down"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class Poller:
    identity: str
    last_access_ms: int


def queue_health(pollers: Sequence[Poller], now_ms: int, stale_s: float) -> Health:
    if not pollers:
        return Health.ABSENT
    if any(now_ms - p.last_access_ms <= stale_s * 1000 for p in pollers):
        return Health.UP
    return Health.DOWN


def step(
    stored: Health | None, observed: Health, *, absent_for_s: float = 0.0, stale_s: float = 0.0
) -> tuple[Health, Kind | None]:
    """The state to keep and the alert to raise (None: nothing to tell).

    `stored`: what was last told (None: never seen). A queue that was up and now has no poller at all
    is down only once that has lasted `stale_s` (`absent_for_s`): a restarted Temporal server forgets
    its pollers until the workers' next poll, a second later. A queue never seen up is not an alert
    (the stack may still be starting, or that worker is not run here)."""
    if observed is Health.UP:
        return Health.UP, (Kind.WORKER_UP if stored is Health.DOWN else None)
    if observed is Health.DOWN:
        return Health.DOWN, (None if stored is Health.DOWN else Kind.WORKER_DOWN)
    if stored is Health.UP:
        if absent_for_s >= stale_s:
            return Health.DOWN, Kind.WORKER_DOWN
        return Health.UP, None
    if stored is Health.DOWN:
        return Health.DOWN, None
    return Health.ABSENT, None


_CONSEQUENCE = {
    "trade-lifecycle": "Position and portfolio workflows make no progress: no entry, no exit decision "
    "(the venue's hard stops still stand).",
    "exchange": "No order reaches the venue: entries and exits wait.",
    "inference": "No bar-close decisions: no new signals.",
}


def consequence(task_queue: str) -> str:
    return _CONSEQUENCE.get(task_queue, "Its workflows and activities wait.")


def summary_offset_ms(at: str) -> int:
    """ "HH:MM" → milliseconds after midnight UTC."""
    hh, _, mm = at.partition(":")
    return (int(hh) * 60 + int(mm)) * 60_000


def latest_due_day(now_ms: int, offset_ms: int) -> int:
    """The latest UTC day (days since the epoch) whose summary time has passed at `now_ms`."""
    return (now_ms - offset_ms) // DAY_MS - 1

"""A flapping condition is told at most `count` times per `window_s` (pure: the caller passes the time).

Alerts of one condition (`Alert.condition`: the emergency state, one task queue's workers, one
symbol's drift) share a sliding window. Once it is full, further alerts are held back and counted; the
next one that fits (a new alert, or `flush` when the window frees up) goes out saying how many were
held back, so the last word on a condition always arrives and the operator's phone does not ring
every few seconds. The state is in memory: a restart of the notifier starts every window afresh.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from alerts.events import Alert

__all__ = ["RateLimiter", "Release"]


@dataclass(frozen=True, slots=True)
class Release:
    """An alert to send, and how many alerts of its condition were held back before it."""

    alert: Alert
    held: int = 0
    held_since_ms: int | None = None


@dataclass(slots=True)
class _Window:
    sent: deque[float] = field(default_factory=deque)
    held: int = 0
    held_since_ms: int | None = None
    latest: Alert | None = None


class RateLimiter:
    def __init__(self, count: int, window_s: float) -> None:
        if count < 1 or window_s <= 0:
            raise ValueError(f"rate limit needs count >= 1 and window > 0, got {count} per {window_s} s")
        self.count = count
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def _trim(self, w: _Window, now: float) -> None:
        while w.sent and w.sent[0] <= now - self.window_s:
            w.sent.popleft()

    def offer(self, alert: Alert, now: float) -> Release | None:
        """The alert to send now (with the count held back before it), or None: held back."""
        w = self._windows.setdefault(alert.condition, _Window())
        self._trim(w, now)
        if len(w.sent) < self.count:
            w.sent.append(now)
            release = Release(alert, w.held, w.held_since_ms)
            w.held, w.held_since_ms, w.latest = 0, None, None
            return release
        if w.held == 0:
            w.held_since_ms = int(now * 1000)
        w.held += 1
        w.latest = alert
        return None

    def flush(self, now: float) -> list[Release]:
        """For every condition with alerts held back whose window has room again: its latest alert,
        counting the others held back with it."""
        out = []
        for key, w in list(self._windows.items()):
            self._trim(w, now)
            if w.latest is not None and len(w.sent) < self.count:
                w.sent.append(now)
                out.append(Release(w.latest, w.held - 1, w.held_since_ms))
                w.held, w.held_since_ms, w.latest = 0, None, None
            if not w.sent and w.latest is None:
                del self._windows[key]  # nothing to remember: keeps the table as small as the live set
        return out

    def holding(self) -> int:
        return sum(w.held for w in self._windows.values())

"""Outage windows: chosen /fapi endpoints stop answering for a while, then recover by themselves.

`{"outage": {"paths": [...], "mode": "5xx" | "refuse" | "hang", "seconds": 30}}` opens one window
(a list of such objects opens several); `paths` are prefixes, default every /fapi path; `mode`
defaults to "5xx". While a window covers a request's path:
- "5xx": HTTP 503 -1001 "Service Unavailable." (not executed);
- "refuse": the connection is closed at once, without an HTTP answer (the client sees a connection
  error, as when a load balancer drops it);
- "hang": the request is held, unanswered, until the window ends (past any client timeout), then the
  connection is closed WITHOUT executing it.
Several windows may be open at once; each ends by itself `seconds` after it was opened. The oldest
open window covering a path decides. Windows cover HTTP only (WebSockets: `/admin/ws/drop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.paper.fault_params import FaultConfigError, choice, fields, number, prefixes

MODES = ("5xx", "refuse", "hang")
_KEYS = ("paths", "mode", "seconds")
ALL_FAPI = ("/fapi",)


@dataclass(frozen=True, slots=True, eq=False)
class Outage:
    """One window; identity matters (a held request waits on this very window)."""

    paths: tuple[str, ...]
    mode: str
    seconds: float
    start_ms: int
    end_ms: int

    def covers(self, path: str) -> bool:
        return path.startswith(self.paths)

    def show(self, now_ms: int) -> dict[str, Any]:
        return {
            "paths": list(self.paths),
            "mode": self.mode,
            "seconds": self.seconds,
            "ends_in_s": round(max(0, self.end_ms - now_ms) / 1000, 3),
        }


def parse_outages(value: Any, now_ms: int) -> list[Outage]:
    """The windows one `outage` value opens now: an object, or a non-empty list of objects."""
    if isinstance(value, list):
        if not value:
            raise FaultConfigError("outage must be an object or a non-empty list of objects (got [])")
        return [_parse_one(f"outage[{i}]", item, now_ms) for i, item in enumerate(value)]
    return [_parse_one("outage", value, now_ms)]


def _parse_one(name: str, value: Any, now_ms: int) -> Outage:
    obj = fields(name, value, _KEYS)
    if obj.get("seconds") is None:
        raise FaultConfigError(f"{name}.seconds is required (how long the outage lasts)")
    seconds = number(f"{name}.seconds", obj["seconds"], positive=True)
    mode = choice(f"{name}.mode", "5xx" if obj.get("mode") is None else obj["mode"], MODES)
    paths = ALL_FAPI if obj.get("paths") is None else prefixes(f"{name}.paths", obj["paths"])
    return Outage(paths, mode, seconds, now_ms, now_ms + round(seconds * 1000))


class Outages:
    """The open windows of one paper exchange."""

    def __init__(self) -> None:
        self.windows: list[Outage] = []

    def open(self, windows: list[Outage]) -> None:
        self.windows.extend(windows)

    def clear(self) -> None:
        self.windows = []

    def find(self, path: str, now_ms: int) -> Outage | None:
        """The oldest open window covering `path` (ended windows are forgotten on the way)."""
        if any(w.end_ms <= now_ms for w in self.windows):
            self.windows = [w for w in self.windows if w.end_ms > now_ms]
        for w in self.windows:
            if w.covers(path):
                return w
        return None

    def is_open(self, window: Outage, now_ms: int) -> bool:
        """Still open: not ended and not cleared (a held request is released when this turns false)."""
        return now_ms < window.end_ms and any(w is window for w in self.windows)

    def show(self, now_ms: int) -> list[dict[str, Any]]:
        return [w.show(now_ms) for w in self.windows if w.end_ms > now_ms]

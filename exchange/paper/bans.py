"""An IP ban that starts at a chosen request, like the venue's own 418 ban.

`{"ban_at": {"path": "/fapi/v1/userTrades", "after": 0, "seconds": 10}}` arms one trigger: the
(after+1)-th /fapi request from now whose path starts with `path` (default "/fapi") is answered
418 -1003 "Way too many requests; IP(...) banned until ..." with Retry-After, and from then on every
/fapi request from that request's IP gets the same 418 until `seconds` have passed. Nothing a
banned request asks for is executed. A new `ban_at` replaces an armed trigger; it never lifts a ban
in force (`DELETE /admin/faults` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.paper.fault_params import FaultConfigError, fields, integer, number, prefix

_KEYS = ("path", "after", "seconds")


@dataclass(slots=True)
class BanAt:
    path: str
    after: int
    seconds: float
    seen: int = 0  # matching requests let through so far

    def show(self) -> dict[str, Any]:
        return {"path": self.path, "after": self.after, "seconds": self.seconds, "seen": self.seen}


def parse_ban_at(value: Any) -> BanAt:
    obj = fields("ban_at", value, _KEYS)
    if obj.get("seconds") is None:
        raise FaultConfigError("ban_at.seconds is required (how long the ban lasts)")
    seconds = number("ban_at.seconds", obj["seconds"], positive=True)
    path = "/fapi" if obj.get("path") is None else prefix("ban_at.path", obj["path"])
    after = 0 if obj.get("after") is None else integer("ban_at.after", obj["after"], minimum=0)
    return BanAt(path, after, seconds)


def ban_message(ip: str, until_ms: int) -> str:
    return (
        f"Way too many requests; IP({ip}) banned until {until_ms}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )


class Bans:
    """The armed trigger and the bans in force (IP → end, ms)."""

    def __init__(self) -> None:
        self.trigger: BanAt | None = None
        self.banned: dict[str, int] = {}

    @property
    def armed(self) -> bool:
        return self.trigger is not None or bool(self.banned)

    def arm(self, trigger: BanAt | None) -> None:
        self.trigger = trigger

    def clear(self) -> None:
        self.trigger = None
        self.banned = {}

    def check(self, path: str, ip: str, now_ms: int) -> int | None:
        """The end (ms) of the ban this request falls under, or None to serve it."""
        until = self.banned.get(ip)
        if until is not None:
            if now_ms < until:
                return until
            del self.banned[ip]  # the ban ended by itself
        t = self.trigger
        if t is None or not path.startswith(t.path):
            return None
        if t.seen < t.after:
            t.seen += 1
            return None
        self.trigger = None
        until = self.banned[ip] = now_ms + round(t.seconds * 1000)
        return until

    def show(self, now_ms: int) -> dict[str, Any]:
        return {
            ip: {"ends_in_s": round((until - now_ms) / 1000, 3)}
            for ip, until in self.banned.items()
            if until > now_ms
        }

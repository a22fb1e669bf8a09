"""Fault injection: what the paper exchange does wrong on purpose, switchable at run time.

`POST /admin/faults` merges a JSON object into the active set, `DELETE` clears it, `GET` shows it.
Keys (all optional):
- `latency_ms`: added delay before every matching /fapi answer.
- `lost_answer_rate`, `lost_answer_mode` ("503" | "timeout"), `hang_s` (30): for order placement
  (POST /fapi/v1/order, POST /fapi/v1/algoOrder) the order IS executed, then the answer is lost:
  "503" answers HTTP 503 -1000 "Unknown error, ..." (outcome unknown); "timeout" holds the answer
  for `hang_s` seconds so the client times out first.
- `http_429_rate`, `retry_after_s` (1): 429 -1003 with Retry-After, not executed.
- `http_418_rate`: 418 -1003 "Way too many requests; IP banned until ..." with Retry-After, not executed.
- `http_5xx_rate`, `http_5xx_status` (503), `http_5xx_msg` ("Service Unavailable."): not executed.
  500/502 answer -1001 "Internal error; ..."; 503 answers the configured message with -1001 (a
  certain failure), or -1000 when the message is an "Unknown error..." one.
- `count`: apply only to the next N requests a fault actually hits, then clear everything.
- `paths`: path prefixes the faults apply to (default: every /fapi path).
- `seed`: seed of the random draws (rates between 0 and 1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

LOST_ANSWER_MSG = "Unknown error, please check your request or try again later."
INTERNAL_ERROR_MSG = "Internal error; unable to process your request. Please try again."

_RATES = ("lost_answer_rate", "http_429_rate", "http_418_rate", "http_5xx_rate")
_DEFAULTS: dict[str, Any] = {
    "latency_ms": 0,
    "lost_answer_rate": 0.0,
    "lost_answer_mode": "503",
    "hang_s": 30.0,
    "http_429_rate": 0.0,
    "retry_after_s": 1,
    "http_418_rate": 0.0,
    "http_5xx_rate": 0.0,
    "http_5xx_status": 503,
    "http_5xx_msg": "Service Unavailable.",
    "count": None,
    "paths": None,
    "seed": None,
}


class FaultConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Decision:
    """What to do with one request. `kind`: "429" | "418" | "5xx" | "lost" | None (just latency)."""

    kind: str | None
    latency_s: float = 0.0
    status: int = 0
    code: int = 0
    msg: str = ""
    retry_after_s: int = 0
    lost_mode: str = "503"
    hang_s: float = 0.0


def _validate(key: str, value: Any) -> Any:
    if key not in _DEFAULTS:
        raise FaultConfigError(f"unknown fault '{key}'; known: {', '.join(sorted(_DEFAULTS))}")
    if value is None:
        return _DEFAULTS[key]
    try:
        if key in _RATES:
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise FaultConfigError(f"{key} must be between 0 and 1")
        elif key in ("latency_ms", "hang_s"):
            value = float(value)
            if value < 0:
                raise FaultConfigError(f"{key} must be >= 0")
        elif key in ("retry_after_s", "count", "seed"):
            value = int(value)
            if value < 0:
                raise FaultConfigError(f"{key} must be >= 0")
        elif key == "http_5xx_status":
            value = int(value)
            if not 500 <= value <= 599:
                raise FaultConfigError("http_5xx_status must be a 5xx status")
        elif key == "lost_answer_mode":
            value = str(value)
            if value not in ("503", "timeout"):
                raise FaultConfigError("lost_answer_mode must be '503' or 'timeout'")
        elif key == "http_5xx_msg":
            value = str(value)
        elif key == "paths":
            if isinstance(value, str):
                value = [value]
            value = [str(p) for p in value]
    except (TypeError, ValueError) as exc:
        if isinstance(exc, FaultConfigError):
            raise
        raise FaultConfigError(f"bad value for {key}: {exc}") from None
    return value


class Faults:
    """The active fault set of one paper exchange."""

    def __init__(self) -> None:
        self._cfg: dict[str, Any] = dict(_DEFAULTS)
        self._rng = random.Random()
        self.active = False  # fast path: nothing to do
        self.fired: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        return {**self._cfg, "active": self.active, "fired": dict(self.fired)}

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(changes, dict):
            raise FaultConfigError("expected a JSON object")
        cleaned = {k: _validate(k, v) for k, v in changes.items()}
        self._cfg.update(cleaned)
        if "seed" in cleaned and cleaned["seed"] is not None:
            self._rng.seed(cleaned["seed"])
        self._refresh()
        return self.snapshot()

    def clear(self) -> dict[str, Any]:
        self._cfg = dict(_DEFAULTS)
        self.fired = {}
        self._refresh()
        return self.snapshot()

    def _refresh(self) -> None:
        c = self._cfg
        self.active = bool(c["latency_ms"] or any(c[r] > 0 for r in _RATES)) and c["count"] != 0

    def _draw(self, rate: float) -> bool:
        return rate >= 1.0 or (rate > 0.0 and self._rng.random() < rate)

    def decide(self, path: str, places_order: bool, now_ms: int, ip: str = "127.0.0.1") -> Decision | None:
        """The fault to apply to one /fapi request, or None. Call only when `active`."""
        c = self._cfg
        paths = c["paths"]
        if paths is not None and not any(path.startswith(p) for p in paths):
            return None
        latency_s = c["latency_ms"] / 1000.0
        decision: Decision | None = None
        if self._draw(c["http_418_rate"]):
            retry = max(1, c["retry_after_s"])
            decision = Decision(
                "418", latency_s, 418, -1003,
                f"Way too many requests; IP({ip}) banned until {now_ms + retry * 1000}. "
                "Please use WebSocket Streams for live updates to avoid bans.", retry)
        elif self._draw(c["http_429_rate"]):
            decision = Decision(
                "429", latency_s, 429, -1003,
                f"Too many requests; current limit of IP({ip}) request weight per minute is 2400. "
                "Please use WebSocket Streams for live updates to avoid polling the API.",
                max(1, c["retry_after_s"]))
        elif self._draw(c["http_5xx_rate"]):
            status = c["http_5xx_status"]
            if status == 503:
                msg = c["http_5xx_msg"]
                code = -1000 if msg.startswith("Unknown error") else -1001
            else:
                msg, code = INTERNAL_ERROR_MSG, -1001
            decision = Decision("5xx", latency_s, status, code, msg)
        elif places_order and self._draw(c["lost_answer_rate"]):
            decision = Decision("lost", latency_s, 503, -1000, LOST_ANSWER_MSG,
                                lost_mode=c["lost_answer_mode"], hang_s=c["hang_s"])
        elif latency_s > 0:
            decision = Decision(None, latency_s)
        if decision is None:
            return None
        name = decision.kind or "latency"
        self.fired[name] = self.fired.get(name, 0) + 1
        if c["count"] is not None:
            c["count"] -= 1
            if c["count"] <= 0:
                fired = self.fired
                self.clear()
                self.fired = fired
        return decision

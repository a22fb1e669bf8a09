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
- `count`: apply only to the next N requests a fault actually hits, then switch the faults above
  off (the timed faults below keep going).
- `paths`: path prefixes the faults apply to (default: every /fapi path).
- `seed`: seed of the random draws (rates between 0 and 1).

Timed and one-shot faults (each documented in its module; `count` and `paths` above do not apply
to them, and a `null` value disarms one):
- `outage` (outages.py): `{"paths": [...], "mode": "5xx" | "refuse" | "hang", "seconds": 30}`, or
  a list of such windows; each POST adds windows, which end by themselves.
- `late_execution` (late_orders.py): `{"delay_s": 5, "count": 1, "answer": "503" | "timeout",
  "hang_s": 30}`: orders held back, their answer lost, executed `delay_s` later.
- `ban_at` (bans.py): `{"path": "/fapi/v1/userTrades", "after": 0, "seconds": 10}`: a 418 IP ban
  that starts at the (after+1)-th matching request.
- `partial_fills` (split_fills.py): `{"pieces": 3, "interval_s": 0.5, "count": 1}`: MARKET orders
  filled in parts over time.
`GET` shows them with what is in force (`outage` windows, `bans`, `late_pending` orders);
`DELETE` clears everything: open windows, bans, and late orders not yet executed.
Metrics kinds: `outage_5xx`, `outage_refuse`, `outage_hang`, `ban` (each request refused by an
injected ban), `late_execution` (each order held back), `partial_fills` (each order split).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from exchange.paper.bans import Bans, ban_message, parse_ban_at
from exchange.paper.fault_params import FaultConfigError
from exchange.paper.late_orders import LateOrders, parse_late_execution
from exchange.paper.outages import Outage, Outages, parse_outages
from exchange.paper.split_fills import PartialFills, parse_partial_fills

__all__ = ["INTERNAL_ERROR_MSG", "LOST_ANSWER_MSG", "Block", "Decision", "FaultConfigError", "Faults"]

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
# Timed and one-shot faults, each with its own module.
_TIMED = ("outage", "late_execution", "ban_at", "partial_fills")


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


@dataclass(frozen=True)
class Block:
    """A request the venue does not serve (outage or injected ban): answered with `status`/`code`/
    `msg`, or, when `drop`, never answered (the connection is closed; "hang" holds it while
    `outage` is open first)."""

    kind: str
    status: int = 0
    code: int = 0
    msg: str = ""
    retry_after_s: int = 0
    drop: bool = False
    outage: Outage | None = None


def _parse_timed(key: str, value: Any, now_ms: int) -> Any:
    """The parsed setting of one timed fault (None: switch it off)."""
    if value is None:
        return None
    if key == "outage":
        return parse_outages(value, now_ms)
    if key == "late_execution":
        return parse_late_execution(value)
    if key == "ban_at":
        return parse_ban_at(value)
    return parse_partial_fills(value)


def _validate(key: str, value: Any) -> Any:
    if key not in _DEFAULTS:
        known = ", ".join(sorted([*_DEFAULTS, *_TIMED]))
        raise FaultConfigError(f"unknown fault '{key}'; known: {known}")
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
        self.active = False  # fast path of the rate faults (`decide`): nothing to do
        self.fired: dict[str, int] = {}
        self.outages = Outages()
        self.bans = Bans()
        self.late = LateOrders()
        self.partial: PartialFills | None = None

    @property
    def armed(self) -> bool:
        """Fast path of `gate`: an outage window is open, or a ban is in force or armed."""
        return bool(self.outages.windows) or self.bans.armed

    def snapshot(self, now_ms: int | None = None) -> dict[str, Any]:
        now = _now_ms() if now_ms is None else now_ms
        windows = self.outages.show(now)
        bans = self.bans.show(now)
        late, trigger, split = self.late.config, self.bans.trigger, self.partial
        in_force = bool(windows or bans or late or trigger or split or self.late.pending)
        return {
            **self._cfg,
            "outage": windows,
            "late_execution": late.show() if late else None,
            "ban_at": trigger.show() if trigger else None,
            "partial_fills": split.show() if split else None,
            "bans": bans,
            "late_pending": self.late.show(now),
            "active": self.active or in_force,
            "fired": dict(self.fired),
        }

    def update(self, changes: dict[str, Any], now_ms: int | None = None) -> dict[str, Any]:
        """Merge `changes` into the active set (all validated first: a refused POST changes nothing)."""
        if not isinstance(changes, dict):
            raise FaultConfigError("expected a JSON object")
        now = _now_ms() if now_ms is None else now_ms
        timed = {k: _parse_timed(k, v, now) for k, v in changes.items() if k in _TIMED}
        cleaned = {k: _validate(k, v) for k, v in changes.items() if k not in _TIMED}
        self._cfg.update(cleaned)
        if "seed" in cleaned and cleaned["seed"] is not None:
            self._rng.seed(cleaned["seed"])
        self._refresh()
        for key, value in timed.items():
            if key == "outage":
                if value is None:
                    self.outages.clear()
                else:
                    self.outages.open(value)
            elif key == "late_execution":
                self.late.arm(value)
            elif key == "ban_at":
                self.bans.arm(value)
            else:
                self.partial = value
        return self.snapshot(now)

    def clear(self, now_ms: int | None = None) -> dict[str, Any]:
        """Everything off: rate faults, windows, bans and their trigger, late orders not yet executed."""
        self._clear_rates()
        self.fired = {}
        self.outages.clear()
        self.bans.clear()
        self.late.clear()
        self.partial = None
        return self.snapshot(now_ms)

    def _clear_rates(self) -> None:
        self._cfg = dict(_DEFAULTS)
        self._refresh()

    def _fire(self, kind: str) -> None:
        self.fired[kind] = self.fired.get(kind, 0) + 1

    def gate(self, path: str, ip: str, now_ms: int) -> Block | None:
        """Whether a /fapi request is served at all: an open outage window or an injected ban may
        refuse it before anything else happens. Call only when `armed`."""
        outage = self.outages.find(path, now_ms)
        if outage is not None:
            kind = f"outage_{outage.mode}"
            self._fire(kind)
            if outage.mode == "5xx":
                return Block(kind, 503, -1001, "Service Unavailable.")
            return Block(kind, drop=True, outage=outage)
        if self.bans.armed:
            until = self.bans.check(path, ip, now_ms)
            if until is not None:
                self._fire("ban")
                return Block("ban", 418, -1003, ban_message(ip, until), -(-(until - now_ms) // 1000))
        return None

    def hold_back(self, params: dict[str, str], now_ms: int) -> tuple[str, float] | None:
        """A POST /fapi/v1/order to execute late: (answer, hang_s) for the client, or None to
        execute it now. Its time comes through `late.due`."""
        cfg = self.late.take(params, now_ms)
        if cfg is None:
            return None
        self._fire("late_execution")
        return cfg.answer, cfg.hang_s

    def take_split(self) -> PartialFills | None:
        """The split for an accepted MARKET order, counted; None when `partial_fills` is off."""
        cfg = self.partial
        if cfg is None:
            return None
        cfg.count -= 1
        if cfg.count <= 0:
            self.partial = None
        self._fire("partial_fills")
        return cfg

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
                "418",
                latency_s,
                418,
                -1003,
                f"Way too many requests; IP({ip}) banned until {now_ms + retry * 1000}. "
                "Please use WebSocket Streams for live updates to avoid bans.",
                retry,
            )
        elif self._draw(c["http_429_rate"]):
            decision = Decision(
                "429",
                latency_s,
                429,
                -1003,
                f"Too many requests; current limit of IP({ip}) request weight per minute is 2400. "
                "Please use WebSocket Streams for live updates to avoid polling the API.",
                max(1, c["retry_after_s"]),
            )
        elif self._draw(c["http_5xx_rate"]):
            status = c["http_5xx_status"]
            if status == 503:
                msg = c["http_5xx_msg"]
                code = -1000 if msg.startswith("Unknown error") else -1001
            else:
                msg, code = INTERNAL_ERROR_MSG, -1001
            decision = Decision("5xx", latency_s, status, code, msg)
        elif places_order and self._draw(c["lost_answer_rate"]):
            decision = Decision(
                "lost",
                latency_s,
                503,
                -1000,
                LOST_ANSWER_MSG,
                lost_mode=c["lost_answer_mode"],
                hang_s=c["hang_s"],
            )
        elif latency_s > 0:
            decision = Decision(None, latency_s)
        if decision is None:
            return None
        self._fire(decision.kind or "latency")
        if c["count"] is not None:
            c["count"] -= 1
            if c["count"] <= 0:
                self._clear_rates()  # the timed faults keep going
        return decision


def _now_ms() -> int:
    return int(time.time() * 1000)

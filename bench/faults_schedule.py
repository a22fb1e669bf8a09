"""The fault explorer's schedules: what one seed does, drawn with `random.Random(seed)` and nothing else.

A schedule is pure data (JSON in and out), so a failing seed prints it and `--seed K` draws the same one
again. Every kind of fault is drawn whatever the venue supports: a fault the paper exchange does not
know yet is mapped to the nearest one it does (or skipped) when the seed runs, never when it is drawn,
so the schedule of a seed does not change when new faults land.

Times are wall seconds from the start of the seed. Fault durations are drawn on the real scale (an
outage of 1-120 s) and multiplied by the time factor, which the schedule carries.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

VENUE_KINDS = ("outage", "ban", "rate_limit", "lost_answers", "late_execution", "partial_fills")
PROCESS_KINDS = ("kill", "temporal_restart", "redis_outage")
OPERATOR_KINDS = ("flatten", "kill_switch", "price_gap")
KILL_TARGETS = ("lifecycle", "exchange", "user-stream", "watcher")
ENDPOINTS: dict[str, list[str] | None] = {
    "all": None,
    "orders": ["/fapi/v1/order"],
    "algo": ["/fapi/v1/algoOrder", "/fapi/v1/openAlgoOrders"],
    "account": ["/fapi/v3/positionRisk", "/fapi/v2/positionRisk", "/fapi/v1/userTrades"],
    "market": ["/fapi/v1/premiumIndex", "/fapi/v1/exchangeInfo"],
    "listen_key": ["/fapi/v1/listenKey"],
}
# How often each kind is drawn (relative); operator actions are drawn apart from the faults.
FAULT_WEIGHTS = {
    "outage": 5,
    "ban": 2,
    "rate_limit": 2,
    "lost_answers": 3,
    "late_execution": 2,
    "partial_fills": 2,
    "kill": 6,
    "temporal_restart": 1,
    "redis_outage": 2,
}
BAN_PATHS = (
    "/fapi",
    "/fapi/v1/order",
    "/fapi/v1/premiumIndex",
    "/fapi/v3/positionRisk",
    "/fapi/v1/listenKey",
)
ENDS = {"close": 50, "partial_close": 10, "cancel": 15, "hold": 25}


@dataclass(frozen=True)
class DrawConfig:
    """The shape of every seed of a run (the same config and seed always give the same schedule)."""

    time_factor: float = 0.1
    window_s: float = 20.0  # the active part of a seed: lifecycles start and faults happen in it
    lifecycles: tuple[int, int] = (6, 12)
    symbols: int = 5
    faults: tuple[int, int] = (3, 7)
    operator_actions: tuple[int, int] = (1, 3)
    history_cap: int = 100  # PositionOptions.max_history_events of the lifecycles forced to continue-as-new


@dataclass(frozen=True)
class Lifecycle:
    index: int
    symbol: int  # which of the seed's symbols (0 .. symbols-1)
    side: str  # LONG | SHORT
    notional: int
    start_s: float
    end: str  # close | partial_close | cancel | hold (closed by the sweep at the end of the window)
    end_s: float
    mark_check_s: float
    max_history_events: int | None = None  # set: continue-as-new after this many history events


@dataclass(frozen=True)
class Event:
    kind: str
    at_s: float
    duration_s: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    @property
    def label(self) -> str:
        target = self.params.get("target") or self.params.get("mode")
        return f"{self.kind}:{target}" if target else self.kind


@dataclass(frozen=True)
class Schedule:
    seed: int
    time_factor: float
    window_s: float
    symbols: int
    lifecycles: list[Lifecycle]
    events: list[Event]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            seed=int(data["seed"]),
            time_factor=float(data["time_factor"]),
            window_s=float(data["window_s"]),
            symbols=int(data["symbols"]),
            lifecycles=[Lifecycle(**lc) for lc in data["lifecycles"]],
            events=[Event(**ev) for ev in data["events"]],
        )

    def faults(self) -> list[Event]:
        return [e for e in self.events if e.kind not in OPERATOR_KINDS]


def draw_schedule(seed: int, cfg: DrawConfig = DrawConfig()) -> Schedule:
    """The schedule of `seed`: lifecycles first, then faults, then operator actions, always drawn in
    this order from one `random.Random(seed)`."""
    rng = random.Random(seed)
    lifecycles: list[Lifecycle] = []
    for i in range(rng.randint(*cfg.lifecycles)):
        lifecycles.append(_draw_lifecycle(rng, cfg, i, lifecycles))
    faults = [_draw_fault(rng, cfg) for _ in range(rng.randint(*cfg.faults))]
    actions = [_draw_action(rng, cfg, lifecycles) for _ in range(rng.randint(*cfg.operator_actions))]
    events = sorted(_serialize_venue(faults, cfg.window_s) + actions, key=lambda e: (e.at_s, e.kind))
    return Schedule(seed, cfg.time_factor, cfg.window_s, cfg.symbols, lifecycles, events)


def _r(x: float) -> float:
    return round(x, 3)


def _busy_until(lc: Lifecycle, window_s: float) -> float:
    return window_s + 1.0 if lc.end == "hold" else lc.end_s + 0.5


def _draw_symbol(rng: random.Random, cfg: DrawConfig, start: float, earlier: list[Lifecycle]) -> int:
    """A symbol no earlier lifecycle plans to hold at `start` when there is one (the portfolio refuses a
    second position on a symbol: the demand should meet the slot limit, not that gate, most of the time)."""
    busy = {lc.symbol for lc in earlier if lc.start_s <= start <= _busy_until(lc, cfg.window_s)}
    free = [s for s in range(cfg.symbols) if s not in busy]
    return rng.choice(free) if free and rng.random() < 0.85 else rng.randrange(cfg.symbols)


def _draw_lifecycle(rng: random.Random, cfg: DrawConfig, index: int, earlier: list[Lifecycle]) -> Lifecycle:
    start = rng.uniform(0.0, 0.6 * cfg.window_s)
    end = rng.choices(list(ENDS), weights=list(ENDS.values()))[0]
    # An end shortly after the start lands in any state: governing, entering, open.
    hold = rng.choice([rng.uniform(0.0, 0.8), rng.uniform(1.0, 0.3 * cfg.window_s)])
    return Lifecycle(
        index=index,
        symbol=_draw_symbol(rng, cfg, start, earlier),
        side=rng.choice(["LONG", "SHORT"]),
        notional=rng.choice([100, 150, 200]),
        start_s=_r(start),
        end=end,
        end_s=_r(min(start + hold, cfg.window_s)),
        mark_check_s=_r(rng.uniform(5.0, 60.0) * cfg.time_factor),
        max_history_events=cfg.history_cap if rng.random() < 0.3 else None,
    )


def _scaled(rng: random.Random, cfg: DrawConfig, lo: float, hi: float) -> float:
    return _r(rng.uniform(lo, hi) * cfg.time_factor)


def _draw_fault(rng: random.Random, cfg: DrawConfig) -> Event:
    kind = rng.choices(list(FAULT_WEIGHTS), weights=list(FAULT_WEIGHTS.values()))[0]
    at = _r(rng.uniform(0.5, 0.85 * cfg.window_s))
    params: dict[str, Any] = {}
    if kind == "outage":
        duration = _scaled(rng, cfg, 1, 120)
        params = {
            "mode": rng.choice(["5xx", "refuse", "hang"]),
            "endpoint": rng.choice(list(ENDPOINTS)),
            "status": rng.choice([500, 502, 503]),
        }
    elif kind == "ban":
        seconds = _scaled(rng, cfg, 2, 60)
        duration = _r(2 * seconds + 1.0)  # armed, then banned: ended by the clear after this
        params = {"seconds": seconds, "path": rng.choice(BAN_PATHS), "after": rng.randint(0, 5)}
    elif kind == "rate_limit":
        duration = _scaled(rng, cfg, 5, 60)
        params = {"rate": _r(rng.uniform(0.2, 0.6)), "endpoint": rng.choice(["all", "orders"])}
    elif kind == "lost_answers":
        duration = _scaled(rng, cfg, 10, 120)
        params = {"rate": _r(rng.uniform(0.2, 0.5)), "mode": rng.choice(["503", "timeout"])}
    elif kind == "late_execution":
        duration = _scaled(rng, cfg, 10, 60)
        params = {
            "delay_s": _scaled(rng, cfg, 20, 60),
            "count": rng.randint(1, 3),
            "answer": rng.choice(["503", "timeout"]),
        }
    elif kind == "partial_fills":
        duration = _scaled(rng, cfg, 10, 90)
        params = {
            "pieces": rng.randint(2, 4),
            "interval_s": _scaled(rng, cfg, 2, 15),
            "count": rng.randint(1, 4),
        }
    elif kind == "kill":
        duration = _scaled(rng, cfg, 0, 30)
        params = {"target": rng.choice(KILL_TARGETS)}
    elif kind == "temporal_restart":
        duration = _scaled(rng, cfg, 1, 20)
    else:  # redis_outage
        duration = _scaled(rng, cfg, 1, 120)
    return Event(kind, at, duration, params)


def _draw_action(rng: random.Random, cfg: DrawConfig, lifecycles: list[Lifecycle]) -> Event:
    kind = rng.choice(OPERATOR_KINDS)
    if kind == "price_gap":
        lc = rng.choice(lifecycles)
        at = min(lc.start_s + rng.uniform(0.3, 4.0), cfg.window_s)
        params = {
            "lifecycle": lc.index,
            "symbol": lc.symbol,
            "direction": "down" if lc.side == "LONG" else "up",  # through both of its stops
            "pct": _r(rng.uniform(5.0, 12.0)),
            "restore": rng.random() < 0.5,
        }
        return Event(kind, _r(at), _r(rng.uniform(0.5, 5.0)), params)
    at = _r(rng.uniform(0.5, 0.9 * cfg.window_s))
    if kind == "flatten":
        return Event(kind, at, _scaled(rng, cfg, 1, 30))
    return Event(kind, at, _scaled(rng, cfg, 5, 60))  # kill switch on for a while


def _serialize_venue(events: list[Event], window_s: float) -> list[Event]:
    """The venue holds one fault set at a time: venue faults are moved so that none overlaps the last."""
    out: list[Event] = []
    free_at = 0.0
    for ev in sorted(events, key=lambda e: e.at_s):
        if ev.kind not in VENUE_KINDS:
            out.append(ev)
            continue
        at = max(ev.at_s, free_at)
        if at >= window_s:
            continue  # no room left in the window
        duration = min(ev.duration_s, window_s - at)
        out.append(Event(ev.kind, _r(at), _r(duration), ev.params))
        free_at = at + duration + 0.2
    return out

"""The fault explorer's invariants: pure checks over the venue's own record and Temporal's, plus the
monitor that turns per-sample findings into violations once they have lasted longer than allowed.

Nothing here does I/O, so each checker can be fed a fabricated record (tests/workflows/
test_fault_explorer.py plants one violation per checker).

Venue record shapes are the paper exchange's own: orders as `GET /admin/orders` (= allOrders rows),
algo orders as `GET /admin/algo-orders` (openAlgoOrders rows plus `actualOrderId`), trades as
`GET /fapi/v1/userTrades` rows.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from trading.ids import client_order_id
from trading.intents import Side
from trading.pnl import Fill, OverfillError, cents, tally

ZERO = Decimal(0)
NONDETERMINISM = re.compile(r"Nondeterminism|TMPRL1100")
# Not violations by themselves, but what a stuck workflow usually left in its worker's log.
TASK_FAILURES = re.compile(
    r"Failed activation|Failed running eviction|IllegalTransition|workflow task failed", re.I
)
LIVE_ALGO_STATUSES = ("NEW",)


@dataclass(frozen=True)
class Violation:
    seed: int
    invariant: str
    t: float  # seconds into the seed
    details: str

    def short(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "invariant": self.invariant,
            "t": round(self.t, 2),
            "details": self.details[:300],
        }


# ------------------------------------------------------------------ the venue's record
def positions_from_orders(orders: Iterable[Mapping]) -> dict[str, Decimal]:
    """Signed position per symbol (one-way mode): what the executed orders add up to. Only non-zero."""
    out: dict[str, Decimal] = {}
    for o in orders:
        qty = Decimal(str(o.get("executedQty") or 0))
        if qty:
            sign = 1 if o["side"] == "BUY" else -1
            out[o["symbol"]] = out.get(o["symbol"], ZERO) + sign * qty
    return {s: q for s, q in out.items() if q != 0}


def live_stops(algos: Iterable[Mapping]) -> dict[str, int]:
    """Reduce-only (or close-position) algo orders still waiting on the venue, per symbol."""
    out: Counter[str] = Counter()
    for a in algos:
        if a.get("algoStatus") in LIVE_ALGO_STATUSES and (a.get("reduceOnly") or a.get("closePosition")):
            out[a["symbol"]] += 1
    return dict(out)


def over_limit(positions: Mapping[str, Decimal], limit: int) -> str | None:
    if len(positions) > limit:
        return f"{len(positions)} open positions on the venue, limit {limit}: {sorted(positions)}"
    return None


def duplicate_client_ids(orders: Iterable[Mapping], algos: Iterable[Mapping]) -> dict[str, int]:
    """Client ids the venue recorded more than once. A fired algo order's own market order carries the
    algo's client id: that one is the same order, not a second one."""
    algos = list(algos)
    children = {int(a["actualOrderId"]) for a in algos if str(a.get("actualOrderId") or "").isdigit()}
    ids = Counter(o["clientOrderId"] for o in orders if int(o["orderId"]) not in children)
    ids.update(a["clientAlgoId"] for a in algos)
    return {cid: n for cid, n in ids.items() if n > 1}


def order_prefix(workflow_id: str) -> str:
    """Every client id a position sends starts with this (see trading/ids.py)."""
    return client_order_id(workflow_id, "entry").rsplit(".", 1)[0] + "."


def entries_per_workflow(orders: Iterable[Mapping], sides: Mapping[str, str]) -> dict[str, int]:
    """Workflows (id → LONG/SHORT) with more than one executed order that added to their position."""
    prefixes = {order_prefix(wid): wid for wid in sides}
    counts: Counter[str] = Counter()
    for o in orders:
        wid = prefixes.get(o["clientOrderId"].rsplit(".", 1)[0] + ".")
        if wid is None or o.get("reduceOnly") or not Decimal(str(o.get("executedQty") or 0)):
            continue
        if o["side"] == Side(sides[wid]).entry_order_side:
            counts[wid] += 1
    return {wid: n for wid, n in counts.items() if n > 1}


def unmanaged(positions: Mapping[str, Decimal], running_symbols: Iterable[str]) -> set[str]:
    """Symbols exposed on the venue that no running position workflow manages."""
    return set(positions) - set(running_symbols)


def unprotected(positions: Mapping[str, Decimal], stops: Mapping[str, int]) -> set[str]:
    """Symbols exposed on the venue with no live reduce-only stop there."""
    return {s for s in positions if not stops.get(s)}


def stuck_exits(
    exits: Mapping[str, str], positions: Mapping[str, Decimal], running: Mapping[str, str]
) -> set[str]:
    """Positions asked to close (or cancelled) whose workflow still runs with its symbol exposed."""
    return {wid for wid, sym in exits.items() if wid in running and sym in positions}


def slot_mismatch(slots: int, exposed: Collection[str], running: Mapping[str, str]) -> set[str]:
    """Slots in use must cover every exposed symbol (fewer: more positions than the limit could open)
    and no more than that plus the running workflows on symbols not exposed (more: a slot leaked). A
    position still ENTERING holds its slot before its order reaches the venue and must keep it while
    that order may exist; one whose workflow died exposed keeps its slot until it is adopted."""
    entering = sum(1 for sym in running.values() if sym not in exposed)
    if slots < len(exposed):
        return {f"slots {slots} < exposed {len(exposed)}"}
    if slots > len(exposed) + entering:
        return {f"slots {slots} > exposed {len(exposed)} + entering {entering}"}
    return set()


# ------------------------------------------------------------------ PnL against the venue's trades
@dataclass(frozen=True)
class FinishedPosition:
    workflow_id: str
    symbol: str
    side: str
    fills: list[Fill]
    adopted: bool = False


def trade_fill(trade: Mapping, client_id: str) -> Fill:
    return Fill(
        client_order_id=client_id,
        side=trade["side"],
        price=Decimal(str(trade["price"])),
        qty=Decimal(str(trade["qty"])),
        fee=Decimal(str(trade.get("commission") or 0)),
        time_ms=int(trade.get("time") or 0),
        order_id=int(trade["orderId"]),
        trade_id=int(trade["id"]),
    )


def venue_fills_of(pos: FinishedPosition, orders: Iterable[Mapping], trades: Iterable[Mapping]) -> list[Fill]:
    """The venue's trades of this position: its own orders (by client id prefix), and any other order the
    workflow took as its own (a liquidation, a close by hand), by order id."""
    prefix = order_prefix(pos.workflow_id)
    cids = {int(o["orderId"]): o["clientOrderId"] for o in orders if o["symbol"] == pos.symbol}
    own = {oid for oid, cid in cids.items() if cid.startswith(prefix)}
    own |= {f.order_id for f in pos.fills if f.order_id is not None}
    rows = [t for t in trades if t["symbol"] == pos.symbol and int(t["orderId"]) in own]
    return [trade_fill(t, cids.get(int(t["orderId"]), "?")) for t in sorted(rows, key=lambda t: int(t["id"]))]


def pnl_mismatch(pos: FinishedPosition, orders: Iterable[Mapping], trades: Iterable[Mapping]) -> str | None:
    """None when the workflow's realized PnL equals its venue trades' to the cent and the venue holds
    nothing of it; else what differs."""
    side = Side(pos.side)
    venue = venue_fills_of(pos, orders, trades)
    try:
        mine, theirs = tally(side, pos.fills), tally(side, venue)
    except OverfillError as err:
        return f"{pos.workflow_id}: fills overfill: {err}"
    if cents(mine.realized_net) != cents(theirs.realized_net) or theirs.open_qty != 0 or mine.open_qty != 0:
        return (
            f"{pos.workflow_id}: workflow pnl {cents(mine.realized_net)} open {mine.open_qty} "
            f"({len(pos.fills)} fills), venue pnl {cents(theirs.realized_net)} open {theirs.open_qty} "
            f"({len(venue)} trades)"
        )
    return None


# ------------------------------------------------------------------ logs and the end of a seed
def nondeterminism(text: str) -> list[str]:
    return [line.strip()[:240] for line in text.splitlines() if NONDETERMINISM.search(line)]


def task_failures(text: str) -> list[str]:
    return [line.strip()[:240] for line in text.splitlines() if TASK_FAILURES.search(line)]


def unfinished(statuses: Mapping[str, str]) -> list[str]:
    """Workflow ids still running (status names as Temporal's WorkflowExecutionStatus)."""
    return sorted(wid for wid, status in statuses.items() if status == "RUNNING")


# ------------------------------------------------------------------ samples and the monitor
@dataclass(frozen=True)
class VenueSnapshot:
    positions: dict[str, Decimal]
    stops: dict[str, int]


@dataclass(frozen=True)
class TemporalSnapshot:
    running: dict[str, str]  # running PositionWorkflow id → its symbol
    slots_used: int | None  # the portfolio's answer (None: it did not answer in time)


@dataclass(frozen=True)
class Sample:
    t: float
    venue: VenueSnapshot | None
    temporal: TemporalSnapshot | None
    # Per timed invariant: since when no fault that excuses it has been active (t while one is).
    quiet_since: dict[str, float] = field(default_factory=dict)
    faults_active: bool = False
    # Positions an operator asked to close whole, or cancelled (id → symbol): they must go flat.
    exits: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Bounds:
    limit: int
    unmanaged_s: float  # reconcile interval + adoption age + grace
    unprotected_s: float  # after the entry filled
    slots_s: float  # settling time of slots vs exposed positions
    exit_s: float = 10.0  # an accepted close (or a cancel) carried out at the venue


class _Timer:
    """How long each key (a symbol, or one global key) has been continuously in a bad state."""

    def __init__(self) -> None:
        self.since: dict[str, float] = {}
        self.reported: set[str] = set()
        self.max_raw = 0.0  # the longest stretch, fault windows included
        self.max_quiet = 0.0  # the longest stretch counted from the end of the last excusing fault

    def update(self, t: float, bad: set[str], quiet_since: float, bound: float) -> list[tuple[str, float]]:
        for key in list(self.since):
            if key not in bad:
                del self.since[key]
                self.reported.discard(key)
        over = []
        for key in bad:
            start = self.since.setdefault(key, t)
            self.max_raw = max(self.max_raw, t - start)
            lasting = t - max(start, quiet_since)
            self.max_quiet = max(self.max_quiet, lasting)
            if lasting > bound and key not in self.reported:
                self.reported.add(key)
                over.append((key, lasting))
        return over


class Monitor:
    """Feed it samples in time order; it returns the violations each one reveals."""

    def __init__(self, seed: int, bounds: Bounds) -> None:
        self.seed = seed
        self.bounds = bounds
        self.timers = {
            "unmanaged_exposure": _Timer(),
            "unprotected_exposure": _Timer(),
            "slots_mismatch": _Timer(),
            "exit_not_carried_out": _Timer(),
        }
        self.violations: list[Violation] = []
        self.recoveries: list[float] = []
        self._cleared_at: float | None = None
        self.samples = 0

    @property
    def max_unmanaged_s(self) -> float:
        return self.timers["unmanaged_exposure"].max_raw

    @property
    def max_unprotected_s(self) -> float:
        return self.timers["unprotected_exposure"].max_raw

    @property
    def max_unprotected_after_faults_s(self) -> float:
        """What the bound judges: a venue that refuses orders excuses a missing stop while it refuses."""
        return self.timers["unprotected_exposure"].max_quiet

    def faults_cleared(self, t: float) -> None:
        """No fault is active from `t` on: the time to the next clean sample is one recovery."""
        if self._cleared_at is None:
            self._cleared_at = t

    def fault_started(self, t: float) -> None:
        """A fault began before the last one's recovery was over: that recovery took at least until now."""
        if self._cleared_at is not None:
            self.recoveries.append(t - self._cleared_at)
            self._cleared_at = None

    def feed(self, s: Sample) -> list[Violation]:
        self.samples += 1
        found: list[Violation] = []
        if s.venue is not None:
            if (msg := over_limit(s.venue.positions, self.bounds.limit)) is not None:
                found.append(Violation(self.seed, "max_open_positions", s.t, msg))
            bad = unprotected(s.venue.positions, s.venue.stops)
            found += self._timed(s, "unprotected_exposure", bad, self.bounds.unprotected_s)
        if s.venue is not None and s.temporal is not None:
            bad = unmanaged(s.venue.positions, s.temporal.running.values())
            found += self._timed(s, "unmanaged_exposure", bad, self.bounds.unmanaged_s)
            bad = stuck_exits(s.exits, s.venue.positions, s.temporal.running)
            found += self._timed(s, "exit_not_carried_out", bad, self.bounds.exit_s)
            if s.temporal.slots_used is not None:
                bad = slot_mismatch(s.temporal.slots_used, set(s.venue.positions), s.temporal.running)
                found += self._timed(
                    s, "slots_mismatch", {"slots"} if bad else set(), self.bounds.slots_s, bad
                )
        self._recovery(s)
        self.violations += found
        return found

    def _timed(
        self, s: Sample, name: str, bad: set[str], bound: float, what: set[str] | None = None
    ) -> list[Violation]:
        quiet = s.quiet_since.get(name, 0.0)
        return [
            Violation(
                self.seed,
                name,
                s.t,
                f"{', '.join(sorted(what or {key}))} for {lasting:.1f} s (> {bound:.1f} s)",
            )
            for key, lasting in self.timers[name].update(s.t, bad, quiet, bound)
        ]

    def _recovery(self, s: Sample) -> None:
        if self._cleared_at is None or s.faults_active or not self.clean(s):
            return
        self.recoveries.append(s.t - self._cleared_at)
        self._cleared_at = None

    def clean(self, s: Sample) -> bool:
        """Every sampled invariant holds right now, with no allowance of time."""
        if s.venue is None or s.temporal is None or s.temporal.slots_used is None:
            return False
        pos = s.venue.positions
        return (
            over_limit(pos, self.bounds.limit) is None
            and not unprotected(pos, s.venue.stops)
            and not unmanaged(pos, s.temporal.running.values())
            and s.temporal.slots_used == len(pos)
        )

    def finish(self, t: float) -> None:
        """The seed is over: a recovery still pending lasted until now."""
        if self._cleared_at is not None:
            self.recoveries.append(t - self._cleared_at)
            self._cleared_at = None

"""The automatic emergency stop (ESS): a state machine over `EmergencyState` driven by measured facts.

`EssState` is everything the ESS knows (the current state, the equity peak, the day's realized PnL, the
losing streak, the recent stop-outs and order outcomes, the venue's health). It is a serializable value
carried by its owner (the portfolio workflow, the backtester): a restart resumes it as it was, so a
restart never clears an emergency. `emergency_step(state, event, policy)` is the only way it changes: it
returns the new state and the transitions the event caused, each with its cause, the rule and the figures.
Nothing here reads a clock or does I/O; every event carries its own time (`at_ms`).

The states and what they mean for the gates (`size_factor`, `allows_entries`, `must_flatten`):

* NORMAL: full size.
* WARNING: new entries are cut by `warning_size_factor` (default 0.5).
* CRITICAL: no new entries (exits always work).
* HALTED: flatten everything; no new entries.

How it moves (`TRANSITIONS` is the table of legal moves and their causes):

* Escalation (cause RULE) is automatic: after each event every rule is measured; when the highest level
  any rule reaches is above the current state, the state jumps straight to it. The transition names the
  worst rule and carries every breach with its figures (`Transition.breaches`).
* Recovery (cause RECOVERY) is automatic only from WARNING and CRITICAL, one step at a time (CRITICAL to
  WARNING to NORMAL), and only when all of these hold:
  - the state was entered at least `cool_off_seconds` ago (a state that flickers back the moment a
    figure dips under its threshold would re-open entries into the same storm);
  - no rule at or above the current level was breached during the last `cool_off_seconds` (a breach
    lasts until the event that shows it gone: ticks are how time passing is seen);
  - to reach NORMAL, also no rule of any level breached in the cool-off, and (with
    `recovery_requires_new_high`) an equity mark at or above the equity peak seen since WARNING was
    entered: the losses that caused the alarm were made good, not merely stopped growing. Without equity
    marks there is no automatic return to NORMAL.
* HALTED is never left automatically: only an operator's explicit transition leaves it (positions were
  flattened; resuming is a human decision).
* An operator (cause OPERATOR) may move from any state to any other. Moving DOWN acknowledges what was
  measured: the equity peak is reset to the last equity, the day's realized PnL, the losing streak, the
  stop-out and order windows and the breach times are cleared (otherwise the very next event would
  re-escalate on losses the operator has already looked at). Facts that are still true are kept: an
  active venue ban or outage re-escalates at the next event until its end is reported. The operator's
  event itself is not followed by an evaluation: the operator has the last word for that instant.

Rules (each threshold maps to WARNING, CRITICAL, and where it makes sense HALTED; None disables a level):

* `drawdown`: (peak − equity) / peak in percent, from the highest equity mark so far.
* `daily_loss`: the net realized loss of the trades closed in the current UTC day (a trade reported late,
  from an earlier day, counts for the streak and stop-outs but not for today's loss).
* `losing_streak`: consecutive losing trades in arrival order; a winning trade resets it, a trade at
  exactly 0 leaves it unchanged.
* `stop_outs`: trades closed by a stop at a loss within `stop_out_window_seconds` (freqtrade's
  StoplossGuard, across the book).
* `failed_orders`: the share of failed or rejected orders within `failed_order_window_seconds`, once at
  least `failed_order_min_orders` orders were seen there (1 failure of 1 order is not a rate).
* `venue_ban` / `venue_outage`: while the venue bans the IP, or is unreachable (`venue_ban_level`,
  `venue_outage_level`; NORMAL disables).

Time: the state keeps the latest time seen (`clock_ms`); an event older than that is applied at its own
time for the windows it belongs to, but never moves the clock back. An equity mark older than the latest
one does not replace the current equity (it may still raise the peak), and a venue report older than the
latest one about the same condition is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.governor import EmergencyState
from trading.protections import is_stop_out
from trading.records import ClosedTrade

__all__ = [
    "DAY_MS",
    "SEVERITY",
    "TRANSITIONS",
    "Breach",
    "Cause",
    "EmergencyEvent",
    "EmergencyPolicy",
    "EquityMark",
    "EssState",
    "IllegalEmergencyTransition",
    "OperatorCommand",
    "OrderOutcome",
    "Rule",
    "Thresholds",
    "Tick",
    "TradeClosed",
    "Transition",
    "VenueHealth",
    "allows_entries",
    "breaches",
    "emergency_run",
    "emergency_step",
    "must_flatten",
    "size_factor",
]

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)
DAY_MS = 86_400_000

ES = EmergencyState
SEVERITY: dict[EmergencyState, int] = {ES.NORMAL: 0, ES.WARNING: 1, ES.CRITICAL: 2, ES.HALTED: 3}
_BY_SEVERITY = {v: k for k, v in SEVERITY.items()}


class Cause(StrEnum):
    RULE = "rule"  # escalation: a measured threshold was reached
    RECOVERY = "recovery"  # de-escalation by rule, after the cool-off
    OPERATOR = "operator"  # an operator's explicit transition


class Rule(StrEnum):
    DRAWDOWN = "drawdown"
    DAILY_LOSS = "daily_loss"
    LOSING_STREAK = "losing_streak"
    STOP_OUTS = "stop_outs"
    FAILED_ORDERS = "failed_orders"
    VENUE_BAN = "venue_ban"
    VENUE_OUTAGE = "venue_outage"


_ESC = frozenset({Cause.RULE, Cause.OPERATOR})
_REC = frozenset({Cause.RECOVERY, Cause.OPERATOR})
_OP = frozenset({Cause.OPERATOR})

# from → to → the causes that may make that move. Not listed: not a move at all (a state to itself).
# Up: by rule or operator. Down: one step by recovery or any step by operator. Out of HALTED: operator only.
TRANSITIONS: dict[EmergencyState, dict[EmergencyState, frozenset[Cause]]] = {
    ES.NORMAL: {ES.WARNING: _ESC, ES.CRITICAL: _ESC, ES.HALTED: _ESC},
    ES.WARNING: {ES.NORMAL: _REC, ES.CRITICAL: _ESC, ES.HALTED: _ESC},
    ES.CRITICAL: {ES.NORMAL: _OP, ES.WARNING: _REC, ES.HALTED: _ESC},
    ES.HALTED: {ES.NORMAL: _OP, ES.WARNING: _OP, ES.CRITICAL: _OP},
}


class IllegalEmergencyTransition(ValueError):
    """A move the table does not allow for that cause (a bug in the caller or in this module)."""


# ------------------------------------------------------------------------------------------------ policy
N = TypeVar("N", int, Decimal)


class Thresholds(BaseModel, Generic[N]):
    """The figure at which a rule reaches each level (reached means ≥). None leaves a level out.
    Levels must not decrease: a WARNING threshold above the CRITICAL one would never warn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    warning: N | None = None
    critical: N | None = None
    halt: N | None = None

    @model_validator(mode="after")
    def _positive_and_ascending(self) -> Thresholds[N]:
        set_values = [v for v in (self.warning, self.critical, self.halt) if v is not None]
        if any(v <= 0 for v in set_values):
            raise ValueError("thresholds must be positive (a threshold of 0 would fire on nothing at all)")
        if set_values != sorted(set_values):
            raise ValueError("thresholds must not decrease from warning to critical to halt")
        return self

    def level(self, measured: N) -> tuple[EmergencyState, N] | None:
        """The highest level `measured` reaches, with its threshold."""
        for state, limit in (
            (ES.HALTED, self.halt),
            (ES.CRITICAL, self.critical),
            (ES.WARNING, self.warning),
        ):
            if limit is not None and measured >= limit:
                return state, limit
        return None


class EmergencyPolicy(BaseModel):
    """The ESS's thresholds. Validated: a policy that cannot work is refused by field name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drawdown_pct: Thresholds[Decimal] = Thresholds[Decimal](
        warning=Decimal(5), critical=Decimal(10), halt=Decimal(20)
    )
    daily_loss_usdt: Thresholds[Decimal] = Thresholds[Decimal](warning=Decimal(50), critical=Decimal(100))
    losing_streak: Thresholds[int] = Thresholds[int](warning=3, critical=5)
    stop_outs: Thresholds[int] = Thresholds[int](warning=3, critical=5)
    stop_out_window_seconds: int = Field(3600, gt=0)
    failed_order_rate: Thresholds[Decimal] = Thresholds[Decimal](
        warning=Decimal("0.25"), critical=Decimal("0.5")
    )
    failed_order_window_seconds: int = Field(900, gt=0)
    failed_order_min_orders: int = Field(4, ge=1)
    venue_ban_level: EmergencyState = ES.CRITICAL
    venue_outage_level: EmergencyState = ES.WARNING
    cool_off_seconds: int = Field(3600, ge=0)
    recovery_requires_new_high: bool = True
    warning_size_factor: Decimal = Field(Decimal("0.5"), gt=0, le=1)

    @model_validator(mode="after")
    def _rates_are_fractions(self) -> EmergencyPolicy:
        for v in (
            self.failed_order_rate.warning,
            self.failed_order_rate.critical,
            self.failed_order_rate.halt,
        ):
            if v is not None and v > 1:
                raise ValueError("failed_order_rate thresholds are fractions of the orders (at most 1)")
        return self


# ------------------------------------------------------------------------------------------------ events
class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at_ms: int = Field(ge=0)


class TradeClosed(_Event):
    """A closed trade: its net realized PnL, and whether a stop closed it at a loss."""

    kind: Literal["trade_closed"] = "trade_closed"
    realized_pnl: Decimal
    stop_out: bool = False
    symbol: str | None = None

    @classmethod
    def from_trade(cls, trade: ClosedTrade) -> TradeClosed:
        return cls(
            at_ms=trade.closed_at_ms,
            realized_pnl=trade.realized_pnl,
            stop_out=is_stop_out(trade),
            symbol=trade.symbol,
        )


class OrderOutcome(_Event):
    """One order's outcome: accepted (failed=False), or failed / rejected by the venue."""

    kind: Literal["order"] = "order"
    failed: bool
    detail: str | None = None


class VenueHealth(_Event):
    """A venue condition begins (active) or ends: an IP ban, or the venue unreachable."""

    kind: Literal["venue"] = "venue"
    condition: Literal["ban", "outage"]
    active: bool


class EquityMark(_Event):
    """The account's equity (wallet balance plus unrealized PnL) at a moment."""

    kind: Literal["equity"] = "equity"
    equity: Decimal = Field(ge=0)


class OperatorCommand(_Event):
    """An operator's explicit transition (the only way out of HALTED)."""

    kind: Literal["operator"] = "operator"
    to: EmergencyState
    reason: str = Field(min_length=1, max_length=200)
    operator: str = Field("operator", min_length=1, max_length=64)


class Tick(_Event):
    """Time passing: windows expire, cool-offs elapse."""

    kind: Literal["tick"] = "tick"


EmergencyEvent = Annotated[
    TradeClosed | OrderOutcome | VenueHealth | EquityMark | OperatorCommand | Tick,
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------------------------------ state, records
class Breach(BaseModel):
    """One rule at a level, with the measured figure and the threshold it reached."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Rule
    level: EmergencyState
    measured: str
    limit: str
    text: str


class Transition(BaseModel):
    """One move of the ESS: from, to, why (cause, rule, text with figures) and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    from_state: EmergencyState
    to_state: EmergencyState
    cause: Cause
    rule: str  # a `Rule` value for RULE; "recovery" or "operator" otherwise
    reason: str = Field(min_length=1)
    at_ms: int
    breaches: tuple[Breach, ...] = ()
    operator: str | None = None


class EssState(BaseModel):
    """Everything the ESS knows. JSON-serializable; its owner carries it across restarts and
    continue-as-new, so an emergency survives them. Changed only by `emergency_step`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    state: EmergencyState = ES.NORMAL
    entered_ms: int = Field(0, ge=0)  # when `state` was entered
    clock_ms: int = Field(0, ge=0)  # the latest time seen
    equity: Decimal | None = None
    equity_peak: Decimal | None = None
    new_high_since_entered: bool = False  # an equity mark at or above the peak since `state` was entered
    day: int | None = None  # UTC day (ms // DAY_MS) that `day_realized` belongs to
    day_realized: Decimal = ZERO
    losing_streak: int = Field(0, ge=0)
    stop_outs_ms: tuple[int, ...] = ()  # within the stop-out window
    orders: tuple[tuple[int, bool], ...] = ()  # (time, failed), within the failed-order window
    equity_at_ms: int | None = None  # time of the mark `equity` came from
    venue_down: dict[str, int] = Field(default_factory=dict)  # active condition → since
    venue_seen_ms: dict[str, int] = Field(default_factory=dict)  # condition → time of its latest report
    last_breach_ms: dict[EmergencyState, int] = Field(default_factory=dict)  # level → last time reached

    @property
    def drawdown_pct(self) -> Decimal:
        if self.equity is None or not self.equity_peak:
            return ZERO
        return max(ZERO, (self.equity_peak - self.equity) / self.equity_peak * HUNDRED)

    @property
    def daily_loss(self) -> Decimal:
        return max(ZERO, -self.day_realized)


# ---------------------------------------------------------------------------------------------- gates
def size_factor(state: EmergencyState, policy: EmergencyPolicy) -> Decimal:
    """What new entry sizes are multiplied by in `state`."""
    if state is ES.NORMAL:
        return ONE
    if state is ES.WARNING:
        return policy.warning_size_factor
    return ZERO


def allows_entries(state: EmergencyState) -> bool:
    return state in (ES.NORMAL, ES.WARNING)


def must_flatten(state: EmergencyState) -> bool:
    return state is ES.HALTED


# ---------------------------------------------------------------------------------------------- rules
def _fmt(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def breaches(ess: EssState, policy: EmergencyPolicy) -> list[Breach]:
    """Every rule breached by the measurements in `ess` (at its clock), highest level first."""
    found: list[Breach] = []

    def add(rule: Rule, hit: tuple[EmergencyState, object] | None, measured: str, text: str) -> None:
        if hit is not None:
            level, limit = hit
            limit_s = _fmt(limit) if isinstance(limit, Decimal) else str(limit)
            found.append(Breach(rule=rule, level=level, measured=measured, limit=limit_s, text=text))

    dd = ess.drawdown_pct
    hit = policy.drawdown_pct.level(dd)
    if hit is not None:
        add(
            Rule.DRAWDOWN,
            hit,
            _fmt(dd),
            f"drawdown {_fmt(dd)} % from the equity peak {ess.equity_peak} (equity {ess.equity}) "
            f"≥ {_fmt(hit[1])} %",
        )
    loss = ess.daily_loss
    hit = policy.daily_loss_usdt.level(loss)
    if hit is not None:
        add(
            Rule.DAILY_LOSS, hit, _fmt(loss), f"today's realized loss {_fmt(loss)} USDT ≥ {_fmt(hit[1])} USDT"
        )
    streak_hit = policy.losing_streak.level(ess.losing_streak)
    if streak_hit is not None:
        add(
            Rule.LOSING_STREAK,
            streak_hit,
            str(ess.losing_streak),
            f"{ess.losing_streak} losing trades in a row ≥ {streak_hit[1]}",
        )
    n_stops = len(ess.stop_outs_ms)
    stops_hit = policy.stop_outs.level(n_stops)
    if stops_hit is not None:
        add(
            Rule.STOP_OUTS,
            stops_hit,
            str(n_stops),
            f"{n_stops} stop-outs in the last {policy.stop_out_window_seconds} s ≥ {stops_hit[1]}",
        )
    n_orders = len(ess.orders)
    if n_orders >= policy.failed_order_min_orders:
        failed = sum(1 for _, f in ess.orders if f)
        rate = Decimal(failed) / Decimal(n_orders)
        hit = policy.failed_order_rate.level(rate)
        if hit is not None:
            add(
                Rule.FAILED_ORDERS,
                hit,
                _fmt(rate),
                f"{failed} of {n_orders} orders failed in the last {policy.failed_order_window_seconds} s "
                f"(rate {_fmt(rate)} ≥ {_fmt(hit[1])})",
            )
    for condition, rule, level in (
        ("ban", Rule.VENUE_BAN, policy.venue_ban_level),
        ("outage", Rule.VENUE_OUTAGE, policy.venue_outage_level),
    ):
        since = ess.venue_down.get(condition)
        if since is not None and level is not ES.NORMAL:
            secs = (ess.clock_ms - since) / 1000
            add(rule, (level, "active"), f"{secs:.0f}", f"venue {condition} active for {secs:.0f} s")
    return sorted(found, key=lambda b: -SEVERITY[b.level])


# ----------------------------------------------------------------------------------------------- step
def emergency_step(
    ess: EssState, event: EmergencyEvent, policy: EmergencyPolicy
) -> tuple[EssState, list[Transition]]:
    """The state after `event` and the transitions it caused (at most one). `ess` is never changed."""
    now = max(ess.clock_ms, event.at_ms)
    if isinstance(event, OperatorCommand):
        return _operator(ess, event, now)
    # A breach lasts until an event shows it gone: what was breached before this event was still
    # breached up to now (a venue outage reported over at 50 min was an outage for those 50 min).
    before = breaches(ess, policy)
    observed = _roll(_observe(ess, event, now, policy), now, policy)
    found = breaches(observed, policy)
    last = dict(observed.last_breach_ms)
    for b in (*before, *found):  # a breach at a level also counts for every level below it
        for sev in range(1, SEVERITY[b.level] + 1):
            last[_BY_SEVERITY[sev]] = now
    observed = observed.model_copy(update={"last_breach_ms": last})
    worst = found[0].level if found else ES.NORMAL
    if SEVERITY[worst] > SEVERITY[observed.state]:
        top = found[0]
        extra = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        return _move(
            observed,
            worst,
            Cause.RULE,
            rule=top.rule.value,
            reason=f"{top.text}{extra}",
            now=now,
            breaches_=tuple(found),
        )
    target = _recovery_target(observed, policy, now, worst)
    if target is not None:
        return _move(
            observed,
            target,
            Cause.RECOVERY,
            rule="recovery",
            reason=_recovery_reason(observed, target, policy),
            now=now,
        )
    return observed, []


def emergency_run(
    ess: EssState, events: Iterable[EmergencyEvent], policy: EmergencyPolicy
) -> tuple[EssState, list[Transition]]:
    """Every event in order (a backtest's or a replay's fold); the final state and all transitions."""
    out: list[Transition] = []
    for event in events:
        ess, moved = emergency_step(ess, event, policy)
        out.extend(moved)
    return ess, out


def _observe(ess: EssState, event: EmergencyEvent, now: int, policy: EmergencyPolicy) -> EssState:
    changes: dict[str, object] = {"clock_ms": now}
    if isinstance(event, TradeClosed):
        today = now // DAY_MS
        day_realized = ess.day_realized if ess.day == today else ZERO
        if event.at_ms // DAY_MS == today:  # a late trade from an earlier day is not today's loss
            day_realized += event.realized_pnl
        changes["day"] = today
        changes["day_realized"] = day_realized
        if event.realized_pnl < 0:
            changes["losing_streak"] = ess.losing_streak + 1
        elif event.realized_pnl > 0:
            changes["losing_streak"] = 0
        if event.stop_out:
            changes["stop_outs_ms"] = tuple(sorted((*ess.stop_outs_ms, event.at_ms)))
    elif isinstance(event, OrderOutcome):
        changes["orders"] = tuple(sorted((*ess.orders, (event.at_ms, event.failed))))
    elif isinstance(event, VenueHealth):
        # A report older than the latest one about the same condition is stale: an "ended" delivered
        # after a newer "began" would otherwise clear a ban that is still on.
        if event.at_ms >= ess.venue_seen_ms.get(event.condition, 0):
            down = dict(ess.venue_down)
            if event.active:
                down.setdefault(event.condition, event.at_ms)
            else:
                down.pop(event.condition, None)
            changes["venue_down"] = down
            changes["venue_seen_ms"] = {**ess.venue_seen_ms, event.condition: event.at_ms}
    elif isinstance(event, EquityMark):
        peak = ess.equity_peak
        stale = ess.equity_at_ms is not None and event.at_ms < ess.equity_at_ms
        if stale:
            # An older mark is not the equity now (taking it would hide or invent a drawdown), but it
            # was the equity then: a higher one still raises the peak. It is not a recovery.
            if peak is None or event.equity > peak:
                changes["equity_peak"] = event.equity
        else:
            if peak is None or event.equity >= peak:
                changes["new_high_since_entered"] = True
                peak = event.equity
            changes["equity"] = event.equity
            changes["equity_peak"] = peak
            changes["equity_at_ms"] = event.at_ms
    return ess.model_copy(update=changes)


def _roll(ess: EssState, now: int, policy: EmergencyPolicy) -> EssState:
    """Expire what the windows no longer cover, and start a new day's realized PnL at midnight UTC."""
    stop_from = now - policy.stop_out_window_seconds * 1000
    order_from = now - policy.failed_order_window_seconds * 1000
    today = now // DAY_MS
    return ess.model_copy(
        update={
            "stop_outs_ms": tuple(t for t in ess.stop_outs_ms if t > stop_from),
            "orders": tuple(o for o in ess.orders if o[0] > order_from),
            "day": today,
            "day_realized": ess.day_realized if ess.day == today else ZERO,
        }
    )


def _recovery_target(
    ess: EssState, policy: EmergencyPolicy, now: int, worst_now: EmergencyState
) -> EmergencyState | None:
    """One step down when the recovery rule allows it (see the module docstring), else None."""
    # HALTED never recovers by rule: positions were flattened, resuming is a human decision.
    if ess.state not in (ES.WARNING, ES.CRITICAL):
        return None
    target = _BY_SEVERITY[SEVERITY[ess.state] - 1]
    if SEVERITY[worst_now] > SEVERITY[target]:  # still breached at this level now
        return None
    cool_ms = policy.cool_off_seconds * 1000
    if now - ess.entered_ms < cool_ms:  # too soon after entering: the storm may not be over
        return None
    # Quiet for the cool-off at the level left (for NORMAL: at every level), so a figure hovering
    # around its threshold does not open and close entries on every tick.
    quiet_level = ess.state if target is not ES.NORMAL else ES.WARNING
    last = ess.last_breach_ms.get(quiet_level)
    if last is not None and now - last < cool_ms:
        return None
    if target is ES.NORMAL and policy.recovery_requires_new_high and not ess.new_high_since_entered:
        return None  # the loss that raised the alarm is not made good yet
    return target


def _recovery_reason(ess: EssState, target: EmergencyState, policy: EmergencyPolicy) -> str:
    cool = policy.cool_off_seconds
    if target is not ES.NORMAL:
        return f"no rule at {ess.state.value} or above breached for {cool} s"
    if policy.recovery_requires_new_high:
        return (
            f"no rule breached for {cool} s, and equity reached its peak {ess.equity_peak} "
            f"since {ess.state.value} began"
        )
    return f"no rule breached for {cool} s"


def _move(
    ess: EssState,
    to: EmergencyState,
    cause: Cause,
    *,
    rule: str,
    reason: str,
    now: int,
    breaches_: tuple[Breach, ...] = (),
    operator: str | None = None,
) -> tuple[EssState, list[Transition]]:
    if cause not in TRANSITIONS[ess.state].get(to, frozenset()):
        raise IllegalEmergencyTransition(f"{ess.state.value} → {to.value} is not a legal {cause.value} move")
    record = Transition(
        from_state=ess.state,
        to_state=to,
        cause=cause,
        rule=rule,
        reason=reason,
        at_ms=now,
        breaches=breaches_,
        operator=operator,
    )
    moved = ess.model_copy(update={"state": to, "entered_ms": now, "new_high_since_entered": False})
    return moved, [record]


def _operator(ess: EssState, cmd: OperatorCommand, now: int) -> tuple[EssState, list[Transition]]:
    ess = ess.model_copy(update={"clock_ms": now})
    if cmd.to is ess.state:
        return ess, []
    if SEVERITY[cmd.to] < SEVERITY[ess.state]:
        # Acknowledged: the losses measured so far were looked at; without this the next event would
        # re-escalate on them at once. Facts still true (a venue ban, an outage) are kept.
        ess = ess.model_copy(
            update={
                "equity_peak": ess.equity,
                "day_realized": ZERO,
                "losing_streak": 0,
                "stop_outs_ms": (),
                "orders": (),
                "last_breach_ms": {},
            }
        )
    return _move(
        ess,
        cmd.to,
        Cause.OPERATOR,
        rule="operator",
        reason=f"{cmd.operator}: {cmd.reason}",
        now=now,
        operator=cmd.operator,
    )

"""The portfolio's gates: one pure decision per reservation request, against the book of reservations.

The portfolio workflow owns a `PortfolioBook` and calls `decide` then `apply_grant` for each request
in arrival order, so a decision and its reservation can never be separated by another request (the
seed's 17-of-10 race came from counting and reserving in different places).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from trading.exit_profile import ExitProfile, Level
from trading.intents import Side

if TYPE_CHECKING:  # settings are read at the edges; workflow code never imports pydantic-settings
    from trading.config import Settings

HOUR_MS = 3_600_000
FIVE_MIN_MS = 300_000


class EmergencyState(StrEnum):
    NORMAL = "NORMAL"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    HALTED = "HALTED"


class Gate(StrEnum):
    KILL_SWITCH = "kill_switch"
    EMERGENCY = "emergency_stop"
    ALLOWLIST = "allowlist"
    KILL_SCORE = "kill_score"
    SYMBOL_OPEN = "symbol_open"
    MAX_OPEN_POSITIONS = "max_open_positions"
    COOLDOWN = "cooldown"
    RATE_HOUR = "rate_per_hour"
    RATE_5MIN = "rate_per_5min"
    TOTAL_NOTIONAL = "max_total_notional"
    EXCHANGE_MINIMUM = "exchange_minimum"  # decided by the position: the grant is below the venue's minimum
    VENUE_HALT = "venue_halt"  # decided by the position: the venue banned the IP, entries halt
    ENTRY_DEADLINE = "entry_deadline"  # decided by the position: not executed in time, nothing sent
    FLATTENED = "flattened"  # decided by the position: an emergency flatten came before its entry
    # Appended for the risk layer (trading/protections.py, trading/concentration.py); values are persisted
    # in workflow histories, so members are only ever appended, never renamed.
    SYMBOL_PROTECTION = "symbol_protection"  # the symbol is locked by a protection (cooldown, stop-outs, ...)
    SYMBOL_CONCENTRATION = "symbol_concentration"  # one symbol would hold too much of the budget
    CLUSTER_CONCENTRATION = "cluster_concentration"  # one correlated cluster would hold too much
    HEAT = "portfolio_heat"  # too many entries across the book in the window
    ALLOCATION = "allocation_cap"  # the symbol's capital allocation target leaves no room (trading/risk.py)
    MARGIN_RATIO = "margin_ratio"  # the venue's margin ratio is too high for a new entry (trading/balance.py)
    EQUITY = "equity_exposure"  # the venue's equity leaves no room for the grant (trading/balance.py)


class RiskPolicy(BaseModel):
    """The active limits. Changed only through the portfolio's validated update."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_open_positions: int = Field(10, ge=1, le=10_000)
    max_exec_per_hour: int = Field(3, ge=0)
    max_exec_per_5min: int = Field(2, ge=0)
    max_notional_per_trade_usdt: Decimal = Field(Decimal("200"), gt=0)
    max_total_notional_usdt: Decimal = Field(Decimal("2000"), gt=0)
    symbol_cooldown_seconds: int = Field(60, ge=0)
    kill_score_open_threshold: float = Field(0.85, ge=0, le=1)
    # "*" allows every symbol; otherwise only those listed.
    allowlist: tuple[str, ...] = ("BTCUSDT",)
    kill_switch: bool = False
    # Below this a grant would be refused by the venue anyway (Binance's smallest MIN_NOTIONAL is 5).
    min_grant_usdt: Decimal = Field(Decimal("5"), gt=0)
    # The default exit profile every position gets with its grant (an intent may override parts).
    exit_profile: ExitProfile = Field(default_factory=ExitProfile)

    @field_validator("allowlist")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(s.strip().upper() for s in value if s.strip())

    @field_validator("max_total_notional_usdt")
    @classmethod
    def _total_covers_trade(cls, value: Decimal, info) -> Decimal:
        per_trade = info.data.get("max_notional_per_trade_usdt")
        if per_trade is not None and value < per_trade:
            raise ValueError("max_total_notional_usdt must be at least max_notional_per_trade_usdt")
        return value

    @classmethod
    def from_settings(cls, s: Settings) -> RiskPolicy:
        return cls(
            max_open_positions=s.gov_max_open_positions,
            max_exec_per_hour=s.gov_max_exec_per_hour,
            max_exec_per_5min=s.gov_max_exec_per_5min,
            max_notional_per_trade_usdt=s.gov_max_notional_per_trade_usdt,
            max_total_notional_usdt=s.gov_max_total_notional_usdt,
            symbol_cooldown_seconds=s.gov_symbol_cooldown_seconds,
            kill_score_open_threshold=s.gov_kill_score_open_threshold,
            allowlist=tuple(s.apply_allowlist),
            kill_switch=s.apply_kill_switch,
            exit_profile=ExitProfile(
                harvest_levels=(Level(at=s.harvest_min_r, fraction=Decimal("0.25")),),
                max_unrealized_loss_pct=s.max_unrealized_loss_pct_per_position,
            ),
        )

    def allows_symbol(self, symbol: str) -> bool:
        return "*" in self.allowlist or symbol in self.allowlist


def allowlist_refusal(symbol: str, allowlist: tuple[str, ...]) -> str:
    """Why `symbol` is refused, and the two ways to widen the allowlist: the running portfolio's policy
    (what decides), and APPLY_ALLOWLIST (what a new portfolio starts with)."""
    widened = ",".join((*allowlist, symbol))
    return (
        f"{symbol} is not in the allowlist {list(allowlist)}: widen it with `qtrader portfolio policy "
        f"--set allowlist={widened}` (or `*` for every symbol); APPLY_ALLOWLIST sets the allowlist a "
        "new portfolio starts with"
    )


class ReservationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    holder_id: str = Field(min_length=1)
    symbol: str
    side: Side
    notional_usdt: Decimal = Field(gt=0)
    kill_score: float = Field(0.0, ge=0, le=1)
    intent_id: str | None = None
    # A position found on the venue with no workflow: it exists whatever the limits say, so it is always
    # granted (and flagged when over a limit) to be managed, never ignored.
    adoption: bool = False


class Reservation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holder_id: str
    symbol: str
    side: Side
    notional_usdt: Decimal
    reserved_at_ms: int
    intent_id: str | None = None


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["granted"] = "granted"
    holder_id: str
    notional_usdt: Decimal
    reduced_from: Decimal | None = None  # set when the grant is smaller than asked
    exit_profile: ExitProfile = Field(default_factory=ExitProfile)
    over_limit: str | None = None  # an adoption granted beyond a limit: which one (operators are alerted)


class Denial(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["denied"] = "denied"
    holder_id: str
    gate: Gate
    reason: str


Decision = Grant | Denial


class _BookIndex:
    """PortfolioBook's index: the reservations' count when it was last true, their total notional,
    and the holders of each symbol in the order they reserved."""

    __slots__ = ("holders", "size", "total")

    def __init__(self, reservations: Iterable[Reservation]) -> None:
        self.size = 0
        self.total = Decimal(0)
        self.holders: dict[str, list[str]] = {}
        for r in reservations:
            self.apply(r, added=True)

    def apply(self, res: Reservation, *, added: bool) -> None:
        holders = self.holders.setdefault(res.symbol, [])
        if added:
            holders.append(res.holder_id)
            self.total += res.notional_usdt
            self.size += 1
        else:
            holders.remove(res.holder_id)
            self.total -= res.notional_usdt
            self.size -= 1


class PortfolioBook(BaseModel):
    """Everything the gates look at. Serializable, so it travels through continue-as-new whole."""

    model_config = ConfigDict(extra="forbid")

    reservations: dict[str, Reservation] = Field(default_factory=dict)
    executions_ms: dict[str, list[int]] = Field(default_factory=dict)  # symbol → entry times (1 h kept)
    cooldown_until_ms: dict[str, int] = Field(default_factory=dict)
    emergency: EmergencyState = EmergencyState.NORMAL
    # False from start until the first reconcile has compared the venue with the workflows: until then
    # new entries wait (adoptions of what the venue holds do not).
    reconciled: bool = True

    # An index over `reservations` (total notional; holders by symbol, oldest first), kept by the
    # functions below that change them and rebuilt when the count of reservations shows one added or
    # removed around them (a reservation replaced in place must go through them). Summing every
    # reservation for each decision made 5,000 admissions in one workflow task outlast the SDK's 2 s
    # deadlock limit, and the portfolio stopped deciding.
    _idx: _BookIndex | None = PrivateAttr(default=None)

    def _index(self) -> _BookIndex:
        # __pydantic_private__ directly: a private attribute read through pydantic's __getattr__ cost
        # more per decision than the scan it replaces on a small book.
        idx = self.__pydantic_private__["_idx"]  # type: ignore[index]
        if idx is None or idx.size != len(self.reservations):
            idx = _BookIndex(self.reservations.values())
            self.__pydantic_private__["_idx"] = idx  # type: ignore[index]
        return idx

    def note_reservation(self, before: int, res: Reservation, *, added: bool) -> None:
        """`res` was just added to or removed from `reservations`, which held `before` of them."""
        idx = self.__pydantic_private__["_idx"]  # type: ignore[index]
        if idx is not None and idx.size == before:
            idx.apply(res, added=added)

    def note_resized(self, old: Decimal, new: Decimal) -> None:
        idx = self.__pydantic_private__["_idx"]  # type: ignore[index]
        if idx is not None and idx.size == len(self.reservations):
            idx.total += new - old

    @property
    def total_notional(self) -> Decimal:
        return self._index().total

    def holder_of(self, symbol: str) -> Reservation | None:
        holders = self._index().holders.get(symbol)
        return self.reservations[holders[0]] if holders else None


def decide(book: PortfolioBook, policy: RiskPolicy, req: ReservationRequest, now_ms: int) -> Decision:
    """Grant (possibly reduced to fit the limits) or deny naming the gate. Does not change the book."""
    existing = book.reservations.get(req.holder_id)
    if existing is not None:  # a repeated request from the same holder gets its original answer
        return Grant(
            holder_id=req.holder_id,
            notional_usdt=existing.notional_usdt,
            exit_profile=policy.exit_profile,
        )

    def deny(gate: Gate, reason: str) -> Denial:
        return Denial(holder_id=req.holder_id, gate=gate, reason=reason)

    holder = book.holder_of(req.symbol)
    if req.adoption:
        if holder is not None:  # a live workflow manages that venue position: a second would close it twice
            return deny(Gate.SYMBOL_OPEN, f"{req.symbol} is already managed by {holder.holder_id}")
        return Grant(
            holder_id=req.holder_id,
            notional_usdt=req.notional_usdt,
            exit_profile=policy.exit_profile,
            over_limit=over_limit(book, policy, req.notional_usdt),
        )

    if policy.kill_switch:
        return deny(Gate.KILL_SWITCH, "kill switch is on: no new entries")
    if book.emergency in (EmergencyState.CRITICAL, EmergencyState.HALTED):
        return deny(Gate.EMERGENCY, f"emergency state is {book.emergency.value}: no new entries")
    if not policy.allows_symbol(req.symbol):
        return deny(Gate.ALLOWLIST, allowlist_refusal(req.symbol, policy.allowlist))
    if req.kill_score >= policy.kill_score_open_threshold:
        return deny(
            Gate.KILL_SCORE,
            f"kill score {req.kill_score:.2f} ≥ open threshold {policy.kill_score_open_threshold:.2f}",
        )
    if holder is not None:
        return deny(Gate.SYMBOL_OPEN, f"{req.symbol} already has an open position ({holder.holder_id})")
    if len(book.reservations) >= policy.max_open_positions:
        return deny(
            Gate.MAX_OPEN_POSITIONS,
            f"max open positions reached ({len(book.reservations)}/{policy.max_open_positions})",
        )
    until = book.cooldown_until_ms.get(req.symbol, 0)
    if now_ms < until:
        return deny(Gate.COOLDOWN, f"{req.symbol} is cooling down for {(until - now_ms) / 1000:.0f} s more")
    recent = book.executions_ms.get(req.symbol, [])
    if sum(1 for t in recent if now_ms - t < HOUR_MS) >= policy.max_exec_per_hour:
        return deny(Gate.RATE_HOUR, f"{req.symbol}: {policy.max_exec_per_hour} entries in the last hour")
    if sum(1 for t in recent if now_ms - t < FIVE_MIN_MS) >= policy.max_exec_per_5min:
        return deny(Gate.RATE_5MIN, f"{req.symbol}: {policy.max_exec_per_5min} entries in the last 5 minutes")

    notional = min(req.notional_usdt, policy.max_notional_per_trade_usdt)
    room = policy.max_total_notional_usdt - book.total_notional
    notional = min(notional, room)
    if notional < policy.min_grant_usdt:
        return deny(
            Gate.TOTAL_NOTIONAL,
            f"total notional budget exhausted ({book.total_notional}/{policy.max_total_notional_usdt} USDT)",
        )
    return Grant(
        holder_id=req.holder_id,
        notional_usdt=notional,
        reduced_from=req.notional_usdt if notional < req.notional_usdt else None,
        exit_profile=policy.exit_profile,
    )


def over_limit(book: PortfolioBook, policy: RiskPolicy, notional: Decimal) -> str | None:
    if len(book.reservations) >= policy.max_open_positions:
        return Gate.MAX_OPEN_POSITIONS.value
    if book.total_notional + notional > policy.max_total_notional_usdt:
        return Gate.TOTAL_NOTIONAL.value
    return None


def apply_grant(book: PortfolioBook, req: ReservationRequest, grant: Grant, now_ms: int) -> None:
    if req.holder_id in book.reservations:
        return
    res = Reservation(
        holder_id=req.holder_id,
        symbol=req.symbol,
        side=req.side,
        notional_usdt=grant.notional_usdt,
        reserved_at_ms=now_ms,
        intent_id=req.intent_id,
    )
    book.reservations[req.holder_id] = res
    book.note_reservation(len(book.reservations) - 1, res, added=True)
    times = [t for t in book.executions_ms.get(req.symbol, []) if now_ms - t < HOUR_MS]
    times.append(now_ms)
    book.executions_ms[req.symbol] = times


# Position states that hold a reservation: granted, and not released yet.
HOLDING_STATES = frozenset({"ENTERING", "OPEN", "CLOSING"})


def held_notional(status: str, open_qty: Decimal, entry_price: Decimal, policy: RiskPolicy) -> Decimal | None:
    """What a running position is counted for when a fresh portfolio rebuilds its book; None when it
    holds nothing (not granted yet: its request comes again and is decided; or done and released).
    An open position counts its open notional. One whose fill is not known yet (still entering) counts
    as the largest grant the policy allows: its grant is not visible from outside, and counting less
    could overspend the budget (its fill shrinks the reservation through `adjust`)."""
    if status not in HOLDING_STATES:
        return None
    notional = open_qty * entry_price
    return notional if notional > 0 else policy.max_notional_per_trade_usdt


def restore_reservation(
    book: PortfolioBook, holder_id: str, symbol: str, side: Side, notional_usdt: Decimal, now_ms: int
) -> bool:
    """Count a reservation a running position already holds (a fresh portfolio rebuilding its book), so
    slots and notional include it. Idempotent by holder id: a holder already in the book keeps its one
    reservation, and a request it sends again gets that one back from `decide`, never a second. Not an
    execution: the rate limits count an entry when it is granted. False when it was already there."""
    if holder_id in book.reservations:
        return False
    res = Reservation(
        holder_id=holder_id, symbol=symbol, side=side, notional_usdt=notional_usdt, reserved_at_ms=now_ms
    )
    book.reservations[holder_id] = res
    book.note_reservation(len(book.reservations) - 1, res, added=True)
    return True


def adjust(book: PortfolioBook, holder_id: str, notional_usdt: Decimal) -> bool:
    """Shrink a reservation to what was actually filled. Never grows one (that would skip the gates)."""
    res = book.reservations.get(holder_id)
    if res is None or notional_usdt >= res.notional_usdt:
        return False
    old = res.notional_usdt
    res.notional_usdt = max(notional_usdt, Decimal(0))
    book.note_resized(old, res.notional_usdt)
    return True


def release(
    book: PortfolioBook, policy: RiskPolicy, holder_id: str, now_ms: int, *, cooldown: bool = True
) -> Reservation | None:
    """Free the holder's slot and notional (idempotent: a second release returns None). The symbol
    cools down after a position that traded, not after an entry that never filled."""
    res = book.reservations.pop(holder_id, None)
    if res is not None:
        book.note_reservation(len(book.reservations) + 1, res, added=False)
    if res is not None and cooldown and policy.symbol_cooldown_seconds:
        book.cooldown_until_ms[res.symbol] = now_ms + policy.symbol_cooldown_seconds * 1000
    return res


def prune(book: PortfolioBook, now_ms: int) -> None:
    """Drop history the gates no longer look at, so the book stays small across continue-as-new."""
    book.executions_ms = {
        s: kept for s, ts in book.executions_ms.items() if (kept := [t for t in ts if now_ms - t < HOUR_MS])
    }
    book.cooldown_until_ms = {s: t for s, t in book.cooldown_until_ms.items() if t > now_ms}

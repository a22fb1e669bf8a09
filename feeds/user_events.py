"""Pure decisions of the user-data stream service (`feeds/user_stream.py`): which venue events
matter, what each becomes as an `exchange_event` signal, how a symbol is routed to its position
workflow, and what a REST catch-up tells each tracked position. No I/O here.

Signal argument (a JSON object; decimals as strings, canonical: no exponent, no trailing zeros)::

    {"kind": "order_update" | "account_update" | "algo_update" | "position_snapshot",
     "symbol", "event_ms", "client_order_id", "order_id", "order_status", "exec_type", "order_type",
     "side", "last_qty", "last_price", "realized_pnl", "commission", "position_amt", "entry_price",
     "reason"}

- `order_update` (ORDER_TRADE_UPDATE `o`): forwarded when the execution type is TRADE or the status is
  terminal. `reason` classifies the order: "liquidation" (`autoclose-…` client ids), "adl"
  (`adl_autoclose`), "venue" otherwise.
- `account_update`: one per changed position entry (`a.P[]`); `reason` = `a.m` (ORDER, FUNDING_FEE…).
- `algo_update` (ALGO_UPDATE `o`): forwarded when triggered or ended; `client_order_id` = `caid`,
  `order_id` = `aid` (the algo id), `order_status` = `X`, `last_qty` / `last_price` = the child
  order's `aq` / `ap`.
- `position_snapshot`: from a REST catch-up (positionRisk v3): the venue's `positionAmt` for a tracked
  symbol, "0" when the symbol is absent (flat); `reason` = why the catch-up ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "ALGO_FORWARD",
    "EXPIRED_EVENT",
    "ORDER_TERMINAL",
    "SNAPSHOT_PREFIX",
    "TRACKED_STATUSES",
    "Decoded",
    "Route",
    "canonical_decimal",
    "classify_order",
    "decode",
    "empty_event",
    "parse_route",
    "snapshot_events",
    "snapshot_key",
]

SNAPSHOT_PREFIX = "quantum:position:snapshot:"  # + symbol (activities/projections.py SNAPSHOT_KEY)
TRACKED_STATUSES = frozenset({"OPEN", "CLOSING"})
ORDER_TERMINAL = frozenset({"FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"})
ALGO_FORWARD = frozenset({"TRIGGERED", "FINISHED", "CANCELED", "REJECTED", "EXPIRED"})
EXPIRED_EVENT = "listenKeyExpired"
EVENT_FIELDS = (
    "kind",
    "symbol",
    "event_ms",
    "client_order_id",
    "order_id",
    "order_status",
    "exec_type",
    "order_type",
    "side",
    "last_qty",
    "last_price",
    "realized_pnl",
    "commission",
    "position_amt",
    "entry_price",
    "reason",
)


def snapshot_key(symbol: str) -> str:
    return SNAPSHOT_PREFIX + symbol


def canonical_decimal(value: Any) -> str | None:
    """ "0.000" → "0", "65000.10" → "65000.1", "1E+3" → "1000"; None / "" → None; not a number → as is."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return text
    if not d.is_finite():
        return text
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def classify_order(client_order_id: str | None) -> str:
    cid = client_order_id or ""
    if cid.startswith("autoclose-"):
        return "liquidation"
    if cid.startswith("adl_autoclose"):
        return "adl"
    return "venue"


def empty_event(kind: str, symbol: str, event_ms: int) -> dict[str, Any]:
    ev: dict[str, Any] = dict.fromkeys(EVENT_FIELDS)
    ev.update(kind=kind, symbol=symbol, event_ms=int(event_ms))
    return ev


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return str(value)


@dataclass(slots=True)
class Decoded:
    """One venue message: its type, the signals it yields (may be none) and, for listenKeyExpired,
    the key that expired."""

    etype: str
    event_ms: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    expired_key: str | None = None
    ignored: bool = False  # a type or state not forwarded
    account_reason: str | None = None  # ACCOUNT_UPDATE: why the account changed (ORDER, DEPOSIT, ...)


def decode(msg: Mapping[str, Any]) -> Decoded:
    """A parsed user-data message (raw or `{"stream", "data"}`-wrapped) → what to forward.

    Raises KeyError / TypeError / ValueError on a malformed event of a type we use."""
    data = msg.get("data", msg) if "e" not in msg else msg
    if not isinstance(data, Mapping):
        raise TypeError("not an object")
    etype = data.get("e")
    if not isinstance(etype, str):
        raise ValueError("no event type")
    event_ms = _int_or_none(data.get("E")) or 0
    out = Decoded(etype, event_ms)
    if etype == "ORDER_TRADE_UPDATE":
        o = data["o"]
        x, status = o.get("x"), o.get("X")
        if x != "TRADE" and status not in ORDER_TERMINAL:
            out.ignored = True
            return out
        cid = _str_or_none(o.get("c"))
        ev = empty_event("order_update", str(o["s"]), event_ms)
        ev.update(
            client_order_id=cid,
            order_id=_int_or_none(o.get("i")),
            order_status=_str_or_none(status),
            exec_type=_str_or_none(x),
            order_type=_str_or_none(o.get("o")),
            side=_str_or_none(o.get("S")),
            last_qty=canonical_decimal(o.get("l")),
            last_price=canonical_decimal(o.get("L")),
            realized_pnl=canonical_decimal(o.get("rp")),
            commission=canonical_decimal(o.get("n")),
            reason=classify_order(cid),
        )
        out.events.append(ev)
    elif etype == "ACCOUNT_UPDATE":
        a = data["a"]
        reason = _str_or_none(a.get("m"))
        out.account_reason = reason or "ACCOUNT_UPDATE"
        for p in a.get("P") or ():
            ev = empty_event("account_update", str(p["s"]), event_ms)
            ev.update(
                position_amt=canonical_decimal(p.get("pa")),
                entry_price=canonical_decimal(p.get("ep")),
                reason=reason,
            )
            out.events.append(ev)
    elif etype == "ALGO_UPDATE":
        o = data["o"]
        status = o.get("X")
        if status not in ALGO_FORWARD:
            out.ignored = True
            return out
        ev = empty_event("algo_update", str(o["s"]), event_ms)
        ev.update(
            client_order_id=_str_or_none(o.get("caid")),
            order_id=_int_or_none(o.get("aid")),
            order_status=_str_or_none(status),
            order_type=_str_or_none(o.get("o")),
            side=_str_or_none(o.get("S")),
            last_qty=canonical_decimal(o.get("aq")),
            last_price=canonical_decimal(o.get("ap")),
            reason=_str_or_none(o.get("rm")),
        )
        out.events.append(ev)
    elif etype == EXPIRED_EVENT:
        out.expired_key = _str_or_none(data.get("listenKey"))
    else:
        out.ignored = True  # MARGIN_CALL, ACCOUNT_CONFIG_UPDATE, TRADE_LITE, …: not routed
    return out


# ---- routing ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Route:
    symbol: str
    workflow_id: str
    status: str

    @property
    def tracked(self) -> bool:
        return self.status in TRACKED_STATUSES


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def parse_route(symbol: str, workflow_id: Any, status: Any) -> Route | None:
    """The snapshot hash's `workflow_id` and `status` → a route, or None if it routes nowhere
    (no hash, no workflow id, or a status other than OPEN / CLOSING)."""
    wf, st = _text(workflow_id).strip(), _text(status).strip().upper()
    if not wf or st not in TRACKED_STATUSES:
        return None
    return Route(symbol, wf, st)


def snapshot_events(
    tracked: Iterable[Route],
    positions: Iterable[tuple[str, Any, Any]],
    now_ms: int,
    reason: str,
) -> list[tuple[str, dict[str, Any]]]:
    """(workflow id, position_snapshot event) for every tracked symbol: `positions` are the venue's
    (symbol, positionAmt, entryPrice) rows (one-way mode; rows of one symbol are summed); a tracked
    symbol with no row is flat ("0")."""
    amts: dict[str, Decimal] = {}
    entries: dict[str, Any] = {}
    for symbol, amt, entry in positions:
        try:
            d = Decimal(str(amt))
        except InvalidOperation:
            continue
        amts[symbol] = amts.get(symbol, Decimal(0)) + d
        if d != 0:
            entries[symbol] = entry
    out = []
    for r in tracked:
        ev = empty_event("position_snapshot", r.symbol, now_ms)
        amt = amts.get(r.symbol, Decimal(0))
        ev.update(
            position_amt=canonical_decimal(amt),
            entry_price=canonical_decimal(entries.get(r.symbol)) if amt != 0 else None,
            reason=reason,
        )
        out.append((r.workflow_id, ev))
    return out

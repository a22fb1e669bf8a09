"""Alerts and how each stream entry becomes one (pure: no I/O).

Every decoder takes the entry's fields as text and returns an `Alert`, or None when the entry is not
worth one (a fill that is not a liquidation); a required field that is missing or unreadable raises
`MalformedEvent` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

__all__ = [
    "DECODERS",
    "Alert",
    "Kind",
    "MalformedEvent",
    "Severity",
    "ban_alert",
    "drift_alert",
    "emergency_alert",
    "liquidation_alert",
    "observed_alert",
    "utc",
]


class Kind(StrEnum):
    EMERGENCY = "emergency"
    BAN = "ban"
    LIQUIDATION = "liquidation"
    DRIFT = "drift"
    WORKER_DOWN = "worker_down"
    WORKER_UP = "worker_up"
    DAILY_SUMMARY = "daily_summary"
    TEST = "test"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class MalformedEvent(ValueError):
    """A stream entry lacks a field its alert needs (the message names it)."""


@dataclass(frozen=True, slots=True)
class Alert:
    kind: Kind
    severity: Severity
    title: str
    details: tuple[str, ...] = ()
    # The condition it reports: alerts of one key share a rate limit (a flapping emergency state, a
    # worker that keeps restarting). Default: the kind.
    key: str = ""
    # Set when several entries can tell the same event (each fill of one liquidation order): one alert.
    once: str | None = None
    at_ms: int = 0

    @property
    def condition(self) -> str:
        return self.key or self.kind.value


def utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _need(fields: Mapping[str, str], name: str) -> str:
    value = fields.get(name, "")
    if value == "":
        raise MalformedEvent(f"no {name!r} field")
    return value


def _int(fields: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = fields.get(name, "")
    if value == "" and default is not None:
        return default
    try:
        return int(_need(fields, name))
    except ValueError:
        raise MalformedEvent(f"{name!r} is not an integer: {value!r}") from None


def _dec(fields: Mapping[str, str], name: str) -> Decimal | None:
    value = fields.get(name, "")
    if value == "":
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        raise MalformedEvent(f"{name!r} is not a number: {value!r}") from None


def _signed(value: Decimal) -> str:
    return f"+{value}" if value > 0 else str(value)


# --- quantum:stream:portfolio.emergency (activities/projections.py) --------------------------------
_LEVEL = {"NORMAL": 0, "WARNING": 1, "CRITICAL": 2, "HALTED": 3}


def emergency_alert(fields: Mapping[str, str]) -> Alert | None:
    """A change of the portfolio's emergency state (NORMAL / WARNING / CRITICAL / HALTED) or kill switch."""
    was, now = _need(fields, "from"), _need(fields, "to")
    for name, state in (("from", was), ("to", now)):
        if state not in _LEVEL:
            raise MalformedEvent(f"{name!r} is not an emergency state: {state!r}")
    ks_was = fields.get("kill_switch_from", "false") == "true"
    ks_now = fields.get("kill_switch", "false") == "true"
    parts = []
    if was != now:
        parts.append(f"Emergency state {was} → {now}")
    if ks_was != ks_now:
        parts.append("kill switch ON: new entries are refused" if ks_now else "kill switch off")
    if not parts:
        return None
    if _LEVEL[now] >= _LEVEL["CRITICAL"]:
        severity = Severity.CRITICAL
    elif now != "NORMAL" or (ks_now and not ks_was):
        severity = Severity.WARNING
    else:
        severity = Severity.INFO
    details = []
    if now == "HALTED":
        details.append("No new entries; positions close (emergency flatten) until it is set back to NORMAL.")
    elif now == "CRITICAL":
        details.append("New entries are refused.")
    if fields.get("reason"):
        details.append(f"Why: {fields['reason']}")
    if fields.get("slots_used"):
        details.append(
            f"Open positions {fields['slots_used']}/{fields.get('max_open_positions', '?')}, "
            f"notional {fields.get('notional_used', '?')} / {fields.get('max_total_notional', '?')} USDT"
        )
    at = _int(fields, "updated_at", 0)
    return Alert(Kind.EMERGENCY, severity, "; ".join(parts), tuple(details), key="emergency", at_ms=at)


# --- quantum:stream:venue.ban (exchange/shared_budget.py) ------------------------------------------
def ban_alert(fields: Mapping[str, str]) -> Alert:
    """An IP ban (HTTP 418) that started: nothing is sent to the venue until it ends."""
    until = _int(fields, "until_ms")
    seen = _int(fields, "seen_ms", 0)
    budget = fields.get("budget_id", "")
    details = [
        "Nothing is sent to the venue until then: new entries are refused, exits retry when it ends.",
    ]
    if fields.get("endpoint"):
        details.append(f"Drawn by {fields['endpoint']}" + (f" (IP budget {budget})" if budget else ""))
    if seen:
        details.append(f"Seen at {utc(seen)}, lasting {max(0, until - seen) / 1000:g} s")
    return Alert(
        Kind.BAN,
        Severity.CRITICAL,
        f"IP banned by the venue (HTTP 418) until {utc(until)}",
        tuple(details),
        key=f"ban:{budget}",
        at_ms=seen,
    )


# --- quantum:stream:exchange.normalized (feeds/user_stream.py) -------------------------------------
def liquidation_alert(fields: Mapping[str, str]) -> Alert | None:
    """A fill of a liquidation (`autoclose-…`) or auto-deleveraging order; any other event: None."""
    if fields.get("kind") != "order_update" or fields.get("exec_type") != "TRADE":
        return None
    reason = fields.get("reason")
    if reason not in ("liquidation", "adl"):
        return None
    symbol = _need(fields, "symbol")
    order_id = fields.get("order_id") or fields.get("client_order_id") or "?"
    what = "Liquidation" if reason == "liquidation" else "Auto-deleveraged (ADL)"
    qty, price = fields.get("last_qty") or "?", fields.get("last_price") or "?"
    title = f"{what}: {symbol} {fields.get('side') or ''} {qty} @ {price}".replace("  ", " ")
    details = ["The venue closed the position itself; its workflow takes the venue's fills."]
    pnl, fee = _dec(fields, "realized_pnl"), _dec(fields, "commission")
    if pnl is not None:
        details.append(f"Realized PnL {_signed(pnl)} USDT" + (f", fee {fee} USDT" if fee is not None else ""))
    details.append(f"Order {order_id}")
    return Alert(
        Kind.LIQUIDATION,
        Severity.CRITICAL,
        title,
        tuple(details),
        key=f"liquidation:{symbol}",
        once=f"liquidation:{symbol}:{order_id}",
        at_ms=_int(fields, "event_ms", 0),
    )


# --- quantum:stream:reconcile.events (activities/reconcile.py) -------------------------------------
_DRIFT = {
    "close_gone": (Severity.WARNING, "{symbol}: the position is gone from the venue; its workflow closes"),
    "resize": (Severity.WARNING, "{symbol}: the venue's quantity differs from the workflow's"),
    "adopt": (Severity.WARNING, "{symbol}: a venue position had no workflow; adopted"),
    "cancel_orphan": (Severity.INFO, "{symbol}: an order with no position was cancelled"),
}


def drift_alert(fields: Mapping[str, str]) -> Alert:
    """A difference reconcile found between the venue and the workflows, and what it did about it."""
    kind, symbol = _need(fields, "kind"), _need(fields, "symbol")
    if kind not in _DRIFT:
        raise MalformedEvent(f"'kind' is not a reconcile fix: {kind!r}")
    severity, title = _DRIFT[kind]
    details = []
    if fields.get("detail"):
        details.append(fields["detail"])
    if fields.get("workflow_id"):
        details.append(f"Workflow {fields['workflow_id']}")
    return Alert(
        Kind.DRIFT,
        severity,
        "Reconcile drift: " + title.format(symbol=symbol),
        tuple(details),
        key=f"drift:{symbol}:{kind}",
        at_ms=_int(fields, "timestamp", 0),
    )


# --- quantum:stream:alerts.observed (the notifier's own observations: alerts/sources.py) ------------
def observed_alert(fields: Mapping[str, str]) -> Alert:
    """A worker down or back, the Temporal server unreachable or back, or the daily summary."""
    kind = _need(fields, "kind")
    at = _int(fields, "at_ms", 0)
    if kind in (Kind.WORKER_DOWN, Kind.WORKER_UP):
        what = _need(fields, "what")
        down = kind == Kind.WORKER_DOWN
        details = tuple(line for line in fields.get("details", "").split("\n") if line)
        return Alert(
            Kind(kind),
            Severity.CRITICAL if down else Severity.INFO,
            f"{what}: {'DOWN' if down else 'back'}",
            details,
            key=f"worker:{fields.get('condition') or what}",
            at_ms=at,
        )
    if kind == Kind.DAILY_SUMMARY:
        lines = _need(fields, "text").split("\n")
        return Alert(
            Kind.DAILY_SUMMARY,
            Severity.INFO,
            lines[0],
            tuple(lines[1:]),
            key=f"summary:{fields.get('day', '')}",
            at_ms=at,
        )
    raise MalformedEvent(f"'kind' is not an observation: {kind!r}")


# The decoder of each source, by the name `alerts/sources.py` gives its stream.
DECODERS: dict[str, Callable[[Mapping[str, str]], Alert | None]] = {
    "emergency": emergency_alert,
    "ban": ban_alert,
    "liquidation": liquidation_alert,
    "drift": drift_alert,
    "observed": observed_alert,
}

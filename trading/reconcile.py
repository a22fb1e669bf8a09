"""Reconcile as a pure function: the exchange's positions and open orders against the position
workflows, giving the list of fixes. The exchange is the position truth."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from trading.intents import Side


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VenuePosition(_Row):
    symbol: str
    position_amt: Decimal  # signed
    entry_price: Decimal
    update_ms: int = 0


class VenueOrder(_Row):
    symbol: str
    client_id: str
    algo: bool  # a conditional order on the algo endpoint
    reduce_only: bool


class TrackedPosition(_Row):
    """What a running position workflow believes. `status` UNKNOWN: it runs but could not say (no worker
    answered); its symbol may be anything, so nothing may be adopted or cancelled as an orphan."""

    workflow_id: str
    symbol: str
    side: Side
    open_qty: Decimal
    status: str


UNKNOWN = "UNKNOWN"


class Fix(_Row):
    kind: Literal["close_gone", "adopt", "resize", "cancel_orphan"]
    symbol: str
    field: str  # for the drift metric: position, quantity, order
    workflow_id: str | None = None
    venue_amt: Decimal | None = None
    entry_price: Decimal | None = None
    client_id: str | None = None
    algo: bool = False
    detail: str = ""


ACTIVE = ("OPEN", "CLOSING")
# A venue position must have stood this long before the workflows were listed to be adopted: one that
# changed later may belong to a workflow that started after the listing (or is not visible yet). It is
# adopted on a later round, never twice managed.
ADOPT_AFTER_MS = 15_000


def reconcile(
    venue: list[VenuePosition],
    orders: list[VenueOrder],
    tracked: list[TrackedPosition],
    listed_ms: int,
    *,
    adopt_after_ms: int = ADOPT_AFTER_MS,
) -> list[Fix]:
    """`tracked` is read first, at `listed_ms`, and the venue after it: a workflow that finished in between
    has closed its position (or the venue holds it unowned), and one that started in between touched the
    venue after `listed_ms`."""
    fixes: list[Fix] = []
    # A running workflow that could not say what it holds may be the owner of any venue position or
    # order: adoption and orphan cancels wait for a round where every workflow answered.
    blind = any(t.status == UNKNOWN for t in tracked)
    held = {p.symbol: p for p in venue if p.position_amt != 0}
    mine = {t.symbol: t for t in tracked if t.status in ACTIVE}
    for symbol, t in sorted(mine.items()):
        p = held.get(symbol)
        if p is None:
            fixes.append(
                Fix(
                    kind="close_gone",
                    symbol=symbol,
                    field="position",
                    workflow_id=t.workflow_id,
                    venue_amt=Decimal(0),
                    detail=f"{t.workflow_id} holds {t.open_qty}; the venue is flat",
                )
            )
            continue
        venue_qty = p.position_amt * t.side.sign
        if venue_qty != t.open_qty:
            fixes.append(
                Fix(
                    kind="resize",
                    symbol=symbol,
                    field="quantity",
                    workflow_id=t.workflow_id,
                    venue_amt=p.position_amt,
                    entry_price=p.entry_price,
                    detail=f"workflow {t.open_qty}, venue {p.position_amt}",
                )
            )
    for symbol, p in sorted(held.items()):
        settled = p.update_ms <= listed_ms - adopt_after_ms
        if settled and not blind and symbol not in mine and not any(t.symbol == symbol for t in tracked):
            fixes.append(
                Fix(
                    kind="adopt",
                    symbol=symbol,
                    field="position",
                    venue_amt=p.position_amt,
                    entry_price=p.entry_price,
                    detail=f"{p.position_amt} @ {p.entry_price} with no workflow",
                )
            )
    for o in orders:
        if not blind and o.symbol not in held and o.symbol not in mine and o.reduce_only:
            fixes.append(
                Fix(
                    kind="cancel_orphan",
                    symbol=o.symbol,
                    field="order",
                    client_id=o.client_id,
                    algo=o.algo,
                    detail=f"{'stop' if o.algo else 'order'} {o.client_id} with no position",
                )
            )
    return fixes

"""What every part of PositionWorkflow shares: the fields its `__init__` sets, and the two doors of
the state machine (`_on` for the lifecycle, `_set` for the exit engine's own fields).

PositionWorkflow (workflows/position.py) is put together from plain mixins, one module each, all
derived from `PositionBase`: the entry (position_entry.py), the exits (position_exits.py), the venue
(position_venue.py) and the end (position_records.py). The annotations below are the fields they
work on; the methods one mixin calls on another are named under TYPE_CHECKING, for the reader and the
type checker only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.common import MetricCounter

with workflow.unsafe.imports_passed_through():
    from trading.execution import OpenEntryOutcome, OrderOutcome
    from trading.governor import Denial, Grant
    from trading.intents import TradeIntent
    from trading.pnl import PositionTally
    from trading.position_state import PositionEvent, PositionState, apply, update
    from workflows.messages import (
        CloseResult,
        PositionInput,
        PositionOptions,
        PositionResult,
        PositionStatus,
        PositionView,
    )

E = PositionEvent


@dataclass
class _ExitTicket:
    ticket: int
    quantity: Decimal | None
    reason: str
    controller: str


class PositionBase:
    """The shared fields (set in PositionWorkflow.__init__) and the state's doors."""

    input: PositionInput
    intent: TradeIntent
    options: PositionOptions
    s: PositionState
    # The status as published (search attributes, queries).
    shown: PositionStatus
    _hard_stop_alerts: MetricCounter
    _unreachable_alerts: MetricCounter
    _drift_alerts: MetricCounter
    _died_exposed: MetricCounter
    _published: tuple[Decimal | None, Decimal | None] | None
    _publishing: asyncio.Future[None] | None
    _publish_retry_at: float
    _publish_paused: bool
    _publish_pause: asyncio.Future[None] | None
    _inflight: asyncio.Future[Any] | None
    _queue: list[_ExitTicket]
    _results: dict[int, CloseResult]
    _next_ticket: int
    _projections: list[workflow.ActivityHandle]
    _projection_seq: int
    _continuing: bool
    _indexed_qty: Decimal | None
    _decision: Grant | Denial | None  # set by _govern, answered by the reservation_decided signal

    # ------------------------------------------------------------------ the state
    def _on(self, event: PositionEvent, **data: Any) -> None:
        """Move the state machine (it refuses, loudly, anything that would break an invariant)."""
        self.s = apply(self.s, event, **data)

    def _set(self, **changes: Any) -> None:
        self.s = update(self.s, **changes)

    def _tally(self) -> PositionTally:
        return self.s.tally

    @property
    def status(self) -> PositionStatus:
        return self.s.status

    # ------------------------------------------------------------------ helpers
    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)

    def _enqueue(self, quantity: Decimal | None, reason: str, controller: str) -> int:
        self._next_ticket += 1
        self._queue.append(_ExitTicket(self._next_ticket, quantity, reason, controller))
        return self._next_ticket

    if TYPE_CHECKING:
        # workflows/position.py
        def state(self) -> PositionView: ...
        def _show(self, status: PositionStatus | None = None) -> None: ...
        def _update_details(self) -> None: ...

        # workflows/position_entry.py
        async def _entered(self, entry: OpenEntryOutcome) -> None: ...
        async def _release_if_held(self, reason: str) -> None: ...

        # workflows/position_exits.py
        def _levels(self) -> tuple[Decimal | None, Decimal | None]: ...
        def _publish_levels(self, *, remove: bool = False) -> None: ...
        def _answer(self, ticket: _ExitTicket, detail: str) -> None: ...
        def _exit_outcome(
            self, outcome: OrderOutcome, reason: str | None, controller: str | None
        ) -> bool: ...

        # workflows/position_venue.py
        async def _replace_hard_stop(self, price: Decimal) -> None: ...
        async def _cancel_hard_stop(self) -> None: ...
        def _venue_unreachable(self, what: str, err: BaseException) -> None: ...
        def _venue_reachable(self) -> None: ...
        async def _settle_with_venue(self) -> None: ...
        async def _correct_drift(self) -> None: ...
        async def _place(self, side: str, qty: Decimal, step: str, *, reduce_only: bool) -> OrderOutcome: ...

        # workflows/position_records.py
        def _project(
            self,
            kind: str,
            *,
            action: str | None = None,
            outcome: OrderOutcome | None = None,
            result: PositionResult | None = None,
        ) -> None: ...

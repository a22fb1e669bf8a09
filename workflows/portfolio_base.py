"""What every part of PortfolioWorkflow shares: the fields its `__init__` sets, the patch ids, and the
small steps all of them take (the clock, a change noted, a failed step counted).

Versioning: portfolios run forever, so each change to the command sequence is behind `workflow.patched`
(the patch ids below); recorded histories and running portfolios keep replaying the first version.

PortfolioWorkflow (workflows/portfolio.py) is put together from plain mixins, one module each, all
derived from `PortfolioBase`; the methods one mixin calls on another are named under TYPE_CHECKING,
for the reader and the type checker only.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.common import MetricCounter, MetricGauge, MetricGaugeFloat, MetricMeter
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from trading.emergency import SEVERITY
    from trading.governor import Denial, Grant, PortfolioBook, ReservationRequest, RiskPolicy
    from trading.risk import RiskLayerPolicy, RiskState
    from workflows.messages import (
        START_BATCH,
        AdmitIntent,
        EssMove,
        PendingFlatten,
        PortfolioInput,
        PortfolioView,
    )

PROJECTION_INTERVAL_S = 2.0

# Patch ids (see the module docstring).
PATCH_SURVIVE = "portfolio-survives-failed-activities"
PATCH_REBUILD = "portfolio-rebuilds-book-on-fresh-start"
PATCH_FLATTEN = "portfolio-flatten-until-released"
PATCH_TIMERS = "portfolio-steps-on-timers"
PATCH_RISK = "portfolio-risk-layer"
PATCH_RESTORE = "portfolio-restores-previous-run"
PATCH_START_BY_ACTIVITY = "portfolio-starts-admitted-by-activity"
PATCH_ADMIT_IN_SLICES = "portfolio-admits-in-slices"
# At most this many intents decided in one go, and a next go only while fewer than
# ADMISSION_CALLS_MAX start or refusal activities run: one workflow task sends at most about 1,000
# position starts (~1 MB of activity input) however many intents are waiting.
ADMIT_SLICE = 5 * START_BATCH
ADMISSION_CALLS_MAX = 6


class PortfolioBase:
    """The shared fields (set in PortfolioWorkflow.__init__) and the steps every part takes."""

    input: PortfolioInput
    policy: RiskPolicy
    book: PortfolioBook
    pending: list[ReservationRequest]
    last_decisions: list[Grant | Denial]
    granted_total: int
    denied_total: int
    _flattens: list[PendingFlatten]
    # The risk layer (None: the governor's gates alone, as before it existed).
    risk: RiskLayerPolicy | None
    risk_state: RiskState
    ess_moves: list[EssMove]
    _ess_unpublished: list[EssMove]
    _ess_publishing: asyncio.Future[None] | None
    _risk_seen: list[str]
    # False on a fresh run until it has rebuilt its book: until then nothing is decided.
    _book_known: bool
    _released_early: set[str]
    _adjusted_early: dict[str, Decimal]
    _deliveries: list[asyncio.Future[None]]
    # Intents to decide before any workflow exists for them, and the starts of the granted ones.
    admissions: list[AdmitIntent]
    _starting: set[str]
    _starts: list[asyncio.Future[None]]
    _refusing: list[asyncio.Future[None]]
    _sliced: bool
    _projections: list[asyncio.Future[None]]
    _dirty: bool
    _projected_at: float
    _check_due: bool
    _projection_resting: bool
    _rest: asyncio.Future[None] | None
    _meter: MetricMeter
    _allow: MetricCounter
    _deny: MetricCounter
    _slots: MetricGauge
    _open: MetricGauge
    _adopted_over: MetricCounter
    _notional: MetricGaugeFloat
    _step_failures: MetricCounter
    _ess_gauge: MetricGauge
    _ess_transitions: MetricCounter

    # ------------------------------------------------------------------ helpers
    def _now_ms(self) -> int:
        return int(workflow.now().timestamp() * 1000)

    def _step_failed(self, step: str, err: ActivityError | None) -> None:
        self._step_failures.add(1, {"step": step})
        if err is not None:
            workflow.logger.warning("portfolio %s failed (tried again later): %s", step, err.cause or err)

    def _changed(self) -> None:
        self._dirty = True
        self._record_gauges()

    def _record_gauges(self) -> None:
        if self.risk is not None:
            self._ess_gauge.set(SEVERITY[self.risk_state.ess.state])
        self._slots.set(len(self.book.reservations))
        self._open.set(len(self.book.reservations))
        self._notional.set(float(self.book.total_notional))

    if TYPE_CHECKING:
        # workflows/portfolio.py
        def state(self) -> PortfolioView: ...

        # workflows/portfolio_decisions.py
        def _actionable(self) -> list[ReservationRequest]: ...
        async def _decide_pending(self) -> None: ...
        def _decide(self, req: ReservationRequest, now_ms: int) -> Grant | Denial: ...
        def _record_decision(
            self, req: ReservationRequest, decision: Grant | Denial, now_ms: int
        ) -> None: ...

        # workflows/portfolio_admission.py
        def _admissible(self) -> bool: ...
        def _admit(self, now_ms: int) -> list[Grant | Denial]: ...

        # workflows/portfolio_holders.py
        def _flatten_due(self) -> bool: ...
        async def _flatten_holders(self) -> None: ...
        async def _retell_flattens(self) -> None: ...
        async def _release_stopped_holders(self) -> None: ...

        # workflows/portfolio_risk.py
        def _risk_tick(self) -> None: ...
        def _ess_publish_ready(self) -> bool: ...
        def _publish_ess_moves(self) -> None: ...

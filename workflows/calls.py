"""Every activity the workflows call, declared once: its name (the activity type in histories), what it
takes and returns, its task queue, timeouts and retry policy (the policies: workflows/retries.py).

Workflows call the typed stubs (`await calls.PREPARE_ENTRY.run(PrepareEntryInput(...))`, or
`calls.OPEN_ENTRY.start(...)` for a handle); the implementations take their names from here
(`@activity.defn(name=calls.PREPARE_ENTRY.name)`), so a renamed activity fails at import, and
tests/workflows/test_calls.py holds the two sides together: each declaration is registered by exactly one
worker (the one on its task queue), each registered activity is declared, and the argument and result
types agree.

What a stub sends is a ScheduleActivityTask command that running workflows and committed histories
carry: a changed name, argument shape or task queue breaks their replay, and a changed timeout or retry
policy changes what running positions do. A call site that legitimately differs says so with
`with_options(...)` where it calls.

Imports only temporalio, the standard library and the message types: workflow code imports this module
(the activity implementations, with their HTTP and Redis clients, stay out of it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, Generic, Self, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy

from trading.execution import (
    CancelStopInput,
    EntryMarket,
    ExchangePosition,
    ExchangePositionInput,
    MarkPriceInput,
    OpenEntryInput,
    OpenEntryOutcome,
    OrderOutcome,
    PlaceOrderInput,
    PlaceStopInput,
    PrepareEntryInput,
    SetLeverageInput,
    StopOutcome,
    SymbolCheck,
    SymbolCheckInput,
    SyncFillsInput,
)
from trading.governor import ReservationRequest
from trading.market_inputs import MarketInputs
from trading.pnl import Fill
from trading.policy_review import Proposal
from trading.reconcile import Fix, TrackedPosition
from trading.records import ClosedTrade
from workflows.messages import (
    EXCHANGE_TASK_QUEUE,
    INFERENCE_TASK_QUEUE,
    LIFECYCLE_TASK_QUEUE,
    ChallengerReport,
    DecisionBatch,
    EssMove,
    EvaluateShadowInput,
    InferenceInput,
    InferenceResult,
    MarketInputsRequest,
    PolicyReviewInput,
    PortfolioView,
    PositionStarts,
    ProjectionInput,
    PublishLevelsInput,
    QuoteVolumes,
    Refusal,
    ReviewContext,
    RunningHolder,
    SetStageInput,
    ShadowSignalsInput,
    TrainChallengerInput,
    UniverseInput,
    VenueState,
)
from workflows.retries import (
    DELIVERY_RETRY,
    FIVE_TRIES,
    FIVE_TRIES_FAST,
    LEVELS_RETRY,
    MARK_RETRY,
    ORDER_ATTEMPT_TIMEOUT,
    ORDER_RETRY,
    REBUILD_RETRY,
    RECORD_RETRY,
    THREE_TRIES,
    TRAIN_RETRY,
    TWO_TRIES,
    VENUE_RETRY,
    WAIT_FOR_BARS,
)

In = TypeVar("In")
A = TypeVar("A")
B = TypeVar("B")
Out = TypeVar("Out")
_RETURNS_NOTHING = type(None)


@dataclass(frozen=True, kw_only=True)
class _Declared(Generic[Out]):
    """What every activity call carries; the subclasses say how many arguments it takes."""

    name: str  # the activity type: in every history that scheduled it
    task_queue: str  # the worker that registers it (a local activity: the calling workflow's own)
    start_to_close_timeout: timedelta  # per attempt
    retry_policy: RetryPolicy
    output: type[Out] = _RETURNS_NOTHING  # the result type the workflow decodes
    schedule_to_close_timeout: timedelta | None = None  # all attempts together
    heartbeat_timeout: timedelta | None = None
    local: bool = False  # a local activity: run by the calling workflow's worker, no task queue sent

    @property
    def inputs(self) -> tuple[Any, ...]:
        """The argument types, in order."""
        raise NotImplementedError

    def with_options(
        self,
        *,
        start_to_close_timeout: timedelta | None = None,
        schedule_to_close_timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> Self:
        """The same activity with some options of one call site changed (those given)."""
        given = {
            "start_to_close_timeout": start_to_close_timeout,
            "schedule_to_close_timeout": schedule_to_close_timeout,
            "heartbeat_timeout": heartbeat_timeout,
            "retry_policy": retry_policy,
        }
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    def _start(self, *args: Any) -> workflow.ActivityHandle[Out]:
        # Exactly what `workflow.execute_activity(name, arg, ...)` scheduled: the same command, the same
        # payloads (`args=[arg]` is how the SDK sends a single `arg`), nothing left to a default that
        # was set before.
        result_type = None if self.output is _RETURNS_NOTHING else self.output
        if self.local:
            return workflow.start_local_activity(
                self.name,
                args=list(args),
                result_type=result_type,
                start_to_close_timeout=self.start_to_close_timeout,
                schedule_to_close_timeout=self.schedule_to_close_timeout,
                retry_policy=self.retry_policy,
            )
        return workflow.start_activity(
            self.name,
            args=list(args),
            task_queue=self.task_queue,
            result_type=result_type,
            start_to_close_timeout=self.start_to_close_timeout,
            schedule_to_close_timeout=self.schedule_to_close_timeout,
            heartbeat_timeout=self.heartbeat_timeout,
            retry_policy=self.retry_policy,
        )


@dataclass(frozen=True, kw_only=True)
class Activity(_Declared[Out], Generic[In, Out]):
    """An activity of one argument."""

    input: type[In]

    @property
    def inputs(self) -> tuple[Any, ...]:
        return (self.input,)

    async def run(self, arg: In) -> Out:
        """Schedule it and wait for its result (`workflow.execute_activity`)."""
        return await self.start(arg)

    def start(self, arg: In) -> workflow.ActivityHandle[Out]:
        """Schedule it now; the handle is its result (`workflow.start_activity`)."""
        return self._start(arg)


@dataclass(frozen=True, kw_only=True)
class NoArgActivity(_Declared[Out]):
    """An activity that takes no argument (none is sent, not even null)."""

    @property
    def inputs(self) -> tuple[Any, ...]:
        return ()

    async def run(self) -> Out:
        return await self.start()

    def start(self) -> workflow.ActivityHandle[Out]:
        return self._start()


@dataclass(frozen=True, kw_only=True)
class TwoArgActivity(_Declared[Out], Generic[A, B, Out]):
    """An activity of two positional arguments (sent as two payloads)."""

    first: type[A]
    second: type[B]

    @property
    def inputs(self) -> tuple[Any, ...]:
        return (self.first, self.second)

    async def run(self, first: A, second: B) -> Out:
        return await self.start(first, second)

    def start(self, first: A, second: B) -> workflow.ActivityHandle[Out]:
        return self._start(first, second)


# ------------------------------------------------------------------ task queue `exchange`
# activities/exchange.py and activities/reconcile.py (VenueReadActivities); workers/exchange_worker.py
PREPARE_ENTRY = Activity(
    name="prepare_entry",
    input=PrepareEntryInput,
    output=EntryMarket,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=VENUE_RETRY,
)
OPEN_ENTRY = Activity(  # sizing, leverage and the entry order in one
    name="open_entry",
    input=OpenEntryInput,
    output=OpenEntryOutcome,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
    retry_policy=ORDER_RETRY,
)
SET_LEVERAGE = Activity(  # registered, called by no workflow (open_entry sets the leverage)
    name="set_leverage",
    input=SetLeverageInput,
    output=int,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=VENUE_RETRY,
)
GET_MARK_PRICE = Activity(
    name="get_mark_price",
    input=MarkPriceInput,
    output=Decimal,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=5),
    retry_policy=MARK_RETRY,
)
GET_POSITION = Activity(
    name="get_position",
    input=ExchangePositionInput,
    output=ExchangePosition,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=VENUE_RETRY,
)
PLACE_ORDER = Activity(
    name="place_order",
    input=PlaceOrderInput,
    output=OrderOutcome,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
    retry_policy=ORDER_RETRY,
)
PLACE_STOP = Activity(
    name="place_stop",
    input=PlaceStopInput,
    output=StopOutcome,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=ORDER_ATTEMPT_TIMEOUT,
    retry_policy=ORDER_RETRY,
)
CANCEL_STOP = Activity(
    name="cancel_stop",
    input=CancelStopInput,
    output=bool,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=VENUE_RETRY,
)
SYNC_FILLS = Activity(
    name="sync_fills",
    input=SyncFillsInput,
    output=list[Fill],  # type: ignore[arg-type]
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=20),
    retry_policy=VENUE_RETRY,
)
VENUE_STATE = NoArgActivity(
    name="venue_state",
    output=VenueState,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)
CANCEL_ORPHAN = Activity(
    name="cancel_orphan",
    input=Fix,
    output=bool,
    task_queue=EXCHANGE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)

# ------------------------------------------------------------------ task queue `trade-lifecycle`
# activities/{market,portfolio,projections,reconcile,journal,market_inputs,policy_review}.py;
# workers/lifecycle.py
CHECK_SYMBOL = Activity(  # a local activity of the position workflow
    name="check_symbol",
    input=SymbolCheckInput,
    output=SymbolCheck,
    task_queue=LIFECYCLE_TASK_QUEUE,
    local=True,
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=VENUE_RETRY,
)
REQUEST_RESERVATION = TwoArgActivity(  # (portfolio id, request): signal-with-start of the portfolio
    name="request_reservation",
    first=str,
    second=ReservationRequest,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=10),
    retry_policy=VENUE_RETRY,
)
DELIVER_DECISIONS = Activity(
    name="deliver_decisions",
    input=DecisionBatch,
    output=list[str],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=DELIVERY_RETRY,
)
FIND_STOPPED_HOLDERS = Activity(
    name="find_stopped_holders",
    input=list[str],  # type: ignore[arg-type]
    output=list[str],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=THREE_TRIES,
)
PREVIOUS_PORTFOLIO_STATE = NoArgActivity(
    name="previous_portfolio_state",
    output=PortfolioView | None,  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=THREE_TRIES,
)
RUNNING_HOLDERS = NoArgActivity(
    name="running_holders",
    output=list[RunningHolder],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=REBUILD_RETRY,
)
PROJECT_PORTFOLIO = Activity(
    name="project_portfolio",
    input=PortfolioView,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=5),
    retry_policy=TWO_TRIES,
)
PUBLISH_ESS_MOVES = Activity(
    name="publish_ess_moves",
    input=list[EssMove],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=5),
    retry_policy=THREE_TRIES,
)
START_POSITIONS = Activity(  # the admitted intents' PositionWorkflows, started together
    name="start_positions",
    input=PositionStarts,
    output=list[str],  # type: ignore[arg-type]  # the ids that ran before: nothing started for them
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=60),
    # Past this the holder check frees the slots of whatever did not start.
    schedule_to_close_timeout=timedelta(minutes=5),
    retry_policy=DELIVERY_RETRY,
)
PUBLISH_REFUSALS = Activity(  # intents the portfolio refused before any workflow existed for them
    name="publish_refusals",
    input=list[Refusal],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=5),
    retry_policy=THREE_TRIES,
)
PROJECT_POSITION = Activity(
    name="project_position",
    input=ProjectionInput,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=5),
    schedule_to_close_timeout=timedelta(hours=1),
    retry_policy=RECORD_RETRY,
)
PUBLISH_LEVELS = Activity(
    name="publish_levels",
    input=PublishLevelsInput,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=5),
    retry_policy=LEVELS_RETRY,
)
JOURNAL_TRADE = Activity(
    name="journal_trade",
    input=ClosedTrade,
    output=bool,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=10),
    schedule_to_close_timeout=timedelta(days=1),  # a database outage of up to a day
    retry_policy=RECORD_RETRY,
)
TRACKED_POSITIONS = NoArgActivity(
    name="tracked_positions",
    output=list[TrackedPosition],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=FIVE_TRIES_FAST,
)
TELL_POSITION = Activity(
    name="tell_position",
    input=Fix,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)
ADOPT_POSITION = Activity(
    name="adopt_position",
    input=Fix,
    output=str,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)
RECORD_RECONCILE = Activity(
    name="record_reconcile",
    input=list[Fix],  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)
COMPUTE_MARKET_INPUTS = Activity(
    name="compute_market_inputs",
    input=MarketInputsRequest,
    output=MarketInputs | None,  # type: ignore[arg-type]
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(minutes=2),
    retry_policy=FIVE_TRIES,
)
DELIVER_MARKET_INPUTS = Activity(
    name="deliver_market_inputs",
    input=MarketInputs,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES,
)
POLICY_REVIEW_FACTS = Activity(
    name="policy_review_facts",
    input=PolicyReviewInput,
    output=ReviewContext,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(minutes=1),
    retry_policy=FIVE_TRIES,
)
APPLY_POLICY_PROPOSAL = Activity(  # refused: ErrorType.STALE_PROPOSAL or PROPOSAL_REFUSED
    name="apply_policy_proposal",
    input=Proposal,
    task_queue=LIFECYCLE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES,
)

# ------------------------------------------------------------------ task queue `inference`
# activities/{inference,universe,learning}.py; workers/inference_worker.py
INFER_BAR = Activity(
    name="infer_bar",
    input=InferenceInput,
    output=InferenceResult,
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=120),
    retry_policy=FIVE_TRIES_FAST,
)
PUBLISH_DECISIONS = Activity(
    name="publish_decisions",
    input=InferenceResult,
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)
QUOTE_VOLUMES = Activity(
    name="quote_volumes",
    input=UniverseInput,
    output=QuoteVolumes,
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    schedule_to_close_timeout=timedelta(minutes=10),
    retry_policy=WAIT_FOR_BARS,
)
STORE_UNIVERSE = Activity(
    name="store_universe",
    input=list[str],  # type: ignore[arg-type]
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES_FAST,
)
# One bar's shadow predictions (bar close); RetrainWorkflow publishes a window's with 5 min, FIVE_TRIES.
PUBLISH_SHADOW_SIGNALS = Activity(
    name="publish_shadow_signals",
    input=ShadowSignalsInput,
    output=int,
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=60),
    retry_policy=THREE_TRIES,
)
EVALUATE_SHADOW = Activity(
    name="evaluate_shadow",
    input=EvaluateShadowInput,
    output=ChallengerReport | None,  # type: ignore[arg-type]
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(minutes=10),
    retry_policy=TRAIN_RETRY,
)
RETRAIN_CHALLENGER = Activity(
    name="retrain_challenger",
    input=TrainChallengerInput,
    output=ChallengerReport,
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(hours=2),
    heartbeat_timeout=timedelta(minutes=10),
    retry_policy=TRAIN_RETRY,
)
SET_MODEL_STAGE = Activity(
    name="set_model_stage",
    input=SetStageInput,
    output=str,
    task_queue=INFERENCE_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=FIVE_TRIES,
)


def declared() -> list[_Declared[Any]]:
    """Every declaration above, in order."""
    return [v for v in globals().values() if isinstance(v, _Declared)]

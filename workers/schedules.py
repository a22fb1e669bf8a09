"""The Temporal Schedules the workers keep: reconcile, market inputs and the policy review (started by the
lifecycle worker), the signal layer's bar close and universe, and retraining (started by the inference
worker). Each is created if missing; the signal and retrain ones are brought up to date with the
settings on every start."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)

from trading.config import Settings
from trading.promotion import PromotionPolicy
from workflows.market_inputs import MARKET_INPUTS_WORKFLOW_ID
from workflows.messages import (
    INFERENCE_TASK_QUEUE,
    LIFECYCLE_TASK_QUEUE,
    BarCloseInput,
    MarketInputsRequest,
    PolicyReviewInput,
    RetrainInput,
    RetrainWindow,
    UniverseInput,
)
from workflows.policy_review import POLICY_REVIEW_WORKFLOW_ID
from workflows.retrain import RETRAIN_WORKFLOW_ID

RECONCILE_SCHEDULE_ID = "reconcile-schedule"
MARKET_INPUTS_SCHEDULE_ID = "market-inputs-schedule"
POLICY_REVIEW_SCHEDULE_ID = "policy-review-schedule"
RETRAIN_SCHEDULE_ID = "retrain-schedule"
BAR_CLOSE_SCHEDULE_ID = "bar-close-schedule"
UNIVERSE_SCHEDULE_ID = "universe-schedule"


async def ensure_reconcile_schedule(client: Client, every_s: float, *, run_now: bool) -> None:
    """The Temporal Schedule that runs ReconcileWorkflow every `every_s` (overlaps skipped); with
    `run_now`, one run at once (the startup reconcile the portfolio waits for)."""
    action = ScheduleActionStartWorkflow("ReconcileWorkflow", id="reconcile", task_queue=LIFECYCLE_TASK_QUEUE)
    handle = await _ensure_interval_schedule(client, RECONCILE_SCHEDULE_ID, action, every_s)
    if run_now:
        await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)


async def ensure_market_inputs_schedule(client: Client, settings: Settings) -> None:
    """The Temporal Schedule that runs MarketInputsWorkflow every `RISK_INPUTS_INTERVAL_MINUTES`."""
    req = MarketInputsRequest(
        interval=settings.signal_timeframe, window_bars=settings.risk_inputs_window_bars
    )
    action = ScheduleActionStartWorkflow(
        "MarketInputsWorkflow", req, id=MARKET_INPUTS_WORKFLOW_ID, task_queue=LIFECYCLE_TASK_QUEUE
    )
    await _ensure_interval_schedule(
        client, MARKET_INPUTS_SCHEDULE_ID, action, settings.risk_inputs_interval_minutes * 60
    )


async def ensure_policy_review_schedule(client: Client, settings: Settings) -> None:
    """The Temporal Schedule that runs PolicyReviewWorkflow every `POLICY_REVIEW_INTERVAL_HOURS`, over
    as many hours of trades (a proposal waits as long for its verdict)."""
    hours = settings.policy_review_interval_hours
    req = PolicyReviewInput(window_hours=hours, approval_hours=hours)
    action = ScheduleActionStartWorkflow(
        "PolicyReviewWorkflow", req, id=POLICY_REVIEW_WORKFLOW_ID, task_queue=LIFECYCLE_TASK_QUEUE
    )
    await _ensure_interval_schedule(client, POLICY_REVIEW_SCHEDULE_ID, action, hours * 3600)


async def _ensure_interval_schedule(
    client: Client, schedule_id: str, action: ScheduleActionStartWorkflow, every_s: float
) -> ScheduleHandle:
    """Create the schedule unless it exists (one that exists is kept as it is; overlaps skipped)."""
    schedule = Schedule(
        action=action,
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every_s))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    handle, _ = await _create_unless_exists(client, schedule_id, schedule)
    return handle


async def _create_unless_exists(
    client: Client, schedule_id: str, schedule: Schedule
) -> tuple[ScheduleHandle, bool]:
    """Create the schedule; (its handle, whether it already existed). Create first and take "already
    running" as the answer: a describe-then-create lets two workers starting together (scaled out on
    the same queues) both see none, and the loser's create raised and killed that worker at startup."""
    try:
        return await client.create_schedule(schedule_id, schedule), False
    except ScheduleAlreadyRunningError:
        return client.get_schedule_handle(schedule_id), True


def retrain_schedule(settings: Settings) -> Schedule:
    """RetrainWorkflow every `RETRAIN_INTERVAL_HOURS` (default daily) on the `inference` task queue,
    with the models, window, promotion margin and shadow mode of the settings (overlaps skipped)."""
    inp = RetrainInput(
        models=list(settings.retrain_models),
        window=RetrainWindow(
            symbols=list(settings.retrain_symbols),
            timeframe=settings.signal_timeframe,
            window_bars=settings.retrain_window_bars,
            holdout_bars=settings.retrain_holdout_bars,
        ),
        shadow_mode=settings.shadow_mode,
        policy=PromotionPolicy(min_auc_gain=settings.retrain_min_auc_gain),
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "RetrainWorkflow", inp, id=RETRAIN_WORKFLOW_ID, task_queue=INFERENCE_TASK_QUEUE
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(hours=settings.retrain_interval_hours))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def upsert_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create the Schedule, or bring an existing one up to date (settings may have changed)."""
    handle, existed = await _create_unless_exists(client, schedule_id, schedule)
    if existed:
        await handle.update(lambda _u: ScheduleUpdate(schedule=schedule))


async def ensure_retrain_schedule(client: Client, settings: Settings) -> None:
    await upsert_schedule(client, RETRAIN_SCHEDULE_ID, retrain_schedule(settings))


async def ensure_signal_schedules(client: Client, settings: Settings) -> dict[str, float]:
    """The Schedules of the signal layer, created or brought up to date with the settings: BarCloseWorkflow
    every bar (`BAR_CLOSE_INTERVAL_SECONDS`, default one `SIGNAL_TIMEFRAME` bar of market time) and
    UniverseWorkflow every `UNIVERSE_INTERVAL_SECONDS` (overlaps skipped). Returns id → period (s)."""
    out = {}
    for schedule_id, schedule in signal_schedules(settings).items():
        await upsert_schedule(client, schedule_id, schedule)
        out[schedule_id] = schedule.spec.intervals[0].every.total_seconds()
    return out


def signal_schedules(settings: Settings) -> dict[str, Schedule]:
    """Schedule id → the Schedule the settings ask for (see `ensure_signal_schedules`)."""
    every = max(1.0, settings.bar_close_interval_seconds or settings.bar_seconds)
    # a live bar is run a few seconds after it closes, so its closed kline has arrived
    offset = 0.0 if settings.market_data_source == "replay" else min(5.0, every / 2)
    bar_close = Schedule(
        action=ScheduleActionStartWorkflow(
            "BarCloseWorkflow",
            BarCloseInput(interval=settings.signal_timeframe),
            id="bar-close",
            task_queue=INFERENCE_TASK_QUEUE,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=every), offset=timedelta(seconds=offset))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    universe = Schedule(
        action=ScheduleActionStartWorkflow(
            "UniverseWorkflow",
            UniverseInput(
                top_n=settings.universe_top_n,
                allowlist=list(settings.apply_allowlist),
                interval=settings.signal_timeframe,
            ),
            id="universe",
            task_queue=INFERENCE_TASK_QUEUE,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.universe_interval_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    return {BAR_CLOSE_SCHEDULE_ID: bar_close, UNIVERSE_SCHEDULE_ID: universe}

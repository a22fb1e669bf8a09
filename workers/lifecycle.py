"""The lifecycle worker: position and portfolio workflows, plus the activities that talk to Temporal
itself and to Redis (task queue `trade-lifecycle`)."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import redis.asyncio as aioredis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.journal import JournalActivities
from activities.market import MarketActivities
from activities.market_inputs import MarketInputActivities
from activities.policy_review import PolicyReviewActivities
from activities.portfolio import PortfolioActivities, start_portfolio
from activities.projections import ProjectionActivities
from activities.reconcile import ReconcileActivities
from activities.vouchers import GrantVouchers
from exchange.client import BinanceFuturesClient
from exchange.shared_budget import budget_from_settings
from journal.metrics import PerformanceGauges
from journal.store import open_journal
from trading.config import Settings
from trading.governor import RiskPolicy
from trading.records import RecordMode
from workers.schedules import (
    ensure_market_inputs_schedule,
    ensure_policy_review_schedule,
    ensure_reconcile_schedule,
)
from workers.service import redis_client, run_until_sigterm
from workers.temporal_client import connect, ensure_search_attributes, metrics_runtime
from workflows.market_inputs import MarketInputsWorkflow
from workflows.messages import LIFECYCLE_TASK_QUEUE
from workflows.policy_review import PolicyReviewWorkflow
from workflows.portfolio import PortfolioWorkflow
from workflows.position import PositionWorkflow
from workflows.reconcile import ReconcileWorkflow

STICKY_TIMEOUT_S = 3.0

log = logging.getLogger("qtrader.worker.lifecycle")


def lifecycle_worker(
    client: Client,
    settings: Settings,
    redis: aioredis.Redis,
    market: BinanceFuturesClient,
    gauges: PerformanceGauges | None = None,
    position_workflow: type = PositionWorkflow,
    workflow_task_executor: ThreadPoolExecutor | None = None,
) -> Worker:
    """`market` is a keyless exchange client: the lifecycle worker reads public market data only.
    `gauges`: the performance gauges the journal activity keeps up to date (none: not computed).
    `position_workflow`: another version of it (the upgrade test deploys one over open positions).
    `workflow_task_executor`: where its workflow activations run (workers/fresh_cache.py)."""
    vouchers = GrantVouchers()  # the grants its start_positions started, for its check_symbol
    portfolio = PortfolioActivities(
        client,
        RiskPolicy.from_settings(settings),
        settings.portfolio_holder_check_seconds,
        settings.risk_layer_policy,
        vouchers,
    )
    projections = ProjectionActivities(redis)
    symbols = MarketActivities(market, vouchers)
    reconciling = ReconcileActivities(client, redis)
    journaling = journal_activities(settings, gauges, client)
    market_inputs = MarketInputActivities(client, redis, journaling.journal, journaling.run_id)
    review = PolicyReviewActivities(client, journaling.journal, journaling.run_id)
    return Worker(
        client,
        task_queue=LIFECYCLE_TASK_QUEUE,
        workflows=[
            position_workflow,
            PortfolioWorkflow,
            ReconcileWorkflow,
            MarketInputsWorkflow,
            PolicyReviewWorkflow,
        ],
        activities=[
            portfolio.request_reservation,
            portfolio.deliver_decisions,
            portfolio.start_positions,
            portfolio.find_stopped_holders,
            portfolio.running_holders,
            portfolio.previous_portfolio_state,
            projections.project_position,
            projections.project_portfolio,
            projections.publish_ess_moves,
            projections.publish_refusals,
            projections.publish_levels,
            symbols.check_symbol,
            reconciling.tracked_positions,
            reconciling.tell_position,
            reconciling.adopt_position,
            reconciling.record_reconcile,
            journaling.journal_trade,
            market_inputs.compute_market_inputs,
            market_inputs.deliver_market_inputs,
            review.policy_review_facts,
            review.apply_policy_proposal,
        ],
        graceful_shutdown_timeout=timedelta(seconds=10),
        max_cached_workflows=settings.lifecycle_cached_workflows,  # the SDK's default is 1,000
        # A worker that died or was replaced (workers/fresh_cache.py) leaves its workflows' next tasks on
        # its own sticky queue until this passes: positions must not wait the default 10 s for an exit.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=STICKY_TIMEOUT_S),
        workflow_task_executor=workflow_task_executor,
    )


def journal_activities(
    settings: Settings, gauges: PerformanceGauges | None = None, client: Client | None = None
) -> JournalActivities:
    """The trade journal (DATABASE_URL, else QT_HOME/journal.sqlite), its rows under this stack's mode;
    with `client`, each closed trade is also told to the portfolio's risk layer."""
    return JournalActivities(
        open_journal(settings.database_url, settings.qt_home),
        RecordMode(settings.trading_mode.value),
        settings.start_equity_usdt or settings.paper_start_balance_usdt,
        gauges,
        client=client,
    )


async def run(settings: Settings, metrics_port: int | None) -> None:
    client = await connect(settings, metrics_runtime(metrics_port, settings.prometheus_bind_host))
    await ensure_search_attributes(client)
    redis = redis_client(settings, socket_timeout=2, socket_connect_timeout=2)
    # The same IP weight budget as the exchange workers: public reads count against it too.
    async with BinanceFuturesClient(
        settings.rest_url, None, None, shared_budget=budget_from_settings(settings, redis)
    ) as market:
        gauges = PerformanceGauges()

        def worker(executor: ThreadPoolExecutor) -> Worker:
            return lifecycle_worker(client, settings, redis, market, gauges, workflow_task_executor=executor)

        await show_journal_figures(settings, gauges)
        if metrics_port:  # served once the journal's figures are in (a scrape never sees them blank)
            try:
                gauges.serve(settings.performance_metrics_port, settings.prometheus_bind_host)
            except OSError as err:  # a busy port costs the gauges, never the trading
                log.error("performance metrics not served on :%s: %s", settings.performance_metrics_port, err)
        # A fresh portfolio allows no entry until the first reconcile has compared it with the venue.
        await start_portfolio(
            client,
            RiskPolicy.from_settings(settings),
            settings.portfolio_holder_check_seconds,
            await_reconcile=settings.reconcile_on_start,
            risk=settings.risk_layer_policy,
        )
        await ensure_reconcile_schedule(
            client, settings.reconcile_interval_seconds, run_now=settings.reconcile_on_start
        )
        await ensure_market_inputs_schedule(client, settings)
        await ensure_policy_review_schedule(client, settings)
        await run_until_sigterm(
            worker, "lifecycle", metrics_port, client, gc_freeze_s=settings.lifecycle_gc_freeze_seconds
        )
    await redis.aclose()


async def show_journal_figures(settings: Settings, gauges: PerformanceGauges) -> None:
    """Set the performance gauges from the journal at start (a restart shows the same figures)."""
    try:
        await journal_activities(settings, gauges).refresh_gauges()
    except Exception as err:  # the journal's database may come up later; trading goes on meanwhile
        log.warning("journal not readable at start (%s); gauges wait for the next journaled trade", err)

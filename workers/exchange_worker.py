"""The exchange worker: Binance activities on task queue `exchange`, with the API keys from this
process's environment only. Its request weight is paced on a budget shared in Redis with every
other worker behind the same IP, and its rate-limit figures are exported as metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from temporalio.runtime import Runtime
from temporalio.worker import Worker

from activities.exchange import ExchangeActivities
from activities.reconcile import VenueReadActivities
from activities.risk_reports import RiskReports
from exchange.client import BinanceFuturesClient
from exchange.errors import ExchangeError
from exchange.shared_budget import budget_from_settings
from trading.config import Settings
from workers.service import redis_client, run_until_sigterm
from workers.temporal_client import connect, metrics_runtime
from workflows.messages import EXCHANGE_TASK_QUEUE

log = logging.getLogger("qtrader.worker.exchange")


def exchange_worker(client, exchange: BinanceFuturesClient, reports: RiskReports | None = None) -> Worker:
    """`reports`: order outcomes for the risk layer (activities/risk_reports.py; none: not reported)."""
    acts = ExchangeActivities(exchange, reports)
    venue = VenueReadActivities(exchange)
    return Worker(
        client,
        task_queue=EXCHANGE_TASK_QUEUE,
        activities=[
            acts.prepare_entry,
            acts.set_leverage,
            acts.get_mark_price,
            acts.get_position,
            acts.place_order,
            acts.place_stop,
            acts.cancel_stop,
            acts.sync_fills,
            acts.open_entry,
            venue.venue_state,
            venue.cancel_orphan,
        ],
        graceful_shutdown_timeout=timedelta(seconds=10),
        max_concurrent_activities=200,
    )


# No answer from the venue this long (every request refused, timed out or 5xx) is an outage for the
# emergency stop: a single lost answer is not.
OUTAGE_AFTER_S = 5.0


def report_venue_health(exchange: BinanceFuturesClient, reports: RiskReports) -> None:
    reports.banned(bool(exchange.rate_limits()["banned"]))
    reports.unreachable(exchange.unreachable_s() >= OUTAGE_AFTER_S)


async def export_rate_limits(
    runtime: Runtime | None,
    exchange: BinanceFuturesClient,
    every_s: float = 1.0,
    reports: RiskReports | None = None,
) -> None:
    """Request weight used, pauses, 429s and bans as metrics, as this worker saw them; the ban's start
    and end also to `reports` (the emergency stop's venue health)."""
    meter = runtime.metric_meter if runtime is not None else None
    if meter is None:
        while reports is not None:
            report_venue_health(exchange, reports)
            await asyncio.sleep(every_s)
        return
    used = meter.create_gauge("binance_request_weight_used_1m", "request weight used in the last minute")
    budget = meter.create_gauge("binance_request_weight_budget_1m", "request weight the entries may use")
    banned = meter.create_gauge("binance_ip_banned", "1 while the venue bans this IP (entries halt)")
    counters = {
        "rate_limited": meter.create_counter("binance_http_429", "429 answers received"),
        "bans": meter.create_counter("binance_http_418", "418 (IP ban) answers received"),
        "pauses": meter.create_counter("binance_weight_pauses", "waits to stay under the weight budget"),
    }
    seen = dict.fromkeys(counters, 0)
    while True:
        snap = exchange.rate_limits()
        used.set(int(snap["used_weight_1m"]))
        budget.set(int(snap["weight_budget_1m"]))
        banned.set(1 if snap["banned"] else 0)
        if reports is not None:
            report_venue_health(exchange, reports)
        for name, counter in counters.items():
            now = int(snap[name])
            if now > seen[name]:
                counter.add(now - seen[name])
                seen[name] = now
        await asyncio.sleep(every_s)


async def sync_clock(
    exchange: BinanceFuturesClient, first_wait_s: float = 1.0, max_wait_s: float = 30.0
) -> None:
    """Measure the venue's clock offset as soon as it answers, beside the worker, not before it.

    Measured before the worker started, a venue that refused, hung or had banned this IP (a 418 lasts
    from 2 minutes to days) killed the process at start-up, and a supervisor restarted it into the same
    failure: no activity served, and the emergency stop never heard "venue unreachable" or "banned" from
    it (the fault explorer: seed 48, an exchange worker SIGKILLed in a venue hang, not serving 45 s
    later). Until the offset is known, signed requests carry the local clock; a -1021 answer makes the
    client resync and retry by itself."""
    wait_s = first_wait_s
    while True:
        try:
            offset_ms = await exchange.sync_time()
        except (ExchangeError, KeyError, ValueError) as err:  # no answer, or one without serverTime
            wait_s = max(wait_s, getattr(err, "retry_after_s", None) or 0.0)
            log.warning(
                "venue clock not synced: %s; signed requests use the local clock, again in %.0f s",
                err,
                wait_s,
            )
            await asyncio.sleep(wait_s)
            wait_s = min(wait_s * 2, max_wait_s)
        else:
            log.info("venue clock synced offset_ms=%.1f", offset_ms)
            return


async def run(settings: Settings, metrics_port: int | None) -> None:
    if not (settings.binance_api_key and settings.binance_api_secret):
        raise SystemExit("BINANCE_API_KEY and BINANCE_API_SECRET must be set for the exchange worker")
    runtime = metrics_runtime(metrics_port, settings.prometheus_bind_host)
    client = await connect(settings, runtime)
    redis = redis_client(settings, socket_timeout=0.5, socket_connect_timeout=0.5)
    shared = budget_from_settings(settings, redis)
    async with BinanceFuturesClient.from_settings(settings, shared_budget=shared) as exchange:
        reports = RiskReports(client)
        side = [
            asyncio.create_task(sync_clock(exchange)),
            asyncio.create_task(export_rate_limits(runtime, exchange, reports=reports)),
            asyncio.create_task(reports.run()),
        ]
        try:
            await run_until_sigterm(exchange_worker(client, exchange, reports), "exchange", metrics_port)
        finally:
            for task in side:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await reports.flush()  # what this worker measured last
    await redis.aclose()

"""The exchange worker: Binance activities on task queue `exchange`, with the API keys from this
process's environment only."""

from __future__ import annotations

from datetime import timedelta

from temporalio.worker import Worker

from activities.exchange import ExchangeActivities
from activities.reconcile import VenueReadActivities
from exchange.client import BinanceFuturesClient
from trading.config import Settings
from workers.lifecycle import run_until_sigterm
from workers.temporal_client import connect, metrics_runtime
from workflows.messages import EXCHANGE_TASK_QUEUE


def exchange_worker(client, exchange: BinanceFuturesClient) -> Worker:
    acts = ExchangeActivities(exchange)
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


async def run(settings: Settings, metrics_port: int | None) -> None:
    if not (settings.binance_api_key and settings.binance_api_secret):
        raise SystemExit("BINANCE_API_KEY and BINANCE_API_SECRET must be set for the exchange worker")
    client = await connect(settings, metrics_runtime(metrics_port, settings.prometheus_bind_host))
    async with BinanceFuturesClient.from_settings(settings) as exchange:
        await exchange.sync_time()
        await run_until_sigterm(exchange_worker(client, exchange), "exchange", metrics_port)

"""Connecting to Temporal the one way every process here does: pydantic payloads, Prometheus metrics,
and the position search attributes registered. `connect` once (the workers, the CLI: an unreachable
server is an error), or `connect_until_stopped` (the feeds: retried until it answers or they stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from trading.config import Settings
from workflows.search_attributes import SEARCH_ATTRIBUTES as POSITION_SEARCH_ATTRIBUTES

log = logging.getLogger(__name__)

# The CLI's spelling of each type (`temporal server start-dev --search-attribute NAME=TYPE`).
_CLI_TYPE = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}

# name → type, from the keys the position workflow upserts (workflows/search_attributes.py).
SEARCH_ATTRIBUTES: dict[str, IndexedValueType.ValueType] = {
    key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in POSITION_SEARCH_ATTRIBUTES
}

# For `temporal server start-dev --search-attribute NAME=TYPE`.
CLI_SEARCH_ATTRIBUTES = {key.name: _CLI_TYPE[key.indexed_value_type] for key in POSITION_SEARCH_ATTRIBUTES}


def cli_search_attribute_flags() -> list[str]:
    """`--search-attribute NAME=TYPE` for each position search attribute (the dev server registers them)."""
    return [
        arg
        for name, kind in CLI_SEARCH_ATTRIBUTES.items()
        for arg in ("--search-attribute", f"{name}={kind}")
    ]


# The history service reads its transfer queue (tasks handed to matching) through a token bucket of
# `history.transferProcessorMaxPollRPS` reads per second per history shard, default 20. The dev
# server runs ONE shard, so at the default every step waits for the next 50 ms slot: an activity
# step costs ~50 ms instead of ~21 ms (docs/DESIGN.md, "Task queues and processes"). Reads are triggered by
# notifications, so the raised limit costs no idle CPU; it only stops capping a busy shard.
DEV_SERVER_DYNAMIC_CONFIG: dict[str, int] = {"history.transferProcessorMaxPollRPS": 1000}


def dynamic_config_flags() -> list[str]:
    """`--dynamic-config-value KEY=VALUE` for each of DEV_SERVER_DYNAMIC_CONFIG."""
    return [
        arg
        for key, value in DEV_SERVER_DYNAMIC_CONFIG.items()
        for arg in ("--dynamic-config-value", f"{key}={value}")
    ]


def metrics_runtime(port: int | None, host: str = "127.0.0.1") -> Runtime | None:
    """A runtime whose Prometheus endpoint serves the SDK's metrics and ours (created through its meter)."""
    if not port:  # None or 0: no metrics endpoint
        return None
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}", counters_total_suffix=True, durations_as_seconds=True
            )
        )
    )


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    kwargs = {"runtime": runtime} if runtime is not None else {}
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        **kwargs,
    )


async def connect_until_stopped(settings: Settings, stop: asyncio.Event) -> Client | None:
    """`connect`, retried with backoff (0.5 s doubling to 10 s); None when `stop` is set first."""
    backoff = 0.5
    while not stop.is_set():
        try:
            return await connect(settings)
        except Exception as exc:
            log.warning("temporal connect failed error=%r; retry in %.1fs", exc, backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)
    return None


async def ensure_search_attributes(client: Client) -> None:
    """Register the position search attributes if the server lacks them (e.g. a fresh compose stack)."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in existing.custom_attributes}
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as err:
        # Two workers starting together on a fresh server both saw them missing; the other added them.
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise

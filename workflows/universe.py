"""UniverseWorkflow: the symbols the bar-close workflow trades — the top N by 24 h quote volume (the
seed's INTENT_BRIDGE_USE_TOP10) intersected with the allowlist. Run by a Temporal Schedule
(`UNIVERSE_INTERVAL_SECONDS`); the result goes to Redis `quantum:universe`, where inference reads it."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.common import RetryPolicy

from workflows.messages import INFERENCE_TASK_QUEUE

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), maximum_attempts=5)
# quote volumes wait for the market-data service's first stored bar (a fresh stack) or for Redis to
# come back: every few seconds for up to ten minutes, the schedule's next run skipped meanwhile
WAIT_FOR_BARS = RetryPolicy(
    initial_interval=timedelta(milliseconds=500), maximum_interval=timedelta(seconds=5)
)


class UniverseInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_n: int = Field(10, ge=1, le=500)
    allowlist: list[str] = Field(default_factory=lambda: ["*"])  # "*": every symbol
    interval: str = "1h"


class QuoteVolumes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    volumes: dict[str, float]  # symbol → 24 h quote volume (USDT)
    source: str  # "ticker_24hr" | "bars"


class UniverseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbols: list[str]
    ranked: list[tuple[str, float]]
    source: str


def top_by_volume(volumes: dict[str, float], allowlist: list[str], n: int) -> list[str]:
    """The `n` highest quote volumes (ties by name) among the allowed symbols, highest first."""
    allowed = [s for s in volumes if "*" in allowlist or s in allowlist]
    return sorted(allowed, key=lambda s: (-volumes[s], s))[:n]


@workflow.defn(name="UniverseWorkflow", sandboxed=False)
class UniverseWorkflow:
    @workflow.run
    async def run(self, inp: UniverseInput | None = None) -> UniverseResult:
        inp = inp or UniverseInput()
        vols: QuoteVolumes = await workflow.execute_activity(
            "quote_volumes",
            inp,
            result_type=QuoteVolumes,
            task_queue=INFERENCE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            schedule_to_close_timeout=timedelta(minutes=10),
            retry_policy=WAIT_FOR_BARS,
        )
        symbols = top_by_volume(vols.volumes, inp.allowlist, inp.top_n)
        await workflow.execute_activity(
            "store_universe",
            symbols,
            task_queue=INFERENCE_TASK_QUEUE,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
        )
        ranked = sorted(vols.volumes.items(), key=lambda kv: (-kv[1], kv[0]))
        return UniverseResult(symbols=symbols, ranked=ranked, source=vols.source)

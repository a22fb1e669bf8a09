"""UniverseWorkflow: the symbols the bar-close workflow trades — the top N by 24 h quote volume (the
seed's INTENT_BRIDGE_USE_TOP10) intersected with the allowlist. Run by a Temporal Schedule
(`UNIVERSE_INTERVAL_SECONDS`); the result goes to Redis `quantum:universe`, where inference reads it."""

from __future__ import annotations

from temporalio import workflow

from workflows import calls
from workflows.messages import QuoteVolumes, UniverseInput, UniverseResult


def top_by_volume(volumes: dict[str, float], allowlist: list[str], n: int) -> list[str]:
    """The `n` highest quote volumes (ties by name) among the allowed symbols, highest first."""
    allowed = [s for s in volumes if "*" in allowlist or s in allowlist]
    return sorted(allowed, key=lambda s: (-volumes[s], s))[:n]


@workflow.defn(name="UniverseWorkflow", sandboxed=False)
class UniverseWorkflow:
    @workflow.run
    async def run(self, inp: UniverseInput | None = None) -> UniverseResult:
        inp = inp or UniverseInput()
        vols: QuoteVolumes = await calls.QUOTE_VOLUMES.run(inp)
        symbols = top_by_volume(vols.volumes, inp.allowlist, inp.top_n)
        await calls.STORE_UNIVERSE.run(symbols)
        ranked = sorted(vols.volumes.items(), key=lambda kv: (-kv[1], kv[0]))
        return UniverseResult(symbols=symbols, ranked=ranked, source=vols.source)

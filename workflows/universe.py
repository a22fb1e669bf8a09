"""UniverseWorkflow: the symbols the bar-close workflow trades — the top N by 24 h quote volume (the
seed's INTENT_BRIDGE_USE_TOP10) intersected with the allowlist. Run by a Temporal Schedule
(`UNIVERSE_INTERVAL_SECONDS`); the result goes to Redis `quantum:universe`, where inference reads it."""

from __future__ import annotations

from temporalio import workflow

from trading.universe import top_by_volume
from workflows import calls
from workflows.messages import QuoteVolumes, UniverseInput, UniverseResult


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

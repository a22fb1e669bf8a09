"""MarketInputsWorkflow: correlation clusters and allocation caps for the portfolio's risk layer,
recomputed from the stored bars and the journal's trades, and delivered through the portfolio's
validated `set_market_inputs` update. Run by a Temporal Schedule (`RISK_INPUTS_INTERVAL_MINUTES`); the
result is in its history and the Web UI."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from trading.market_inputs import MarketInputs
    from workflows import calls
    from workflows.messages import MarketInputsRequest

MARKET_INPUTS_WORKFLOW_ID = "market-inputs"


@workflow.defn(name="MarketInputsWorkflow", sandboxed=False)
class MarketInputsWorkflow:
    @workflow.run
    async def run(self, inp: MarketInputsRequest) -> MarketInputs | None:
        """None: the portfolio's risk layer is off, or there are no bars yet (nothing delivered)."""
        inputs: MarketInputs | None = await calls.COMPUTE_MARKET_INPUTS.run(inp)
        if inputs is not None:
            await calls.DELIVER_MARKET_INPUTS.run(inputs)
        return inputs

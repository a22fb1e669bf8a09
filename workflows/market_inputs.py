"""MarketInputsWorkflow: correlation clusters and allocation caps for the portfolio's risk layer,
recomputed from the stored bars and the journal's trades, and delivered through the portfolio's
validated `set_market_inputs` update. Run by a Temporal Schedule (`RISK_INPUTS_INTERVAL_MINUTES`); the
result is in its history and the Web UI."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from trading.market_inputs import MarketInputs
    from workflows.messages import LIFECYCLE_TASK_QUEUE, MarketInputsRequest

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=5)
MARKET_INPUTS_WORKFLOW_ID = "market-inputs"


@workflow.defn(name="MarketInputsWorkflow", sandboxed=False)
class MarketInputsWorkflow:
    @workflow.run
    async def run(self, inp: MarketInputsRequest) -> MarketInputs | None:
        """None: the portfolio's risk layer is off, or there are no bars yet (nothing delivered)."""
        inputs: MarketInputs | None = await workflow.execute_activity(
            "compute_market_inputs",
            inp,
            result_type=MarketInputs | None,  # type: ignore[arg-type]
            task_queue=LIFECYCLE_TASK_QUEUE,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=RETRY,
        )
        if inputs is not None:
            await workflow.execute_activity(
                "deliver_market_inputs",
                inputs,
                task_queue=LIFECYCLE_TASK_QUEUE,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RETRY,
            )
        return inputs

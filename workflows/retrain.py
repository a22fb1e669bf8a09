"""RetrainWorkflow: continuous learning, run by a Temporal Schedule (default daily, `RETRAIN_INTERVAL_HOURS`).

For each model kind, on the `inference` task queue (activities/learning.py):

1. in shadow mode, the model's current shadow (if any) is scored against the champion on the bars that
   arrived since it was chosen; it is promoted if it still beats the champion there, retired if not,
   and kept in shadow while too few new bars exist;
2. a challenger is trained on the newest window and scored out of sample on the newest bars, next to
   the champion on the very same rows (rows neither model trained on);
3. `trading.promotion.decide_promotion` decides: a challenger that beats the champion becomes the
   champion, or in shadow mode becomes the shadow (its predictions are published with `shadow` set and
   never traded); otherwise it stays a registered challenger and nothing changes.

Progress (what is being trained, on how many rows, the scores, the decision) is in the `progress`
query and the workflow's current details; the training activity heartbeats its own progress.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import ValidationError
from temporalio import workflow

from trading.promotion import Verdict, decide_promotion
from workflows import calls, retries
from workflows.messages import (
    ChallengerReport,
    EvaluateShadowInput,
    ModelOutcome,
    RetrainInput,
    RetrainResult,
    SetStageInput,
    ShadowSignalsInput,
    TrainChallengerInput,
)

RETRAIN_WORKFLOW_ID = "retrain"


@workflow.defn(name="RetrainWorkflow", sandboxed=False, failure_exception_types=[ValidationError])
class RetrainWorkflow:
    @workflow.init
    def __init__(self, inp: RetrainInput | None = None) -> None:
        self.lines: list[str] = []

    @workflow.query(name="progress")
    def progress(self) -> list[str]:
        return list(self.lines)

    def _say(self, line: str) -> None:
        self.lines.append(line)
        workflow.set_current_details("\n\n".join(self.lines[-20:]))

    @workflow.run
    async def run(self, inp: RetrainInput | None = None) -> RetrainResult:
        inp = inp or RetrainInput()
        w = inp.window
        self._say(
            f"retrain {', '.join(inp.models)} on {w.window_bars} {w.timeframe} bars of "
            f"{', '.join(w.symbols)}; shadow mode {'on' if inp.shadow_mode else 'off'}"
        )
        outcomes: list[ModelOutcome] = []
        for model in inp.models:  # one at a time: training takes every core of the inference worker
            if inp.shadow_mode:
                judged = await self._judge_shadow(model, inp)
                if judged is not None:
                    outcomes.append(judged)
            outcomes.append(await self._challenge(model, inp))
        published = 0
        if inp.shadow_mode and any(o.stage == "shadow" for o in outcomes):
            # A whole window's predictions: longer, and tried more often, than the bar close's one bar.
            publish = calls.PUBLISH_SHADOW_SIGNALS.with_options(
                start_to_close_timeout=timedelta(minutes=5), retry_policy=retries.FIVE_TRIES
            )
            published = await publish.run(ShadowSignalsInput(models=inp.models, window=w))
            self._say(f"published {published} shadow predictions")
        return RetrainResult(outcomes=outcomes, shadow_signals=published)

    async def _judge_shadow(self, model: str, inp: RetrainInput) -> ModelOutcome | None:
        report = await calls.EVALUATE_SHADOW.run(EvaluateShadowInput(model=model, window=inp.window))
        if report is None:
            return None
        decision = decide_promotion(report.challenger, report.champion, inp.policy)
        version = report.challenger.version
        assert version is not None
        stage: Literal["champion", "retired", "unchanged"] = "unchanged"
        if decision.verdict is Verdict.PROMOTE:
            stage = "champion"
        elif decision.verdict is Verdict.REJECT:
            stage = "retired"
        if stage != "unchanged":
            await self._set_stage(model, version, stage)
        self._say(f"{model} shadow {version}: {stage} ({decision.reason})")
        return self._outcome(model, "shadow", report, decision.verdict, stage, decision.reason)

    async def _challenge(self, model: str, inp: RetrainInput) -> ModelOutcome:
        self._say(f"{model}: training a challenger")
        report = await calls.RETRAIN_CHALLENGER.run(TrainChallengerInput(model=model, window=inp.window))
        decision = decide_promotion(report.challenger, report.champion, inp.policy)
        version = report.challenger.version
        assert version is not None
        stage: Literal["champion", "shadow", "challenger"] = "challenger"
        if decision.verdict is Verdict.PROMOTE:
            stage = "shadow" if inp.shadow_mode else "champion"
            await self._set_stage(model, version, stage)
        self._say(
            f"{model} challenger {version}: {stage} ({decision.reason}; trained on {report.train_rows} "
            f"rows in {report.seconds:.1f}s)"
        )
        return self._outcome(model, "challenger", report, decision.verdict, stage, decision.reason)

    async def _set_stage(self, model: str, version: str, stage: str) -> None:
        await calls.SET_MODEL_STAGE.run(
            SetStageInput(model=model, version=version, stage=stage)  # type: ignore[arg-type]
        )

    @staticmethod
    def _outcome(
        model: str,
        step: Literal["shadow", "challenger"],
        report: ChallengerReport,
        verdict: Verdict,
        stage: Literal["champion", "shadow", "retired", "challenger", "unchanged"],
        reason: str,
    ) -> ModelOutcome:
        return ModelOutcome(
            model=model,
            step=step,
            version=report.challenger.version,
            verdict=verdict,
            stage=stage,
            reason=reason,
            challenger=report.challenger,
            champion=report.champion,
        )

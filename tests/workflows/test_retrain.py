"""RetrainWorkflow against a real Temporal dev server, with the retrain activities on the `inference`
task queue and real shipped klines (LightGBM, a 3,000-bar window: seconds per run).

* a challenger that beats the champion out of sample (same rows, clean for both) is promoted;
* a challenger that does not beat it (the champion's twin: equal is not better) is not;
* in shadow mode the winner becomes the shadow, its predictions go to ai.signal_generated with
  `shadow=true` and are not tradeable, the champion is untouched; a later run judges the shadow on the
  bars that came after it and promotes it only if it wins there too;
* progress is visible (heartbeated activity lines, the workflow's `progress` query);
* the history replays (and is recorded under histories/ with RECORD_HISTORIES=1).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.worker import Worker

from activities.learning import SIGNAL_STREAM, LearningActivities, shadow_version, window_dataset
from signals.bar_store import Bar, BarStore
from signals.data import kline_path, load_aligned
from signals.models.gbm import LightGBMModel
from signals.registry import ModelRegistry
from tests.workflows.conftest import Stack
from trading.promotion import PromotionPolicy, Verdict, decide_promotion, is_tradeable
from workers.schedules import RETRAIN_SCHEDULE_ID, ensure_retrain_schedule
from workflows.messages import (
    INFERENCE_TASK_QUEUE,
    RetrainInput,
    RetrainResult,
    RetrainWindow,
    ShadowSignalsInput,
)
from workflows.retrain import RetrainWorkflow

HISTORIES = Path(__file__).parent / "histories"
MODEL = "lightgbm"
U1 = int(datetime(2026, 1, 12, 8, tzinfo=UTC).timestamp() * 1000)  # the "now" of the first runs
U2 = int(datetime(2026, 2, 10, 12, tzinfo=UTC).timestamp() * 1000)  # 700 bars later
WINDOW = RetrainWindow(
    symbols=["BTCUSDT", "ETHUSDT"], window_bars=3000, holdout_bars=600, until_ms=U1, horizon=12
)

pytestmark = pytest.mark.skipif(
    not all(kline_path(s, "1h").is_file() for s in WINDOW.symbols), reason="shipped klines not found"
)


def worse_champion(registry: ModelRegistry, window: RetrainWindow) -> str:
    """A champion trained on older bars of the same window with inverted labels: a real model that is
    worse than chance out of sample, registered the way the training pipeline registers models."""
    _, ds = window_dataset(window, None)
    n = int(ds.open_time_ms.shape[0])
    old = np.flatnonzero(ds.end < n - window.holdout_bars - 2 * window.horizon)
    model = LightGBMModel()
    model.fit(ds.inputs(old), 1 - ds.y[old], seed=0)
    meta = registry.save(
        MODEL,
        model,
        features=ds.feature_names,
        label=ds.label_spec.to_dict(),
        training_span={"end_ms": int(ds.open_time_ms[ds.t[old]].max()), "rows": int(old.size)},
        data_sha256="test",
        make_champion=True,
    )
    return meta.version


class Retrain:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.registry = ModelRegistry(stack.tmp / "models")
        self.lines: list[str] = []
        redis_url = f"redis://127.0.0.1:{stack.settings.redis_port}/0"
        self.acts = LearningActivities(self.registry.root, redis_url=redis_url, progress=self.lines.append)

    async def run(self, wf_id: str, inp: RetrainInput) -> tuple[RetrainResult, list[str]]:
        handle = await self.stack.client.start_workflow(
            RetrainWorkflow.run, inp, id=wf_id, task_queue=INFERENCE_TASK_QUEUE
        )
        result = await asyncio.wait_for(handle.result(), 120)
        return result, await handle.query(RetrainWorkflow.progress)


@pytest.fixture
async def retrain(stack: Stack) -> AsyncIterator[Retrain]:
    r = Retrain(stack)
    with ThreadPoolExecutor(2) as pool:
        async with Worker(  # as the inference worker registers them (workers/inference_worker.py)
            stack.client,
            task_queue=INFERENCE_TASK_QUEUE,
            workflows=[RetrainWorkflow],
            activities=r.acts.activities(),
            activity_executor=pool,
        ):
            yield r


async def test_promotes_only_a_challenger_that_beats_the_champion(retrain: Retrain) -> None:
    reg = retrain.registry
    old = worse_champion(reg, WINDOW)
    result, progress = await retrain.run("retrain", RetrainInput(models=[MODEL], window=WINDOW))
    (won,) = result.outcomes
    assert won.step == "challenger" and won.verdict is Verdict.PROMOTE and won.stage == "champion"
    assert won.champion is not None and won.champion.version == old
    assert won.challenger.auc is not None and won.champion.auc is not None
    assert won.challenger.auc >= won.champion.auc + PromotionPolicy().min_auc_gain
    assert won.challenger.rows == won.champion.rows >= PromotionPolicy().min_rows
    assert reg.champion(MODEL) == won.version != old
    # the holdout is clean for both: it starts after the champion's last label and the challenger's own
    meta = reg.meta(MODEL)
    holdout_start = meta.extra["holdout"]["start_ms"]
    assert meta.training_span["end_ms"] < holdout_start
    assert reg.meta(MODEL, old).training_span["end_ms"] < holdout_start
    assert meta.metrics["champion_holdout"]["version"] == old

    # progress: the activity's heartbeated lines and the workflow's own
    assert any("3000 bars x 2 symbols" in ln and "rows" in ln for ln in retrain.lines)
    assert any("fitting on" in ln and "holdout" in ln for ln in retrain.lines)
    assert any("holdout AUC" in ln for ln in retrain.lines)
    assert any("champion" in ln and "beats the champion" in ln for ln in progress)

    # the same window again: the challenger is the champion's twin; equal is not better
    again, _ = await retrain.run("retrain-2", RetrainInput(models=[MODEL], window=WINDOW))
    (kept,) = again.outcomes
    assert kept.verdict is Verdict.REJECT and kept.stage == "challenger"
    assert kept.champion is not None and kept.challenger.auc == kept.champion.auc
    assert reg.champion(MODEL) == won.version  # unchanged
    assert kept.version in reg.versions(MODEL)  # registered as a challenger all the same
    if os.environ.get("RECORD_HISTORIES"):
        history = await retrain.stack.client.get_workflow_handle("retrain").fetch_history()
        (HISTORIES / "retrain.json").write_text(history.to_json())


async def test_shadow_mode_publishes_untradeable_predictions_then_judges_the_shadow(retrain: Retrain) -> None:
    reg, redis = retrain.registry, retrain.stack.redis
    old = worse_champion(reg, WINDOW)
    inp = RetrainInput(models=[MODEL], window=WINDOW, shadow_mode=True)
    result, _ = await retrain.run("retrain-shadow-1", inp)
    (won,) = result.outcomes
    assert won.verdict is Verdict.PROMOTE and won.stage == "shadow"
    assert reg.champion(MODEL) == old  # a shadow is never the champion by this run
    assert shadow_version(reg, MODEL) == won.version
    signals = [{k.decode(): v.decode() for k, v in f.items()} for _, f in await redis.xrange(SIGNAL_STREAM)]
    assert result.shadow_signals == len(signals) == 2
    assert {s["symbol"] for s in signals} == {"BTCUSDT", "ETHUSDT"}
    assert all(s["shadow"] == "true" and s["model_version"] == won.version for s in signals)
    assert not any(is_tradeable(s) for s in signals)
    assert all(s["bar_open_time_ms"] == str(U1 - 3_600_000) for s in signals)  # the last bar closed by U1

    # the bar-close path: the same bar read live from Redis (as the market-data service stores it)
    live_bar = U1 - 3_600_000
    bars = load_aligned(WINDOW.symbols, "1h", end_ms=live_bar + 1, last_n=1000)
    await BarStore(redis).write(
        (
            Bar(
                sym,
                "1h",
                int(t),
                *(float(a[i, k]) for a in (bars.open, bars.high, bars.low, bars.close, bars.volume)),
                0.0,
            )
            for i, sym in enumerate(bars.symbols)
            for k, t in enumerate(bars.open_time_ms)
        ),
        "backfill",
        stream=False,
    )
    assert int(bars.open_time_ms[-1]) == live_bar
    await redis.delete(SIGNAL_STREAM)
    live = ShadowSignalsInput(
        models=[MODEL], window=WINDOW.model_copy(update={"until_ms": None}), bar_open_ms=live_bar
    )
    assert await retrain.acts.publish_shadow_signals(live) == 2
    assert await redis.xlen(SIGNAL_STREAM) == 0  # that bar's predictions were published: once only
    await redis.delete(*await redis.keys("quantum:dedupe:shadow:*"))  # forget that, to compare
    assert await retrain.acts.publish_shadow_signals(live) == 2
    again = [{k.decode(): v.decode() for k, v in f.items()} for _, f in await redis.xrange(SIGNAL_STREAM)]
    assert [(s["symbol"], s["p_up"], s["shadow"]) for s in again] == [
        (s["symbol"], s["p_up"], s["shadow"]) for s in signals
    ]  # same bar, same prediction, bit for bit, whichever way the bars came

    # 700 bars later: the shadow is judged on the bars after its own holdout, against the champion
    later = RetrainInput(models=[MODEL], window=WINDOW.model_copy(update={"until_ms": U2}), shadow_mode=True)
    result2, progress = await retrain.run("retrain-shadow-2", later)
    judged, challenger = result2.outcomes
    assert judged.step == "shadow" and judged.version == won.version
    assert judged.challenger.rows >= PromotionPolicy().min_rows
    assert judged.verdict is decide_promotion(judged.challenger, judged.champion).verdict
    # On these bars the shadow's holdout win was luck: the champion scores better on the new bars, so
    # the shadow is retired and the champion stays (the promote path is the test above).
    assert judged.verdict is Verdict.REJECT and judged.stage == "retired", judged.reason
    assert reg.champion(MODEL) == old
    assert challenger.step == "challenger" and challenger.version != won.version
    assert shadow_version(reg, MODEL) == (challenger.version if challenger.stage == "shadow" else None)
    assert any("shadow" in ln for ln in progress)


async def test_bad_input_fails_the_workflow_with_the_field(retrain: Retrain) -> None:
    handle = await retrain.stack.client.start_workflow(
        "RetrainWorkflow", {"models": ["gpt"]}, id="retrain-bad", task_queue=INFERENCE_TASK_QUEUE
    )
    with pytest.raises(WorkflowFailureError) as err:
        await asyncio.wait_for(handle.result(), 20)
    assert "models must be distinct names" in str(err.value.cause)


async def test_the_schedule_runs_the_retrain_with_the_settings(retrain: Retrain) -> None:
    client = retrain.stack.client
    settings = retrain.stack.settings.model_copy(
        update={
            "retrain_models": ["lightgbm"],
            "retrain_window_bars": 3000,
            "retrain_holdout_bars": 600,
            "shadow_mode": True,
        }
    )
    await ensure_retrain_schedule(client, settings)
    handle = client.get_schedule_handle(RETRAIN_SCHEDULE_ID)
    desc = await handle.describe()
    assert desc.schedule.spec.intervals[0].every == timedelta(hours=24)  # RETRAIN_INTERVAL_HOURS default
    await ensure_retrain_schedule(client, settings.model_copy(update={"retrain_interval_hours": 6}))
    assert (await handle.describe()).schedule.spec.intervals[0].every == timedelta(hours=6)  # updated
    await handle.trigger()
    async with asyncio.timeout(120):
        while True:
            runs = [w async for w in client.list_workflows("WorkflowType='RetrainWorkflow'")]
            if runs and runs[0].status == WorkflowExecutionStatus.COMPLETED:
                break
            assert not runs or runs[0].status == WorkflowExecutionStatus.RUNNING, runs[0].status
            await asyncio.sleep(0.5)
    result = await client.get_workflow_handle(runs[0].id, result_type=RetrainResult).result()
    (outcome,) = result.outcomes  # no champion yet: the newest window's challenger wins, into shadow
    assert outcome.model == "lightgbm" and outcome.stage == "shadow"
    assert retrain.registry.champion("lightgbm") is None
    assert shadow_version(retrain.registry, "lightgbm") == outcome.version
    await handle.delete()

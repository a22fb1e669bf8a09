"""The signal layer end to end on a whole local stack: a champion trained on the shipped klines (tiny
budget) is loaded by the inference worker; the market-data service replays a real bar into the paper
exchange and Redis; BarCloseWorkflow publishes the decisions and starts a PositionWorkflow from the
intent, which the portfolio grants and the venue fills; a re-run for the same bar starts nothing. The
universe job picks top-N by quote volume ∩ allowlist. A refused model is named in every decision."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from decimal import ROUND_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.inference import DECISION_STREAM, INTENT_STREAM, SIGNAL_STREAM, InferenceActivities
from activities.learning import LearningActivities
from activities.portfolio import start_portfolio
from activities.universe import UniverseActivities
from bench.barclose import bench_infer_bar, bench_publish_decisions, position_id
from feeds.market_data import MarketDataService
from signals.bar_store import KLINES_STREAM, UNIVERSE_KEY, BarStore
from signals.data import load_aligned
from signals.regime import REGIMES
from signals.registry import ModelRegistry
from signals.strategy_chooser import GROUP, STATE_KEY
from tests.exchange.paper.test_server_support import Api
from tests.workflows.conftest import Stack
from trading.bandit import REWARDS_STREAM, BanditState
from trading.governor import RiskPolicy
from trading.intents import IntentSource, Side
from trading.promotion import is_tradeable
from workers.inference_worker import inference_worker
from workflows import calls
from workflows.bar_close import BarCloseWorkflow
from workflows.errors import ErrorType
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    INFERENCE_TASK_QUEUE,
    BarCloseInput,
    BarCloseResult,
    InferenceInput,
    InferenceResult,
    PortfolioView,
    PositionInput,
    PositionStatus,
    PositionView,
    SetStageInput,
    SymbolDecision,
    UniverseInput,
    UniverseResult,
)
from workflows.universe import UniverseWorkflow

SYMBOLS = ("BTCUSDT", "ETHUSDT")
HISTORIES = Path(__file__).parent / "histories"


def signal_settings(stack: Stack, **extra: object):
    return stack.settings.model_copy(
        update={
            "market_data_source": "replay",
            "market_replay_speed": 3600 * 50.0,  # a 1h bar in 0.07 s
            "market_backfill_bars": 400,
            "market_stream_maxlen": 200,
            "signal_timeframe": "1h",
            # just above a coin flip, so the first bar gives an intent; the real default is 0.55
            "signal_confidence_threshold": 0.5000001,
            **extra,
        }
    )


async def replay(stack: Stack, settings, bars: int) -> MarketDataService:
    svc = MarketDataService(settings, stack.redis, list(SYMBOLS))
    assert await svc.run_replay(max_bars=bars) == bars
    return svc


async def start_bar_close(stack: Stack, inp: BarCloseInput) -> WorkflowHandle[Any, BarCloseResult]:
    return await stack.client.start_workflow(
        BarCloseWorkflow.run,
        inp,
        id=f"bar-close-{uuid.uuid4().hex[:6]}",
        task_queue=INFERENCE_TASK_QUEUE,
        result_type=BarCloseResult,
    )


async def run_bar_close(stack: Stack, inp: BarCloseInput) -> BarCloseResult:
    return await (await start_bar_close(stack, inp)).result()


async def test_bar_close_starts_a_position_from_a_replayed_bar(stack: Stack, champion_registry: Path) -> None:
    settings = signal_settings(stack)
    svc = await replay(stack, settings, 3)
    # capped streams: 3 bars x 2 symbols of klines; ticks: 4 pushes per bar per symbol
    assert await stack.redis.xlen(KLINES_STREAM) == 6
    assert await stack.redis.xlen("quantum:stream:features") == 6
    last = await svc.store.last_bars("1h")
    assert set(last) == set(SYMBOLS) and len(set(last.values())) == 1
    bar = next(iter(last.values()))
    async with stack.workers(), inference_worker(stack.client, settings, stack.redis, champion_registry):
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 30)
        first = await start_bar_close(stack, BarCloseInput(interval="1h", symbols=list(SYMBOLS)))
        result = await first.result()
        assert result.bar_open_ms == bar and result.decisions == 2
        # sent to the portfolio's admission, which starts the positions it grants
        assert result.admitted and result.started == [], result
        wf_id = result.admitted[0]
        assert wf_id.endswith(f"-1h-{bar}")
        # the intent on the seed's stream names the workflow it started
        intents = await stack.redis.xrange(INTENT_STREAM)
        fields = {k.decode(): v.decode() for k, v in intents[0][1].items()}
        assert fields["workflow_id"] == wf_id and fields["source"] == "model"
        payload = json.loads(fields["payload"])
        assert payload["symbol"] in SYMBOLS and Decimal(payload["notional_usdt"]) <= Decimal(200)
        assert await stack.redis.xlen(SIGNAL_STREAM) == 2 and await stack.redis.xlen(DECISION_STREAM) == 2
        signal = {k.decode(): v.decode() for k, v in (await stack.redis.xrange(SIGNAL_STREAM))[0][1].items()}
        assert set(json.loads(signal["used"])) == {"xgboost", "lightgbm", "nhits", "patchtst"}
        # the portfolio grants it and the venue fills it at the replayed bar's close
        handle = stack.client.get_workflow_handle(wf_id)
        view = None
        for _ in range(100):
            try:
                view = await handle.query("state", result_type=PositionView)
            except RPCError:  # the portfolio has not started it yet
                await asyncio.sleep(0.1)
                continue
            if view.status not in (
                PositionStatus.VALIDATING,
                PositionStatus.GOVERNING,
                PositionStatus.ENTERING,
            ):
                break
            await asyncio.sleep(0.1)
        assert view is not None and view.status is PositionStatus.OPEN, view
        bars = load_aligned((payload["symbol"],), "1h")
        close = float(bars.close[0, int(np.searchsorted(bars.open_time_ms, bar))])
        assert abs(float(view.entry_price) - close) / close < 0.001
        # the same bar again: same ids, nothing new started, nothing published twice
        orders = stack.exchange.admin("GET", "orders")
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        decided = (await portfolio.query("state", result_type=PortfolioView)).denied_total
        again = await run_bar_close(
            stack, BarCloseInput(interval="1h", symbols=list(SYMBOLS), bar_open_ms=bar)
        )
        assert again.admitted == result.admitted and again.started == again.already_started == []
        assert await stack.redis.xlen(INTENT_STREAM) == len(result.admitted)
        await asyncio.sleep(1.0)  # the portfolio heard them: each is running, so nothing starts
        view_after = await portfolio.query("state", result_type=PortfolioView)
        assert view_after.denied_total == decided and sorted(view_after.book.reservations) == sorted(
            result.admitted
        )
        assert stack.exchange.admin("GET", "orders") == orders
        for wid in result.admitted:
            position = stack.client.get_workflow_handle(wid)
            await position.execute_update("close", {"reason": "test"})
            await asyncio.wait_for(position.result(), 20)  # closed before the workers stop
        if os.environ.get("RECORD_HISTORIES"):
            (HISTORIES / "bar-close.json").write_text((await first.fetch_history()).to_json())


async def test_universe_is_top_n_by_quote_volume_within_the_allowlist(stack: Stack) -> None:
    settings = signal_settings(stack)
    await replay(stack, settings, 1)
    store = BarStore(stack.redis)
    last = await store.last_bars("1h")
    bar = last["BTCUSDT"]

    async def universe(allow: list[str], n: int) -> UniverseResult:
        handle = await stack.client.start_workflow(
            UniverseWorkflow.run,
            UniverseInput(top_n=n, allowlist=allow, interval="1h"),
            id=f"universe-{uuid.uuid4().hex[:6]}",
            task_queue=INFERENCE_TASK_QUEUE,
            result_type=UniverseResult,
        )
        res = await handle.result()
        assert json.loads(await stack.redis.get(UNIVERSE_KEY)) == res.symbols
        if os.environ.get("RECORD_HISTORIES"):
            (HISTORIES / "universe.json").write_text((await handle.fetch_history()).to_json())
        return res

    # the stored bars' quote volume (close x volume) of the 24 bars up to the newest, from the files
    al = load_aligned(SYMBOLS, "1h")
    i = int(np.searchsorted(al.open_time_ms, bar))
    qv = {
        s: float((al.close[j, i - 23 : i + 1] * al.volume[j, i - 23 : i + 1]).sum())
        for j, s in enumerate(SYMBOLS)
    }
    async with inference_worker(stack.client, settings, stack.redis):
        # the venue answers ticker/24hr, but nobody traded on these pushed prices: the stored bars rank
        res = await universe(["*"], 5)
        assert res.source == "bars" and res.symbols == sorted(qv, key=lambda s: -qv[s])
        for s, v in res.ranked:
            assert v == pytest.approx(qv[s], rel=1e-9)
        # fills make the venue's 24 h quote volume: ETH traded more notional than BTC
        quote: dict[str, float] = {}
        with Api(stack.exchange) as api:
            for sym, notional in (("BTCUSDT", 150), ("ETHUSDT", 300), ("ETHUSDT", 300)):
                price = Decimal(api.public("/fapi/v1/ticker/price", symbol=sym).json()["price"])
                qty = str((notional / price).quantize(Decimal("0.001"), ROUND_UP))
                order = api.ok(
                    "POST",
                    "/fapi/v1/order",
                    {
                        "symbol": sym,
                        "side": "BUY",
                        "type": "MARKET",
                        "quantity": qty,
                        "newOrderRespType": "RESULT",
                    },
                )
                quote[sym] = quote.get(sym, 0.0) + float(order["cumQuote"])
            venue = {t["symbol"]: float(t["quoteVolume"]) for t in api.public("/fapi/v1/ticker/24hr").json()}
        assert quote["ETHUSDT"] > quote["BTCUSDT"] and venue["XRPUSDT"] == 0
        for allow, n, want in (
            (["*"], 1, ["ETHUSDT"]),
            (["*"], 5, ["ETHUSDT", "BTCUSDT"]),  # the venue's other symbols have no stored bars
            (["BTCUSDT", "XRPUSDT"], 5, ["BTCUSDT"]),
        ):
            res = await universe(allow, n)
            assert res.source == "ticker_24hr" and res.symbols == want
            assert dict(res.ranked) == pytest.approx(quote, rel=1e-9)
            assert dict(res.ranked) == pytest.approx({s: venue[s] for s in SYMBOLS}, rel=1e-9)
    # an unreachable venue: the stored bars
    down = await UniverseActivities(stack.redis, "http://127.0.0.1:9").quote_volumes(UniverseInput())
    assert down.source == "bars" and down.volumes == pytest.approx(qv, rel=1e-9)


async def test_a_universe_run_before_the_first_stored_bar_waits_for_bars_instead_of_storing_none(
    stack: Stack,
) -> None:
    """A stack whose universe job runs before market-data stored its first bar: storing `[]` there had
    inference decide nothing until the next run (an hour by default). The job retries until bars are
    stored, and the universe it stores is the real one."""
    settings = signal_settings(stack)
    with pytest.raises(ApplicationError, match="no closed 1h bars stored yet") as err:
        await UniverseActivities(stack.redis, None).quote_volumes(UniverseInput())
    assert err.value.type == ErrorType.NO_BARS_STORED and not err.value.non_retryable
    async with inference_worker(stack.client, settings, stack.redis):
        handle = await stack.client.start_workflow(
            UniverseWorkflow.run,
            UniverseInput(top_n=5, allowlist=["*"], interval="1h"),
            id=f"universe-{uuid.uuid4().hex[:6]}",
            task_queue=INFERENCE_TASK_QUEUE,
            result_type=UniverseResult,
        )
        async with asyncio.timeout(30):  # the first attempt has failed for want of bars
            while True:
                pending = (await handle.describe()).raw_description.pending_activities
                if pending and "no closed 1h bars" in pending[0].last_failure.message:
                    break
                await asyncio.sleep(0.1)
        assert await stack.redis.get(UNIVERSE_KEY) is None  # nothing stored: inference takes the allowlist
        await replay(stack, settings, 1)
        res = await handle.result()
    assert sorted(res.symbols) == sorted(SYMBOLS) and res.source == "bars"
    assert json.loads(await stack.redis.get(UNIVERSE_KEY)) == res.symbols


async def test_a_corrupted_model_is_left_out_and_named(
    stack: Stack, champion_registry: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(champion_registry, root)
    version = (root / "lightgbm" / "champion").read_text().strip()
    model_file = root / "lightgbm" / version / "model.txt"
    model_file.write_text(model_file.read_text()[:-100])
    settings = signal_settings(stack)
    await replay(stack, settings, 1)
    act = InferenceActivities(settings, stack.redis, root)
    res = await act.infer_bar(InferenceInput(symbols=list(SYMBOLS), interval="1h"))
    assert len(res.decisions) == 2
    for d in res.decisions:
        assert "corrupted" in d.missing["lightgbm"] and "lightgbm" not in d.used
        assert set(d.used) == {"xgboost", "nhits", "patchtst"}
    assert any("lightgbm" in n for n in res.notes)


def stream_fields(entries: list) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]


async def test_a_shadow_challenger_is_published_each_bar_and_never_traded(
    stack: Stack, champion_registry: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(champion_registry, root)
    learning = LearningActivities(root)
    version = ModelRegistry(root).champion("lightgbm")
    assert version is not None
    learning.set_model_stage(SetStageInput(model="lightgbm", version=version, stage="shadow"))
    settings = signal_settings(stack)
    svc = await replay(stack, settings, 1)
    bar = min((await svc.store.last_bars("1h")).values())
    async with inference_worker(stack.client, settings, stack.redis, root):
        handle = await start_bar_close(stack, BarCloseInput(interval="1h", symbols=list(SYMBOLS)))
        result = await handle.result()
        if os.environ.get("RECORD_HISTORIES"):
            (HISTORIES / "bar-close-shadow.json").write_text((await handle.fetch_history()).to_json())
        # the same bar again: nothing published twice
        again = await run_bar_close(
            stack, BarCloseInput(interval="1h", symbols=list(SYMBOLS), bar_open_ms=bar)
        )
        assert again.started == [] and again.already_started == result.started
    signals = stream_fields(await stack.redis.xrange(SIGNAL_STREAM))
    shadow = [f for f in signals if not is_tradeable(f)]
    champion = [f for f in signals if is_tradeable(f)]
    assert result.shadow_signals == len(shadow) == len(SYMBOLS)
    assert {f["symbol"] for f in shadow} == set(SYMBOLS)
    assert all(
        f["shadow"] == "true" and f["model"] == "lightgbm" and f["model_version"] == version for f in shadow
    )
    assert all(f["bar_open_time_ms"] == str(bar) for f in shadow)
    assert len(champion) == len(SYMBOLS) and all(f["bar_open_ms"] == str(bar) for f in champion)
    # positions: exactly the champion's decisions that opened, nothing else
    opened = [
        f["workflow_id"]
        for f in stream_fields(await stack.redis.xrange(DECISION_STREAM))
        if f["action"] == "open"
    ]
    assert opened and sorted(result.started) == sorted(opened) and result.not_tradeable == []
    intents = stream_fields(await stack.redis.xrange(INTENT_STREAM))
    assert sorted(f["workflow_id"] for f in intents) == sorted(opened)


async def test_bar_close_starts_no_position_for_a_shadow_decision(stack: Stack) -> None:
    """The guard itself: whatever inference returns, a decision flagged shadow is not traded."""
    intent = PositionInput(
        symbol="BTCUSDT",
        side=Side.LONG,
        notional_usdt=Decimal(150),
        strategy="trend",
        source=IntentSource.MODEL,
    )
    decision = SymbolDecision(
        symbol="BTCUSDT", side="LONG", p_up=0.7, confidence=0.7, models_agree=4, kill_score=0.3,
        regime="ranging", price=60000.0, action="open", intent=intent,
    )  # fmt: skip
    decisions = [
        decision.model_copy(update={"workflow_id": "position-champion"}),
        decision.model_copy(update={"workflow_id": "position-shadow", "shadow": True}),
    ]

    @activity.defn(name=calls.INFER_BAR.name)
    async def infer_bar(inp: InferenceInput) -> InferenceResult:
        return InferenceResult(interval="1h", bar_open_ms=0, symbols=["BTCUSDT"], decisions=decisions)

    @activity.defn(name=calls.PUBLISH_DECISIONS.name)
    async def publish_decisions(result: InferenceResult) -> None:
        return None

    async with Worker(
        stack.client,
        task_queue=INFERENCE_TASK_QUEUE,
        workflows=[BarCloseWorkflow],
        activities=[infer_bar, publish_decisions],
    ):
        result = await run_bar_close(stack, BarCloseInput())
    assert result.started == ["position-champion"] and result.not_tradeable == ["position-shadow"]
    await stack.client.get_workflow_handle("position-champion").describe()
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle("position-shadow").describe()


async def wait_learned(stack: Stack, updates: int) -> None:
    for _ in range(300):
        raw = await stack.redis.get(STATE_KEY)
        if raw is not None and BanditState.from_json(raw).updates >= updates:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the inference worker's rewards consumer did not apply {updates} rewards")


async def bar_close_intents(stack: Stack) -> tuple[BarCloseResult, list[dict[str, str]]]:
    seen = {f["workflow_id"] for f in stream_fields(await stack.redis.xrange(INTENT_STREAM))}
    result = await run_bar_close(stack, BarCloseInput(interval="1h", symbols=list(SYMBOLS)))
    fresh = [
        f for f in stream_fields(await stack.redis.xrange(INTENT_STREAM)) if f["workflow_id"] not in seen
    ]
    assert fresh, f"no intent at bar {result.bar_open_ms}: {result}"
    return result, fresh


async def test_rewards_on_the_stream_change_the_strategy_of_the_next_intent(
    stack: Stack, champion_registry: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inference worker as its own process (`qtrader worker inference`): its background rewards
    consumer learns from quantum:stream:rl_rewards, and the next bar's intents carry what it learned,
    per regime; SIGTERM stops it cleanly."""
    settings = signal_settings(stack)
    for key, value in {
        "MODEL_REGISTRY_DIR": str(champion_registry),
        "SIGNAL_TIMEFRAME": "1h",
        "SIGNAL_CONFIDENCE_THRESHOLD": str(settings.signal_confidence_threshold),
        # its schedules must not fire during the test
        "BAR_CLOSE_INTERVAL_SECONDS": str(365 * 86400),
        "UNIVERSE_INTERVAL_SECONDS": str(365 * 86400),
        "RETRAIN_INTERVAL_HOURS": str(365 * 24),
    }.items():
        monkeypatch.setenv(key, value)
    worker = stack.start_worker_process("inference")
    worker.wait_ready(lambda: "polling task queue" in worker.log_path.read_text(), 120, "inference worker")

    async def rewards(regimes: list[str], values: dict[str, float], n: int) -> int:
        pipe = stack.redis.pipeline(transaction=False)
        for regime in regimes:
            for k in range(n):
                for strategy, value in values.items():
                    pipe.xadd(
                        REWARDS_STREAM,
                        {"trade_id": f"t-{regime}-{strategy}-{k}", "strategy": strategy, "regime": regime,
                         "reward": repr(value)},
                    )  # fmt: skip
        await pipe.execute()
        return len(regimes) * n * len(values)

    # trend has paid in every regime, scalp and swing have lost
    learned = await rewards([r.value for r in REGIMES], {"trend": 1.0, "scalp": -1.0, "swing": -1.0}, 30)
    await wait_learned(stack, learned)
    await replay(stack, settings, 1)
    _, first = await bar_close_intents(stack)
    assert {f["strategy"] for f in first} == {"trend"}
    regime = first[0]["regime"]
    # then, in that regime only, trend loses and scalp pays
    learned += await rewards([regime], {"trend": -1.0, "scalp": 1.0}, 100)
    await wait_learned(stack, learned)
    await replay(stack, settings, 1)
    _, second = await bar_close_intents(stack)
    assert any(f["regime"] == regime for f in second), second
    for f in second:
        assert f["strategy"] == ("scalp" if f["regime"] == regime else "trend"), f
        exits = json.loads(f["exits"])
        if f["strategy"] == "scalp":  # the arm's exit overrides travel with the intent
            assert exits["profile"]["max_holding_seconds"] == 4 * 3600
    worker.stop()
    assert worker.popen is not None and worker.popen.returncode == 0
    assert "rewards consumer stopped" in worker.log_path.read_text()
    assert (await stack.redis.xpending(REWARDS_STREAM, GROUP))["pending"] == 0  # each reward acknowledged
    assert await stack.redis.xinfo_consumers(REWARDS_STREAM, GROUP) == []  # it left the group tidy


@pytest.mark.parametrize(
    "stack", [{"apply_allowlist": ["BTCUSDT"], "exchange_args": ["--extra-symbols", "30"]}], indirect=True
)
async def test_with_no_portfolio_a_bar_close_starts_every_position_in_one_workflow_task(
    stack: Stack,
) -> None:
    # No portfolio runs to admit the intents, so the bar close starts the positions itself (each asks a
    # portfolio into being). One at a time, a hundred symbols took a hundred round trips to the server
    # before the last position existed (bench.barclose measures the admission path).
    symbols = [f"T{i:03d}USDT" for i in range(1, 31)]
    bar = 1_800_000_000_000
    async with (
        stack.workers(),
        Worker(
            stack.client,
            task_queue=INFERENCE_TASK_QUEUE,
            workflows=[BarCloseWorkflow],
            activities=[bench_infer_bar, bench_publish_decisions],
        ),
    ):
        handle = await stack.client.start_workflow(
            BarCloseWorkflow.run,
            BarCloseInput(symbols=symbols, interval="1h", bar_open_ms=bar),
            id="bar-close-together",
            task_queue=INFERENCE_TASK_QUEUE,
            result_type=BarCloseResult,
        )
        result = await handle.result()
        history = await handle.fetch_history()
        positions = [stack.client.get_workflow_handle(position_id(bar, s)) for s in symbols]
        # outside the allowlist: every position is refused and ends before the workers stop
        outcomes = await asyncio.gather(*(asyncio.wait_for(p.result(), 60) for p in positions))
    assert result.admitted == [] and sorted(result.started) == sorted(p.id for p in positions)
    initiated = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert len(initiated) == 30
    assert len({a.workflow_task_completed_event_id for a in initiated}) == 1
    assert {o["rejection_gate"] for o in outcomes} == {"allowlist"}

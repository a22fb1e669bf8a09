"""The strategy chooser against a real redis-server: one reward per closed trade (through the whole
stack), each reward applied exactly once across restarts and crashes (consumer group + ack in the
same transaction as the state), bad rewards dead-lettered with their id, and the learned choice."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from activities.projections import reward_fields
from signals.regime import Regime
from signals.strategy_chooser import (
    DEAD_LETTER_STREAM,
    GROUP,
    STATE_KEY,
    STRATEGIES,
    StrategyChooser,
)
from tests.workflows.conftest import Stack, stack  # noqa: F401  (the whole-stack fixture, reused)
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.bandit import REWARDS_STREAM, BanditState, normalize_reward, parse_reward, trade_margin
from trading.intents import IntentSource, Side, TradeIntent
from workers.devservers import start_redis
from workflows.messages import PositionResult, PositionStatus, PositionView, ProjectionInput

D = Decimal


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[aioredis.Redis]:
    proc, port = start_redis(tmp_path)
    client = aioredis.Redis(port=port)
    try:
        yield client
    finally:
        await client.aclose()
        proc.stop()


def reward(trade: str, strategy: str, regime: str, value: float | str) -> dict[str, str]:
    return {"trade_id": trade, "strategy": strategy, "regime": regime, "reward": str(value)}


async def pending(redis: aioredis.Redis) -> int:
    return int((await redis.xpending(REWARDS_STREAM, GROUP))["pending"])


async def test_one_reward_per_closed_trade_through_the_stack(stack: Stack) -> None:  # noqa: F811
    stack.exchange.set_price("BTCUSDT", "60000")
    async with stack.workers():
        traded = await start_position(
            stack,
            TradeIntent(
                symbol="BTCUSDT",
                side=Side.LONG,
                notional_usdt=D(150),
                leverage=5,
                strategy="trend",
                regime="trending_up",
                source=IntentSource.MODEL,
            ),
        )
        await wait_status(traded, PositionStatus.OPEN)
        stack.exchange.set_price("BTCUSDT", "60600")  # +1 %
        await traded.execute_update("close", {})
        result: PositionResult = await asyncio.wait_for(traded.result(), 20)
        rejected = await start_position(  # the kill score stops it at the governor: no trade, no reward
            stack, TradeIntent(symbol="BTCUSDT", side=Side.SHORT, notional_usdt=D(150), kill_score=0.95)
        )
        assert (await asyncio.wait_for(rejected.result(), 20)).status == PositionStatus.REJECTED
    closed = await stack.redis.xrange("quantum:stream:trade.closed")  # written before the result
    assert traded.id.encode() in [f[b"workflow_id"] for _, f in closed]
    entries = await stack.redis.xrange(REWARDS_STREAM)
    assert len(entries) == 1
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert fields["trade_id"] == traded.id
    assert (fields["strategy"], fields["regime"]) == ("trend", "trending_up")
    assert result.realized_pnl > 0 and D(fields["realized_pnl"]) == result.realized_pnl
    margin = D(fields["margin"])
    # 150 USDT asked, 0.002 BTC filled: the margin is within the asked notional / leverage
    assert 0 < margin <= trade_margin(D(150), 5)
    assert float(fields["reward"]) == pytest.approx(normalize_reward(result.realized_pnl, margin))
    assert 0 < float(fields["reward"]) < 1

    chooser = StrategyChooser(stack.redis)
    await chooser.start()
    rep = await chooser.consume()
    assert rep.applied == [entries[0][0].decode()]
    assert chooser.state.stats("trending_up", "trend").pulls == 1


async def test_each_reward_is_applied_once_across_restarts(redis: aioredis.Redis) -> None:
    first = StrategyChooser(redis, seed=1)
    await first.start()
    for i in range(5):
        await redis.xadd(REWARDS_STREAM, reward(f"t{i}", "trend", "ranging", 0.1 * i))
    assert len((await first.consume()).applied) == 5
    again = StrategyChooser(redis, seed=1)  # a restart: same consumer name, state from Redis
    await again.start()
    assert again.state == first.state and again.state.updates == 5
    assert len(await again.consume()) == 0
    assert again.state.updates == 5 and await pending(redis) == 0

    # a crash after reading and before the ack: the entries stay pending and are applied after restart
    for i in range(3):
        await redis.xadd(REWARDS_STREAM, reward(f"c{i}", "scalp", "volatile", -0.2))
    got = await redis.xreadgroup(GROUP, "chooser-1", {REWARDS_STREAM: ">"}, count=10)
    assert len(got[0][1]) == 3 and await pending(redis) == 3
    restarted = StrategyChooser(redis)
    await restarted.start()
    assert len((await restarted.consume()).applied) == 3
    assert restarted.state.updates == 8 and await pending(redis) == 0
    assert restarted.state.stats("volatile", "scalp").pulls == 3

    # a chooser that died for good (another consumer name): its pending entries are claimed
    await redis.xadd(REWARDS_STREAM, reward("d0", "swing", "ranging", 0.3))
    await redis.xreadgroup(GROUP, "chooser-dead", {REWARDS_STREAM: ">"}, count=10)
    other = StrategyChooser(redis, consumer="chooser-2", claim_idle_ms=0)
    await other.start()
    assert len((await other.consume()).applied) == 1
    assert other.state.updates == 9 and await pending(redis) == 0
    assert BanditState.from_json(await redis.get(STATE_KEY)).updates == 9


async def test_two_choosers_at_once_lose_no_update(redis: aioredis.Redis) -> None:
    a, b = StrategyChooser(redis, consumer="a", batch=3), StrategyChooser(redis, consumer="b", batch=3)
    await a.start()
    await b.start()
    for i in range(60):
        await redis.xadd(REWARDS_STREAM, reward(f"t{i}", "trend", "ranging", 0.5))
    await asyncio.gather(a.consume(), b.consume())
    assert BanditState.from_json(await redis.get(STATE_KEY)).updates == 60


async def test_bad_rewards_are_dead_lettered_with_their_id(redis: aioredis.Redis) -> None:
    chooser = StrategyChooser(redis)
    await chooser.start()
    nan_id = (await redis.xadd(REWARDS_STREAM, reward("t1", "trend", "ranging", "nan"))).decode()
    missing_id = (await redis.xadd(REWARDS_STREAM, {"trade_id": "t2", "reward": "0.1"})).decode()
    good_id = (await redis.xadd(REWARDS_STREAM, reward("t3", "trend", "ranging", 0.2))).decode()
    manual_id = (await redis.xadd(REWARDS_STREAM, reward("t4", "manual", "ranging", 0.2))).decode()
    rep = await chooser.consume()
    assert rep.dead == [nan_id, missing_id] and rep.applied == [good_id] and rep.ignored == [manual_id]
    dead = await redis.xrange(DEAD_LETTER_STREAM)
    got = [{k.decode(): v.decode() for k, v in f.items()} for _, f in dead]
    assert [d["source_id"] for d in got] == [nan_id, missing_id]
    assert "not a finite number" in got[0]["error"]
    assert "missing field(s): strategy, regime" in got[1]["error"]
    assert json.loads(got[1]["fields"]) == {"trade_id": "t2", "reward": "0.1"}
    assert chooser.state.updates == 1 and await pending(redis) == 0


async def test_learns_which_strategy_pays_in_each_regime(redis: aioredis.Redis) -> None:
    truth = {"trending_up": "trend", "ranging": "scalp", "volatile": "swing"}
    chooser = StrategyChooser(redis, seed=3)
    await chooser.start()
    rng = random.Random(3)
    for i in range(900):  # rewards as the closed trades of the chosen strategies would bring them
        regime = list(truth)[i % 3]
        arm = chooser.choose(regime).strategy
        mean = 0.2 if arm == truth[regime] else -0.05
        value = max(-1.0, min(1.0, rng.gauss(mean, 0.4)))
        await redis.xadd(REWARDS_STREAM, reward(f"t{i}", arm, regime, value))
        await chooser.consume()
    fresh = StrategyChooser(redis, seed=9)  # another process answering from the stored state
    await fresh.refresh()
    for regime, winner in truth.items():
        picks = [fresh.choose(regime).strategy for _ in range(200)]
        assert picks.count(winner) > 150, (regime, {a: picks.count(a) for a in STRATEGIES})
    choice = fresh.choose(Regime.TRENDING_UP)
    assert choice.exits == STRATEGIES[choice.strategy]
    assert "trend" in choice.reason()
    with pytest.raises(ValueError):
        fresh.choose("sideways")


def _closed(pnl: str, fees: str, result: PositionResult | None, **intent: object) -> ProjectionInput:
    view = PositionView(
        workflow_id="position-BTCUSDT-1",
        status=PositionStatus.CLOSED,
        symbol="BTCUSDT",
        side=Side.LONG,
        open_qty=D(0),
        entry_price=D(60000),
        mark_price=None,
        unrealized_pnl=None,
        realized_pnl=D(pnl),
        fees=D(fees),
        stop_loss_price=None,
        take_profit_price=None,
        hard_stop_price=None,
        next_trigger=None,
    )
    fields = {"symbol": "BTCUSDT", "side": Side.LONG, "leverage": 5, "strategy": "scalp", "regime": "ranging"}
    fields.update(intent)
    if not any(k in fields for k in ("quantity", "notional_usdt")):
        fields["notional_usdt"] = D(150)
    return ProjectionInput(kind="trade_closed", view=view, intent=TradeIntent(**fields), result=result)


def test_reward_is_net_pnl_over_the_filled_margin() -> None:
    result = PositionResult(
        workflow_id="position-BTCUSDT-1",
        status=PositionStatus.CLOSED,
        symbol="BTCUSDT",
        side=Side.LONG,
        intent_id=None,
        strategy="scalp",
        entry_price=D(60000),
        quantity=D("0.002"),
    )
    fields = reward_fields(_closed("1.2", "0.1", result), 0)
    assert fields is not None and fields["margin_basis"] == "fills"
    assert D(fields["margin"]) == D(24)  # 0.002 × 60000 / 5
    assert float(fields["reward"]) == pytest.approx(math.tanh(0.05 / 0.25))  # ROE 5 %
    assert parse_reward(fields).strategy == "scalp"  # what the chooser reads back
    # without the result (today's trade_closed projection): the intent's size bounds the margin
    fields = reward_fields(_closed("-3", "0.1", None, quantity=D("0.002"), notional_usdt=None), 0)
    assert fields is not None and fields["margin_basis"] == "intent_quantity" and D(fields["margin"]) == 24
    assert float(fields["reward"]) == pytest.approx(math.tanh(-0.125 / 0.25))
    assert reward_fields(_closed("0", "0", None), 0) is None  # nothing filled: no reward

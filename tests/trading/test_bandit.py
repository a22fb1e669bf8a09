"""The strategy bandit learns which arm pays in which regime, keeps its state exactly through JSON, and
refuses unusable rewards with a message that names the problem."""

from __future__ import annotations

import math
import random
from decimal import Decimal

import pytest

from trading.bandit import (
    BanditState,
    RewardError,
    best_arm,
    choose,
    normalize_reward,
    parse_reward,
    posterior,
    trade_margin,
    update,
)

ARMS = ("trend", "scalp", "swing")
# true mean reward of each arm per regime: a different winner in each regime
TRUTH = {
    "trending_up": {"trend": 0.25, "scalp": 0.0, "swing": 0.05},
    "ranging": {"trend": -0.15, "scalp": 0.15, "swing": 0.0},
    "volatile": {"trend": -0.05, "scalp": -0.2, "swing": 0.1},
}
NOISE = 0.5  # per-trade noise far larger than the gaps between arms, as with real trades


def _draw(rng: random.Random, mean: float) -> float:
    return max(-1.0, min(1.0, rng.gauss(mean, NOISE)))


def _play(seed: int, rounds: int, *, discount: float = 1.0) -> tuple[BanditState, dict[str, list[str]]]:
    rng = random.Random(seed)
    state = BanditState.new(ARMS, discount=discount)
    played: dict[str, list[str]] = {r: [] for r in TRUTH}
    for i in range(rounds):
        regime = list(TRUTH)[i % len(TRUTH)]
        arm = choose(state, regime, rng).arm
        played[regime].append(arm)
        state = update(state, regime, arm, _draw(rng, TRUTH[regime][arm]))
    return state, played


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_learns_the_best_arm_in_each_regime(seed: int) -> None:
    state, played = _play(seed, 3 * 600)
    for regime, means in TRUTH.items():
        winner = max(means, key=means.__getitem__)
        assert best_arm(state, regime) == winner, (regime, [posterior(state, regime, a) for a in ARMS])
        late = played[regime][-200:]
        # a uniform chooser would play the winner 1/3 of the time
        assert late.count(winner) / len(late) > 0.6, (regime, {a: late.count(a) for a in ARMS})


def test_thompson_regret_is_far_below_uniform_choice() -> None:
    rounds = 3 * 600
    _, played = _play(11, rounds)
    regret = sum(max(TRUTH[r].values()) - TRUTH[r][a] for r, arms in played.items() for a in arms)
    uniform = sum(max(m.values()) - sum(m.values()) / len(m) for m in TRUTH.values()) * rounds / 3
    assert regret < 0.4 * uniform, (regret, uniform)


def test_discounting_follows_a_strategy_that_stops_working() -> None:
    rng = random.Random(7)
    state = BanditState.new(("a", "b"), discount=0.97)
    for _ in range(300):  # "a" pays
        arm = choose(state, "ranging", rng).arm
        state = update(state, "ranging", arm, _draw(rng, 0.3 if arm == "a" else 0.0))
    assert best_arm(state, "ranging") == "a"
    late = []
    for _ in range(300):  # the market changes: now "b" pays
        arm = choose(state, "ranging", rng).arm
        late.append(arm)
        state = update(state, "ranging", arm, _draw(rng, -0.2 if arm == "a" else 0.2))
    assert best_arm(state, "ranging") == "b"
    assert late[-100:].count("b") > 70


def test_unseen_regime_borrows_what_the_arm_did_elsewhere() -> None:
    state = BanditState.new(("a", "b"))
    for _ in range(50):
        state = update(state, "trending_up", "a", 0.4)
        state = update(state, "trending_up", "b", -0.4)
    assert best_arm(state, "volatile") == "a"  # never traded in "volatile"
    seen, unseen = posterior(state, "trending_up", "a"), posterior(state, "volatile", "a")
    assert 0 < unseen.mean < 0.4 and unseen.sd > 10 * seen.sd  # shrunk towards 0, far less certain


def test_state_round_trips_exactly_and_chooses_the_same() -> None:
    state, _ = _play(3, 300, discount=0.99)
    again = BanditState.from_json(state.to_json())
    assert again == state
    a = [choose(state, r, random.Random(5)).arm for r in TRUTH]
    b = [choose(again, r, random.Random(5)).arm for r in TRUTH]
    assert a == b
    assert again.updates == 300 and sum(s.pulls for c in again.cells.values() for s in c.values()) == 300


def test_corrupt_state_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="unreadable bandit state"):
        BanditState.from_json('{"config": {"arms": []}}')
    with pytest.raises(ValueError, match="unknown arms"):
        BanditState.from_json('{"config": {"arms": ["a"]}, "cells": {"ranging": {"zzz": {}}}}')


def test_update_refuses_unknown_arms_and_bad_rewards() -> None:
    state = BanditState.new(("a", "b"))
    with pytest.raises(ValueError, match="'c' is not an arm"):
        update(state, "ranging", "c", 0.1)
    for bad in (math.nan, math.inf, 1.5):
        with pytest.raises(RewardError, match="finite number in"):
            update(state, "ranging", "a", bad)
    assert state.updates == 0  # nothing was half-applied


def test_reward_is_pnl_over_margin_squashed() -> None:
    margin = trade_margin(Decimal("200"), 5)  # 200 USDT notional at 5x → 40 USDT margin
    assert margin == Decimal(40)
    assert normalize_reward(Decimal(10), margin) == pytest.approx(math.tanh(1.0))  # ROE 25 %
    assert normalize_reward(Decimal(-10), margin) == pytest.approx(-math.tanh(1.0))
    assert normalize_reward(Decimal(0), margin) == 0.0
    rewards = [normalize_reward(Decimal(p), margin) for p in (-1000, -20, -1, 1, 20, 1000)]
    assert rewards == sorted(rewards) and all(-1 <= r <= 1 for r in rewards)
    with pytest.raises(RewardError, match="margin must be > 0"):
        normalize_reward(Decimal(1), Decimal(0))
    with pytest.raises(RewardError, match="realized_pnl must be finite"):
        normalize_reward(Decimal("NaN"), margin)
    with pytest.raises(RewardError, match="leverage"):
        trade_margin(Decimal(100), 0)


def test_parse_reward_accepts_a_stream_entry() -> None:
    r = parse_reward(
        {b"trade_id": b"position-BTC-1", b"strategy": b"trend", b"regime": b"ranging", b"reward": b"-0.25"}
    )
    assert (r.trade_id, r.strategy, r.regime, r.reward) == ("position-BTC-1", "trend", "ranging", -0.25)


OK = {"trade_id": "t", "strategy": "trend", "regime": "ranging"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"trade_id": "t", "strategy": "trend", "regime": "ranging", "reward": "nan"}, "not a finite number"),
        ({"trade_id": "t", "strategy": "trend", "regime": "ranging", "reward": "inf"}, "not a finite number"),
        (
            {"trade_id": "t", "strategy": "trend", "regime": "ranging", "reward": "abc"},
            "reward: not a number",
        ),
        (
            {"trade_id": "t", "strategy": "trend", "regime": "ranging", "reward": "3"},
            "reward: Input should be",
        ),
        ({"trade_id": "t", "strategy": "trend", "reward": "0.1"}, r"missing field\(s\): regime"),
        ({"strategy": "trend", "regime": "", "reward": "0.1"}, r"missing field\(s\): trade_id, regime"),
        (
            {"trade_id": "t", "strategy": "s", "regime": "r", "reward": "0.1", "margin": "NaN"},
            "margin",
        ),
    ],
)
def test_parse_reward_names_the_problem(fields: dict[str, str], message: str) -> None:
    with pytest.raises(RewardError, match=message):
        parse_reward(fields)

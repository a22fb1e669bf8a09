"""Allocation targets: inverse volatility, per-symbol caps with and without redistribution, a bounded
performance tilt, and targets that never exceed a cap or the budget."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.allocation import (
    AllocationPolicy,
    allocate,
    performance_multiplier,
    realized_volatility,
    trade_sharpe,
)
from trading.intents import Side
from trading.records import ClosedTrade

D = Decimal
NO_CAP = AllocationPolicy(max_symbol_share=D(1))
_ids = iter(range(1, 10**9))


def trade(pnl: str, closed: int = 0, symbol: str = "BTCUSDT") -> ClosedTrade:
    return ClosedTrade(
        trade_id=f"t{next(_ids)}",
        symbol=symbol,
        side=Side.LONG,
        strategy="s",
        source="model",
        quantity=D(1),
        entry_price=D(100),
        exit_price=D(100) + D(pnl),
        opened_at_ms=0,
        closed_at_ms=closed,
        realized_pnl=D(pnl),
        gross_pnl=D(pnl),
        fees=D(0),
        exit_reason="manual",
    )


def notionals(targets) -> dict[str, D]:
    return {s: t.notional_usdt for s, t in targets.items()}


def test_inverse_volatility() -> None:
    targets = allocate({"A": 0.01, "B": 0.02}, D(1000), NO_CAP)
    assert notionals(targets) == {"A": D("666.66"), "B": D("333.33")}
    assert targets["A"].multiplier == 1 and targets["A"].sharpe is None and not targets["A"].capped


def test_caps_and_redistribution() -> None:
    policy = AllocationPolicy(max_symbol_share=D("0.4"))
    # Scores 4:2:1 of 1000 → 571.43 / 285.71 / 142.86; A is held at 400 and its excess is shared 2:1.
    targets = allocate({"A": 0.01, "B": 0.02, "C": 0.04}, D(1000), policy)
    assert notionals(targets) == {"A": D(400), "B": D(400), "C": D(200)}
    assert targets["A"].capped and targets["B"].capped and not targets["C"].capped
    kept = allocate(
        {"A": 0.01, "B": 0.02, "C": 0.04}, D(1000), policy.model_copy(update={"redistribute": False})
    )
    assert notionals(kept) == {"A": D(400), "B": D("285.71"), "C": D("142.85")}
    usdt_cap = allocate(
        {"A": 0.01, "B": 0.01}, D(1000), NO_CAP.model_copy(update={"max_symbol_usdt": D(100)})
    )
    assert notionals(usdt_cap) == {"A": D(100), "B": D(100)}


def test_unusable_volatility_gets_nothing() -> None:
    targets = allocate({"A": 0.0, "B": float("nan"), "C": None, "D": -1.0, "E": 0.02}, D(100), NO_CAP)
    assert notionals(targets) == {"A": 0, "B": 0, "C": 0, "D": 0, "E": D(100)}
    assert targets["A"].note is not None and "volatility" in targets["A"].note
    assert allocate({}, D(100), NO_CAP) == {}
    assert notionals(allocate({"A": 0.01}, D(0), NO_CAP)) == {"A": 0}


def test_performance_tilt_is_bounded() -> None:
    policy = AllocationPolicy(tilt_min_trades=3)
    winners = [trade("2"), trade("1"), trade("3")]  # ratios 0.02 / 0.01 / 0.03: Sharpe 2
    assert trade_sharpe(winners) == pytest.approx(2.0)
    assert performance_multiplier(winners, policy) == (D("1.5"), pytest.approx(2.0))  # 1 + 0.5 × 2, capped
    mixed = [trade("1"), trade("-1"), trade("0.5")]  # mean 0.00167 / sd 0.01041
    m, sharpe = performance_multiplier(mixed, policy)
    assert sharpe == pytest.approx(0.1601, abs=1e-4) and m == pytest.approx(D("1.0801"), abs=D("0.0001"))
    losers = [trade("-2"), trade("-1"), trade("-3")]
    assert performance_multiplier(losers, policy)[0] == D("0.5")
    assert performance_multiplier(winners[:2], policy) == (D(1), None)  # too few trades
    assert performance_multiplier([trade("1")] * 3, policy) == (D(1), None)  # no variation


def test_lookback_takes_the_latest_trades() -> None:
    old_losses = [trade("-5", closed=i) for i in range(5)]
    recent = [trade("2", closed=10), trade("1", closed=11), trade("3", closed=12)]
    assert trade_sharpe(old_losses + recent, lookback=3) == pytest.approx(2.0)


def test_tilt_moves_notional_to_the_better_record() -> None:
    policy = AllocationPolicy(max_symbol_share=D(1), tilt_min_trades=3)
    targets = allocate(
        {"A": 0.01, "B": 0.01}, D(1000), policy, {"A": [trade("2"), trade("1"), trade("3")]}
    )  # A × 1.5, B × 1
    assert notionals(targets) == {"A": D(600), "B": D(400)}


def test_policy_validation_and_volatility() -> None:
    with pytest.raises(ValueError, match="tilt_lookback_trades"):
        AllocationPolicy(tilt_min_trades=10, tilt_lookback_trades=5)
    with pytest.raises(ValueError, match="max_symbol_share"):
        AllocationPolicy(max_symbol_share=D("1.5"))
    assert realized_volatility([0.01]) is None
    assert realized_volatility([0.01, 0.03]) == pytest.approx(0.0141421356)


# ------------------------------------------------------------------------------------------- properties
vols = st.dictionaries(
    st.sampled_from([f"S{i}USDT" for i in range(12)]),
    st.one_of(st.floats(1e-4, 2.0), st.just(0.0), st.none()),
    max_size=12,
)
budgets = st.decimals(min_value=0, max_value=100_000, places=2, allow_nan=False, allow_infinity=False)
alloc_policies = st.builds(
    AllocationPolicy,
    max_symbol_share=st.sampled_from([D("0.05"), D("0.1"), D("0.25"), D("0.5"), D(1)]),
    max_symbol_usdt=st.sampled_from([None, D(50), D(1000)]),
    tilt_min_trades=st.sampled_from([2, 5]),
    redistribute=st.booleans(),
)
histories = st.lists(st.integers(-500, 500), max_size=10)


@settings(max_examples=200, deadline=None)
@given(
    vols,
    budgets,
    alloc_policies,
    st.dictionaries(st.sampled_from([f"S{i}USDT" for i in range(12)]), histories),
)
def test_targets_never_exceed_caps_or_the_budget(v, budget: D, policy: AllocationPolicy, pnls) -> None:
    trades = {
        s: [trade(str(D(p) / 100), closed=i, symbol=s) for i, p in enumerate(ps)] for s, ps in pnls.items()
    }
    targets = allocate(v, budget, policy, trades)
    cap = policy.max_symbol_share * budget
    if policy.max_symbol_usdt is not None:
        cap = min(cap, policy.max_symbol_usdt)
    assert set(targets) == set(v)
    total = sum((t.notional_usdt for t in targets.values()), D(0))
    assert total <= budget
    for t in targets.values():
        assert D(0) <= t.notional_usdt <= cap
        assert policy.min_tilt <= t.multiplier <= policy.max_tilt
    usable = [s for s, vol in v.items() if vol]
    # With redistribution the whole budget is placed when the caps leave room for it (less rounding).
    if policy.redistribute and usable and cap * len(usable) >= budget:
        assert total >= budget - policy.quantum * len(usable)
    # The same inputs always give the same targets.
    assert allocate(v, budget, policy, trades) == targets


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.sampled_from([f"S{i}" for i in range(8)]), st.floats(1e-3, 1.0), min_size=2), budgets
)
def test_lower_volatility_never_gets_less_without_tilt(v, budget: D) -> None:
    targets = allocate(v, budget, AllocationPolicy(max_symbol_share=D("0.3")))
    for a in v:
        for b in v:
            if v[a] < v[b]:
                assert targets[a].notional_usdt >= targets[b].notional_usdt

"""Per-symbol locks: cooldown, stop-out guard and low profit, each with its figures, and random trade
histories where the lock must match an event-by-event replay of the rules exactly."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from trading.intents import Side
from trading.protections import (
    ProtectionPolicy,
    ProtectionRule,
    is_stop_out,
    locked_symbols,
    profit_ratio,
    symbol_lock,
    symbol_locks,
)
from trading.records import ClosedTrade

D = Decimal
MIN = 60_000
HOUR = 3_600_000
_ids = iter(range(1, 10**9))


def trade(
    closed: int, pnl: str = "-1", reason: str = "stop_loss", symbol: str = "BTCUSDT", notional: str = "100"
) -> ClosedTrade:
    return ClosedTrade(
        trade_id=f"t{next(_ids)}",
        symbol=symbol,
        side=Side.LONG,
        strategy="s",
        source="model",
        quantity=D(1),
        entry_price=D(notional),
        exit_price=D(notional) + D(pnl),
        opened_at_ms=max(0, closed - MIN),
        closed_at_ms=closed,
        realized_pnl=D(pnl),
        gross_pnl=D(pnl),
        fees=D(0),
        exit_reason=reason,
    )


ONLY_STOPS = ProtectionPolicy(low_profit_min_trades=None)
ONLY_LOW = ProtectionPolicy(stop_out_limit=None)


def test_stop_out_needs_a_stop_and_a_loss() -> None:
    assert is_stop_out(trade(0, "-1", "stop_loss"))
    assert is_stop_out(trade(0, "-1", "hard_stop"))
    assert not is_stop_out(trade(0, "2", "trailing_stop"))  # a trailing stop locking a profit
    assert not is_stop_out(trade(0, "-1", "take_profit_1"))
    assert not is_stop_out(trade(0, "-1", "manual"))
    assert profit_ratio(trade(0, "-2", notional="200")) == D("-0.01")


def test_cooldown_after_any_close() -> None:
    policy = ProtectionPolicy(cooldown_seconds=300, stop_out_limit=None, low_profit_min_trades=None)
    trades = [trade(10 * MIN, "5", "take_profit_1")]
    lock = symbol_lock("BTCUSDT", trades, policy, 12 * MIN)
    assert lock is not None and lock.rule is ProtectionRule.COOLDOWN and lock.until_ms == 15 * MIN
    assert "300 s" in lock.reason
    assert symbol_lock("BTCUSDT", trades, policy, 15 * MIN) is None
    assert symbol_lock("ETHUSDT", trades, policy, 12 * MIN) is None
    assert symbol_lock("BTCUSDT", trades, policy, 9 * MIN) is None  # a trade not closed yet at that time


def test_stop_out_guard_locks_from_the_second_stop() -> None:
    trades = [trade(0), trade(40 * MIN)]
    lock = symbol_lock("BTCUSDT", trades, ONLY_STOPS, 41 * MIN)
    assert lock is not None and lock.rule is ProtectionRule.STOP_OUT_GUARD
    assert lock.until_ms == 40 * MIN + HOUR
    assert "2 stop-outs within 3600 s (limit 2)" in lock.reason
    assert symbol_lock("BTCUSDT", trades, ONLY_STOPS, 39 * MIN) is None
    assert symbol_lock("BTCUSDT", trades, ONLY_STOPS, 40 * MIN + HOUR) is None


def test_stop_out_guard_window() -> None:
    apart = [trade(0), trade(HOUR)]  # exactly the lookback apart: the first is out of the window
    assert symbol_lock("BTCUSDT", apart, ONLY_STOPS, HOUR + 1) is None
    profitable = [trade(0, "3", "trailing_stop"), trade(MIN, "3", "trailing_stop")]
    assert symbol_lock("BTCUSDT", profitable, ONLY_STOPS, 2 * MIN) is None


def test_low_profit() -> None:
    trades = [trade(0, "1", "take_profit_1"), trade(HOUR, "-2", "manual"), trade(2 * HOUR, "0.5", "manual")]
    lock = symbol_lock("BTCUSDT", trades, ONLY_LOW, 2 * HOUR + 1)
    assert lock is not None and lock.rule is ProtectionRule.LOW_PROFIT
    assert lock.until_ms == 2 * HOUR + 6 * HOUR
    assert "3 trades" in lock.reason and "-0.50 %" in lock.reason and "0.00 %" in lock.reason
    good = [trade(0, "1", "manual"), trade(HOUR, "-2", "manual"), trade(2 * HOUR, "1", "manual")]
    assert symbol_lock("BTCUSDT", good, ONLY_LOW, 2 * HOUR + 1) is None  # sums to exactly 0: not below


def test_every_active_lock_and_locked_symbols() -> None:
    policy = ProtectionPolicy(cooldown_seconds=60)
    trades = [trade(0, symbol="ETHUSDT"), trade(MIN, symbol="ETHUSDT"), trade(0, "1", "manual", "BTCUSDT")]
    locks = symbol_locks("ETHUSDT", trades, policy, MIN + 1)
    assert [lock.rule for lock in locks] == [ProtectionRule.STOP_OUT_GUARD, ProtectionRule.COOLDOWN]
    locked = locked_symbols(trades, policy, MIN + 1)
    assert set(locked) == {"ETHUSDT"} and locked["ETHUSDT"].rule is ProtectionRule.STOP_OUT_GUARD
    assert policy.history_ms == 30 * HOUR


# ------------------------------------------------------------------------------------------- properties
def _replay(trades: list[ClosedTrade], policy: ProtectionPolicy, now: int) -> dict[ProtectionRule, int]:
    """The rules as freqtrade runs them: at each close, in time order, look back and maybe lock."""
    until: dict[ProtectionRule, int] = {}
    seen: list[ClosedTrade] = []
    for t in sorted(trades, key=lambda t: (t.closed_at_ms, t.trade_id)):
        if t.closed_at_ms > now:
            break
        seen.append(t)
        at = t.closed_at_ms
        if policy.cooldown_seconds:
            until[ProtectionRule.COOLDOWN] = at + policy.cooldown_seconds * 1000
        if policy.stop_out_limit and is_stop_out(t):
            lookback = policy.stop_out_lookback_seconds * 1000
            n = sum(1 for s in seen if is_stop_out(s) and s.closed_at_ms > at - lookback)
            if n >= policy.stop_out_limit:
                until[ProtectionRule.STOP_OUT_GUARD] = at + policy.stop_out_lock_seconds * 1000
        if policy.low_profit_min_trades:
            window = [s for s in seen if s.closed_at_ms > at - policy.low_profit_lookback_seconds * 1000]
            total = sum((profit_ratio(s) for s in window), D(0))
            if len(window) >= policy.low_profit_min_trades and total < policy.low_profit_required:
                until[ProtectionRule.LOW_PROFIT] = at + policy.low_profit_lock_seconds * 1000
    return {rule: end for rule, end in until.items() if now < end}


histories = st.lists(
    st.tuples(
        st.integers(0, 6 * HOUR // MIN),
        st.integers(-5, 5),
        st.sampled_from(["stop_loss", "trailing_stop", "take_profit_1", "manual", "hard_stop"]),
    ),
    max_size=25,
)
protection_policies = st.builds(
    ProtectionPolicy,
    cooldown_seconds=st.sampled_from([0, 60, 900]),
    stop_out_limit=st.sampled_from([None, 1, 2, 3]),
    stop_out_lookback_seconds=st.sampled_from([600, 3600]),
    stop_out_lock_seconds=st.sampled_from([600, 3600]),
    low_profit_min_trades=st.sampled_from([None, 1, 2, 4]),
    low_profit_lookback_seconds=st.sampled_from([3600, 86_400]),
    low_profit_required=st.sampled_from([D(0), D("-0.02"), D("0.01")]),
    low_profit_lock_seconds=st.sampled_from([600, 7200]),
)


@settings(max_examples=200, deadline=None)
@given(histories, protection_policies, st.integers(0, 8 * HOUR // MIN))
def test_locks_exactly_when_the_rules_say(history, policy: ProtectionPolicy, now_min: int) -> None:
    trades = [trade(m * MIN, str(p), reason) for m, p, reason in history]
    now = now_min * MIN
    expected = _replay(trades, policy, now)
    locks = symbol_locks("BTCUSDT", trades, policy, now)
    assert {lock.rule: lock.until_ms for lock in locks} == expected
    lock = symbol_lock("BTCUSDT", trades, policy, now)
    assert (lock is None) == (not expected)
    if lock is not None:
        assert lock.until_ms == max(expected.values()) and now < lock.until_ms and lock.reason
    # Trades of another symbol never lock this one; the order trades come in does not matter.
    assert symbol_locks("ETHUSDT", trades, policy, now) == []
    assert symbol_locks("BTCUSDT", list(reversed(trades)), policy, now) == locks

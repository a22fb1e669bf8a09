"""The risk layer in the running portfolio, across the real stack: closed trades reach the automatic
emergency stop through the journal activity; the stop cuts sizes (WARNING), refuses entries naming its
gate (CRITICAL) and flattens every holder (HALTED); each move is on `quantum:stream:ess.state.changed`,
in the portfolio's state and in its Web UI details; a restart of every worker keeps it; only an
operator's explicit move leaves HALTED."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError

from activities.portfolio import start_portfolio
from signals.bar_store import Bar, BarStore
from tests.workflows.conftest import Stack
from tests.workflows.drills import QUIET, synthetic_symbols
from tests.workflows.test_replay import HISTORIES, replay_all, replay_one_task_late
from trading.emergency import EmergencyState
from trading.governor import HOUR_MS, Gate, ReservationRequest, RiskPolicy
from trading.intents import Side
from trading.market_inputs import MarketInputs
from trading.policy_review import Proposal
from trading.records import ClosedTrade
from trading.risk import ClosedTradeEvent, RiskLayerPolicy
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    ClosePositionRequest,
    MarketInputsRequest,
    PolicyReviewInput,
    PolicyReviewResult,
    PortfolioView,
    PositionInput,
    PositionOptions,
    PositionResult,
    PositionStatus,
    PositionView,
)

D = Decimal
ES = EmergencyState
SYMBOLS = synthetic_symbols(6)
# Only the losing streak moves the stop here: one losing trade WARNING, two CRITICAL, three HALTED.
RISK = {
    "emergency": {
        "losing_streak": {"warning": 1, "critical": 2, "halt": 3},
        "daily_loss_usdt": {},
        "drawdown_pct": {},
        "stop_outs": {},
        "failed_order_rate": {},
    },
    "protections": None,
    "concentration": None,
    "allocation": None,
}
SETTINGS = {"risk_layer_policy": RISK, "exchange_args": ["--extra-symbols", str(len(SYMBOLS))]}
ESS_STREAM = "quantum:stream:ess.state.changed"


async def until(check: Callable[[], Awaitable[object]], what: str, timeout: float = 90) -> object:
    async with asyncio.timeout(timeout):
        while True:
            if found := await check():
                return found
            await asyncio.sleep(0.2)
    raise AssertionError(what)  # pragma: no cover - the timeout raises first


async def portfolio(stack: Stack) -> PortfolioView:
    handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    return await handle.query("state", result_type=PortfolioView)


async def ess_state(stack: Stack) -> EmergencyState:
    view = await portfolio(stack)
    assert view.risk_state is not None
    return view.risk_state.ess.state


async def start(stack: Stack, wid: str, symbol: str) -> WorkflowHandle:
    return await stack.client.start_workflow(
        "PositionWorkflow",
        PositionInput(symbol=symbol, side=Side.LONG, notional_usdt=D(100), intent_id=wid, options=QUIET),
        id=wid,
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=PositionResult,
    )


async def settled(handle: WorkflowHandle) -> PositionView:
    """The position's view once it is past deciding and entering."""

    async def view() -> PositionView | None:
        v = await handle.query("state", result_type=PositionView)
        busy = (PositionStatus.VALIDATING, PositionStatus.GOVERNING, PositionStatus.ENTERING)
        return None if v.status in busy else v

    return await until(view, f"{handle.id} never settled")  # type: ignore[return-value]


async def close_at_a_loss(stack: Stack, handle: WorkflowHandle, symbol: str) -> PositionResult:
    stack.exchange.set_price(symbol, "98")
    await handle.execute_update("close", ClosePositionRequest(reason="operator"))
    result = await handle.result()
    assert result.realized_pnl < 0, result
    return result


async def moved_to(stack: Stack, state: EmergencyState) -> None:
    async def there() -> bool:
        return await ess_state(stack) is state

    await until(there, f"the emergency stop never reached {state.value}")


async def stream(stack: Stack) -> list[dict[str, str]]:
    entries = await stack.redis.xrange(ESS_STREAM)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


@pytest.mark.parametrize("stack", [SETTINGS], indirect=True)
async def test_a_losing_streak_warns_refuses_and_halts_and_only_an_operator_resumes(
    stack: Stack, tmp_path: Path
) -> None:
    for sym in SYMBOLS:
        stack.exchange.set_price(sym, "100")
    a, b, c, d, e, f = SYMBOLS
    async with stack.workers(holder_check_seconds=1):
        pos = {s: await start(stack, f"risk-{s}", s) for s in (a, b, c)}
        for h in pos.values():
            assert (await settled(h)).status is PositionStatus.OPEN
        assert await ess_state(stack) is ES.NORMAL

        await close_at_a_loss(stack, pos[a], a)  # 1 loss: WARNING, sizes cut ×0.5
        await moved_to(stack, ES.WARNING)
        pos[d] = await start(stack, f"risk-{d}", d)
        opened = await settled(pos[d])
        assert opened.status is PositionStatus.OPEN
        grant = next(x for x in (await portfolio(stack)).last_decisions if x.holder_id == f"risk-{d}")
        assert grant.decision == "granted" and grant.notional_usdt == D(50), grant

        await close_at_a_loss(stack, pos[b], b)  # 2 losses: CRITICAL, entries refused
        await moved_to(stack, ES.CRITICAL)
        refused = await settled(await start(stack, f"risk-{e}", e))
        assert refused.status is PositionStatus.REJECTED
        denial = next(x for x in (await portfolio(stack)).last_decisions if x.holder_id == f"risk-{e}")
        assert denial.decision == "denied" and denial.gate is Gate.EMERGENCY
        assert "losing" in denial.reason, denial.reason

        await close_at_a_loss(stack, pos[d], d)  # 3 losses: HALTED, every holder flattened
        await moved_to(stack, ES.HALTED)
        flattened = await pos[c].result()
        assert flattened.status is PositionStatus.CLOSED, flattened
        assert flattened.exit_reason == "emergency_flatten", flattened.exit_reason

    moves = await until(lambda: _moves_on_stream(stack, 3), "three moves never reached the stream")

    assert [(m["from"], m["to"], m["rule"]) for m in moves] == [  # type: ignore[union-attr]
        ("NORMAL", "WARNING", "losing_streak"),
        ("WARNING", "CRITICAL", "losing_streak"),
        ("CRITICAL", "HALTED", "losing_streak"),
    ]

    # Every worker restarted (the portfolio's cache gone with them): the stop is still HALTED and refuses.
    async with stack.workers(holder_check_seconds=1):
        assert await ess_state(stack) is ES.HALTED
        view = await portfolio(stack)
        assert [m.transition.to_state for m in view.ess_moves] == [ES.WARNING, ES.CRITICAL, ES.HALTED]
        details = await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
        assert "Emergency stop: HALTED" in details.current_details, details.current_details

        async def projected_halt() -> bool:  # the projection writes at most every 2 s
            projected = await stack.redis.hgetall("quantum:portfolio:state")
            return projected.get(b"emergency") == b"HALTED" and b"3 losing" in projected.get(b"reason", b"")

        await until(projected_halt, "the portfolio's projection never showed the halt and its reason")
        assert (await settled(await start(stack, f"risk-{f}", f))).status is PositionStatus.REJECTED
        handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        with pytest.raises(WorkflowUpdateFailedError):  # a move without its reason is refused, whole
            await handle.execute_update("set_ess", {"to": "NORMAL"})
        assert await ess_state(stack) is ES.HALTED
        resume = {"to": "NORMAL", "reason": "losses reviewed", "operator": "ana"}
        await handle.execute_update("set_ess", resume)
        assert await ess_state(stack) is ES.NORMAL
        again = await settled(await start(stack, f"risk-{f}-2", f))
        assert again.status is PositionStatus.OPEN
    resumed = await until(lambda: _moves_on_stream(stack, 4), "the operator's move never reached the stream")
    # The portfolio's history replays (also with each task a task late); kept as a committed history.
    history = await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).fetch_history()
    assert not await replay_all([history], tmp_path / "not-replaying")
    assert not await replay_one_task_late([history])
    if os.environ.get("RECORD_HISTORIES"):
        (HISTORIES / "portfolio-risk-layer.json").write_text(history.to_json())
    last = resumed[-1]  # type: ignore[index]
    assert (last["from"], last["to"], last["cause"]) == ("HALTED", "NORMAL", "operator")
    assert last["operator"] == "ana" and "losses reviewed" in last["reason"], last


async def _moves_on_stream(stack: Stack, n: int) -> list[dict[str, str]] | None:
    moves = await stream(stack)
    assert len(moves) <= n, moves  # each move once, however often its publication was tried
    return moves if len(moves) == n else None


def closed_trade(trade_id: str, pnl: str) -> dict:
    trade = ClosedTrade(
        trade_id=trade_id,
        symbol=SYMBOLS[0],
        side=Side.LONG,
        strategy="manual",
        source="manual",
        quantity=D(1),
        entry_price=D(100),
        exit_price=D(99),
        opened_at_ms=1,
        closed_at_ms=2,
        realized_pnl=D(pnl),
        gross_pnl=D(pnl),
        fees=D(0),
        exit_reason="manual",
    )
    return ClosedTradeEvent(trade=trade).model_dump(mode="json")


@pytest.mark.parametrize("stack", [{}], indirect=True)
async def test_the_risk_policy_is_validated_and_each_trade_counts_once(stack: Stack) -> None:
    handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    async with stack.workers(lifecycle=True, exchange=False):
        await start_portfolio(stack.client, RiskPolicy.from_settings(stack.settings), 1)
        await until(lambda: _running(stack), "no portfolio")
        view = await portfolio(stack)
        assert view.risk is None and view.risk_state is None  # unset: the governor's gates alone
        with pytest.raises(WorkflowUpdateFailedError) as bad:
            await handle.execute_update("set_ess", {"to": "HALTED", "reason": "drill"})
        assert "off" in str(bad.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as bad:
            await handle.execute_update("set_risk_policy", {"emergency": {"losing_streak": {"warnin": 1}}})
        assert "warnin" in str(bad.value.cause)
        assert (await portfolio(stack)).risk is None  # nothing half-applied

        await handle.execute_update("set_risk_policy", RISK)
        await handle.signal("risk_event", {"kind": "closed_trade", "trade": {"trade_id": "x"}})  # dropped
        await handle.signal("risk_event", closed_trade("t-1", "-3"))
        await handle.signal("risk_event", closed_trade("t-1", "-3"))  # the journal activity retried
        await moved_to(stack, ES.WARNING)
        view = await portfolio(stack)
        assert view.risk_state is not None and view.risk_state.ess.losing_streak == 1
        await handle.signal("risk_event", closed_trade("t-2", "-3"))
        await moved_to(stack, ES.CRITICAL)

        await handle.execute_update("set_risk_policy", None)  # off: the state is kept, entries follow it
        view = await portfolio(stack)
        assert view.risk is None and view.book.emergency is ES.CRITICAL


async def _running(stack: Stack) -> bool:
    try:
        await portfolio(stack)
    except Exception:
        return False
    return True


CLUSTERED = SYMBOLS[:5]  # five symbols that move together
LONER = SYMBOLS[5]
CONCENTRATION = {
    "emergency": None,
    "protections": None,
    "allocation": None,
    "concentration": {"max_symbol_share": "0.25", "max_cluster_share": "0.5"},
}


async def store_bars(stack: Stack, n: int = 120) -> None:
    """`n` hourly bars: the five clustered symbols follow one random walk (plus a little noise of their
    own), the loner its own."""
    rng = random.Random(7)
    t0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS
    price = dict.fromkeys(SYMBOLS, 100.0)
    bars = []
    for i in range(n):
        common = rng.gauss(0, 0.01)
        for s in SYMBOLS:
            move = (common + rng.gauss(0, 0.001)) if s in CLUSTERED else rng.gauss(0, 0.01)
            o, price[s] = price[s], price[s] * (1 + move)
            hi, lo = max(o, price[s]), min(o, price[s])
            bars.append(Bar(s, "1h", t0 + i * HOUR_MS, o, hi, lo, price[s], 10.0, 10.0 * price[s]))
    await BarStore(stack.redis).write(bars, "test", stream=False)


@pytest.mark.parametrize(
    "stack",
    [{**SETTINGS, "risk_layer_policy": CONCENTRATION, "gov_max_total_notional_usdt": 400}],
    indirect=True,
)
async def test_correlated_symbols_are_granted_up_to_their_cluster_limit(stack: Stack) -> None:
    for sym in SYMBOLS:
        stack.exchange.set_price(sym, "100")
    await store_bars(stack)
    async with stack.workers():
        await start_portfolio(
            stack.client, RiskPolicy.from_settings(stack.settings), 30, risk=stack.settings.risk_layer_policy
        )
        inputs = await stack.client.execute_workflow(
            "MarketInputsWorkflow",
            MarketInputsRequest(interval="1h", window_bars=120),
            id="market-inputs-test",
            task_queue=LIFECYCLE_TASK_QUEUE,
            result_type=MarketInputs,
        )
        assert inputs.clusters is not None and tuple(CLUSTERED) in inputs.clusters.groups, inputs
        view = await portfolio(stack)
        assert view.risk_state is not None and view.risk_state.clusters == inputs.clusters

        # 100 USDT each; a cluster may hold 0.5 × 400 = 200 USDT net: two of the five, then no more.
        outcomes = {}
        for s in [*CLUSTERED, LONER]:
            outcomes[s] = (await settled(await start(stack, f"corr-{s}", s))).status
        assert [outcomes[s] for s in CLUSTERED] == [PositionStatus.OPEN] * 2 + [PositionStatus.REJECTED] * 3
        assert outcomes[LONER] is PositionStatus.OPEN  # its own cluster
        denials = [d for d in (await portfolio(stack)).last_decisions if d.decision == "denied"]
        assert {d.holder_id for d in denials} == {f"corr-{s}" for s in CLUSTERED[2:]}
        for d in denials:
            assert d.gate is Gate.CLUSTER_CONCENTRATION, d
            assert all(s in d.reason for s in CLUSTERED) and "200" in d.reason, d.reason

        with pytest.raises(WorkflowUpdateFailedError) as stale:  # an older refresh never undoes a newer one
            older = inputs.model_copy(update={"at_ms": inputs.at_ms - 1}).model_dump(mode="json")
            await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).execute_update(
                "set_market_inputs", older
            )
        assert "older" in str(stale.value.cause)


REVIEWED = {
    **RISK,
    "concentration": {"max_symbol_share": None, "max_cluster_share": None, "max_entries_per_window": 8},
}


@pytest.mark.parametrize("stack", [{**SETTINGS, "risk_layer_policy": REVIEWED}], indirect=True)
async def test_a_policy_review_changes_the_policy_only_when_approved(stack: Stack, tmp_path: Path) -> None:
    portfolio_handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)

    async def policy() -> RiskLayerPolicy:
        view = await portfolio(stack)
        assert view.risk is not None
        return view.risk

    async def review(wid: str) -> tuple[WorkflowHandle, Proposal]:
        handle = await stack.client.start_workflow(
            "PolicyReviewWorkflow",
            PolicyReviewInput(window_hours=1, approval_hours=1),
            id=wid,
            task_queue=LIFECYCLE_TASK_QUEUE,
            result_type=PolicyReviewResult,
        )

        async def proposed() -> Proposal | None:
            return await handle.query("proposal", result_type=Proposal | None)  # type: ignore[arg-type]

        return handle, await until(proposed, f"{wid} proposed nothing")  # type: ignore[return-value]

    async with stack.workers(lifecycle=True, exchange=False):
        await start_portfolio(
            stack.client, RiskPolicy.from_settings(stack.settings), 30, risk=stack.settings.risk_layer_policy
        )
        await until(lambda: _running(stack), "no portfolio")
        for k in range(2):  # two losing trades: the stop goes to CRITICAL
            await portfolio_handle.signal("risk_event", closed_trade(f"t-{k}", "-3"))
        await moved_to(stack, ES.CRITICAL)

        # Approved: the proposal (sizes under WARNING halved again, half the entries per window) is applied.
        first, proposal = await review("review-1")
        assert [(c.name, c.old, c.new) for c in proposal.changes] == [
            ("emergency.warning_size_factor", D("0.5"), D("0.25")),
            ("concentration.max_entries_per_window", 8, 4),
        ]
        assert "CRITICAL" in proposal.summary
        with pytest.raises(WorkflowUpdateFailedError):  # a verdict must say who gives it
            await first.execute_update("verdict", {"approve": True})
        await first.execute_update("verdict", {"approve": True, "operator": "ana", "reason": "agreed"})
        with pytest.raises(WorkflowUpdateFailedError):  # and is given once
            await first.execute_update("verdict", {"approve": False, "operator": "bo"})
        assert (await first.result()).outcome == "applied"
        tightened = await policy()
        assert tightened.emergency is not None and tightened.emergency.warning_size_factor == D("0.25")
        assert tightened.concentration is not None and tightened.concentration.max_entries_per_window == 4

        # Rejected: nothing changes.
        second, proposal = await review("review-2")
        assert [c.new for c in proposal.changes] == [D("0.125"), 2]
        await second.execute_update("verdict", {"approve": False, "operator": "ana", "reason": "enough"})
        assert (await second.result()).outcome == "rejected"
        assert await policy() == tightened

        # Approved after an operator edited the policy: stale, nothing of it applied.
        third, proposal = await review("review-3")
        await portfolio_handle.execute_update(
            "set_risk_policy",
            {
                **tightened.model_dump(mode="json"),
                "emergency": {**REVIEWED["emergency"], "warning_size_factor": "0.3"},
            },
        )
        edited = await policy()
        await third.execute_update("verdict", {"approve": True, "operator": "ana"})
        result = await third.result()
        assert result.outcome == "stale" and "warning_size_factor is 0.3" in result.detail, result
        assert await policy() == edited

    # Each review's history, and the portfolio's, replays; the applied one is kept as a committed history.
    histories = [
        await stack.client.get_workflow_handle(w).fetch_history()
        for w in ("review-1", "review-2", "review-3")
    ]
    assert not await replay_all(
        [*histories, await portfolio_handle.fetch_history()], tmp_path / "not-replaying"
    )
    if os.environ.get("RECORD_HISTORIES"):
        (HISTORIES / "policy-review-applied.json").write_text(histories[0].to_json())


SIZED = {
    "emergency": None,
    "protections": None,
    "concentration": None,
    "allocation": None,
    "balance": {"max_trade_exposure": "0.01"},
}


@pytest.mark.parametrize("stack", [{**SETTINGS, "risk_layer_policy": SIZED}], indirect=True)
async def test_a_deposit_or_withdrawal_moves_the_sizing_within_one_user_data_event(stack: Stack) -> None:
    handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    asked = 0

    async def granted(notional: str) -> Decimal:
        nonlocal asked
        asked += 1
        holder = f"sized-{asked}"
        req = ReservationRequest(
            holder_id=holder, symbol=SYMBOLS[0], side=Side.LONG, notional_usdt=D(notional)
        )
        await handle.signal("request_reservation", req)

        async def decision() -> object:
            return next((d for d in (await portfolio(stack)).last_decisions if d.holder_id == holder), None)

        d = await until(decision, f"{holder} was never decided")
        assert d.decision == "granted", d  # type: ignore[attr-defined]
        return d.notional_usdt  # type: ignore[attr-defined]

    async def equity_is(value: str) -> None:
        async def there() -> bool:
            balance = (await portfolio(stack)).risk_state.balance  # type: ignore[union-attr]
            return balance is not None and balance.equity == D(value)

        await until(there, f"the portfolio never saw equity {value}")

    async with stack.workers(lifecycle=True, exchange=False):
        await start_portfolio(
            stack.client, RiskPolicy.from_settings(stack.settings), 30, risk=stack.settings.risk_layer_policy
        )
        stack.start_worker_process("user-stream")
        await equity_is("10000")  # the first reading, at start
        assert await granted("150") == D(100)  # 1 % of 10,000 USDT of equity

        stack.exchange.transfer("10000")  # a deposit: one ACCOUNT_UPDATE (DEPOSIT) on the user stream
        await equity_is("20000")
        assert await granted("150") == D(150)

        stack.exchange.transfer("-15000")  # a withdrawal
        await equity_is("5000")
        assert await granted("150") == D(50)

    readings = [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in await stack.redis.xrange("quantum:stream:account.balance")
    ]
    assert {"DEPOSIT", "WITHDRAW"} <= {r["reason"] for r in readings}, readings
    assert any(r["reason"] == "DEPOSIT" and D(r["equity"]) == 20000 for r in readings), readings


@pytest.mark.parametrize("stack", [{}], indirect=True)
async def test_allocation_caps_are_projected_per_symbol(stack: Stack) -> None:
    handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    a, b = SYMBOLS[:2]

    async def projected(symbol: str) -> dict[str, str]:
        raw = await stack.redis.hgetall(f"quantum:capital:allocation:{symbol}")
        return {k.decode(): v.decode() for k, v in raw.items()}

    async with stack.workers(lifecycle=True, exchange=False):
        await start_portfolio(
            stack.client, RiskPolicy.from_settings(stack.settings), 30, risk=RiskLayerPolicy()
        )
        await until(lambda: _running(stack), "no portfolio")
        first = MarketInputs(at_ms=5, allocation={a: D(300), b: D(200)})
        await handle.execute_update("set_market_inputs", first.model_dump(mode="json"))

        async def both() -> bool:
            return (
                await projected(a) == {"cap_usdt": "300", "computed_at": "5"}
                and (await projected(b))["cap_usdt"] == "200"
            )

        await until(both, "the caps were never projected")
        later = MarketInputs(at_ms=6, allocation={b: D(250)})
        await handle.execute_update("set_market_inputs", later.model_dump(mode="json"))

        async def moved() -> bool:
            return await projected(a) == {} and await projected(b) == {"cap_usdt": "250", "computed_at": "6"}

        await until(moved, "a symbol no longer capped kept its cap")


@pytest.mark.parametrize("stack", [{**SETTINGS, "risk_layer_policy": RISK}], indirect=True)
async def test_a_fresh_portfolio_takes_over_the_kill_switch_the_stop_and_the_policy(
    stack: Stack, tmp_path: Path
) -> None:
    """The singleton terminated (or failed) and started again by the next worker or position: it must not
    come back with the kill switch off, the stop NORMAL and the settings' policy instead of the operator's."""
    handle = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
    async with stack.workers(lifecycle=True, exchange=False):
        policy = RiskPolicy.from_settings(stack.settings)
        await start_portfolio(stack.client, policy, 30, risk=stack.settings.risk_layer_policy)
        await until(lambda: _running(stack), "no portfolio")
        await handle.execute_update("set_kill_switch", {"on": True, "reason": "drill"})
        await handle.execute_update("set_policy", {"max_open_positions": 4})
        await handle.execute_update("set_ess", {"to": "CRITICAL", "reason": "drill", "operator": "ana"})
        first = (await handle.describe()).run_id
        await handle.terminate("the singleton is gone")

        await start_portfolio(
            stack.client, policy, 30, risk=stack.settings.risk_layer_policy
        )  # as a worker does

        async def fresh() -> PortfolioView | None:
            if (await handle.describe()).run_id == first:
                return None
            view = await portfolio(stack)
            return view if view.risk_state is not None and view.risk_state.ess.state is ES.CRITICAL else None

        view = await until(fresh, "the fresh portfolio never took over the stop")
        assert view.policy.kill_switch and view.policy.max_open_positions == 4  # type: ignore[union-attr]
        assert view.book.emergency is ES.CRITICAL and view.risk == stack.settings.risk_layer_policy  # type: ignore[union-attr]
        assert [m.transition.to_state for m in view.ess_moves] == [ES.CRITICAL]  # type: ignore[union-attr]
        history = await handle.fetch_history()
    assert not await replay_all([history], tmp_path / "not-replaying")
    if os.environ.get("RECORD_HISTORIES"):
        (HISTORIES / "portfolio-fresh-takes-over.json").write_text(history.to_json())


VENUE = {
    "emergency": {
        "losing_streak": {},
        "daily_loss_usdt": {},
        "drawdown_pct": {},
        "stop_outs": {},
        "failed_order_rate": {},
        "cool_off_seconds": 0,
        "recovery_requires_new_high": False,
    },
    "protections": None,
    "concentration": None,
    "allocation": None,
}


@pytest.mark.parametrize("stack", [{**SETTINGS, "risk_layer_policy": VENUE}], indirect=True)
async def test_an_ip_ban_seen_by_the_exchange_worker_moves_the_stop_and_its_end_lets_it_recover(
    stack: Stack,
) -> None:
    stack.exchange.set_price(SYMBOLS[0], "100")
    async with stack.workers(exchange=False, holder_check_seconds=1):
        await start_portfolio(
            stack.client, RiskPolicy.from_settings(stack.settings), 1, risk=stack.settings.risk_layer_policy
        )
        await until(lambda: _running(stack), "no portfolio")
        stack.start_worker_process("exchange")  # reports order outcomes and bans (activities/risk_reports.py)
        stack.exchange.set_faults(ban_at={"path": "/fapi/v1/order", "seconds": 3})
        refused = await settled(await start(stack, "banned-entry", SYMBOLS[0]))
        assert refused.status is PositionStatus.REJECTED  # entries halt under a ban
        await moved_to(stack, ES.CRITICAL)
        await moved_to(stack, ES.NORMAL)  # the ban ended; no rule breached through the cool-off
        moves = [(m.transition.to_state, m.transition.rule) for m in (await portfolio(stack)).ess_moves]
        assert moves[0] == (ES.CRITICAL, "venue_ban") and moves[-1][0] is ES.NORMAL, moves


@pytest.mark.parametrize("stack", [{**SETTINGS, "risk_layer_policy": VENUE}], indirect=True)
async def test_a_venue_that_stops_answering_is_an_outage_for_the_stop_until_it_answers(stack: Stack) -> None:
    sym = SYMBOLS[1]
    stack.exchange.set_price(sym, "100")
    async with stack.workers(exchange=False, holder_check_seconds=1):
        await start_portfolio(
            stack.client, RiskPolicy.from_settings(stack.settings), 1, risk=stack.settings.risk_layer_policy
        )
        await until(lambda: _running(stack), "no portfolio")
        stack.start_worker_process("exchange")
        handle = await stack.client.start_workflow(
            "PositionWorkflow",
            PositionInput(
                symbol=sym,
                side=Side.LONG,
                notional_usdt=D(100),
                intent_id="watched",
                options=PositionOptions(mark_check_seconds=1, entry_deadline_seconds=3600),
            ),
            id="watched",
            task_queue=LIFECYCLE_TASK_QUEUE,
            result_type=PositionResult,
        )
        assert (await settled(handle)).status is PositionStatus.OPEN
        # Its mark reads every second go unanswered for 12 s: an outage after 5 s (venue_outage: WARNING).
        stack.exchange.set_faults(outage={"paths": ["/fapi/v1/premiumIndex"], "mode": "5xx", "seconds": 12})
        await moved_to(stack, ES.WARNING)
        await moved_to(stack, ES.NORMAL)  # it answers again; nothing breached through the cool-off
        moves = [(m.transition.to_state, m.transition.rule) for m in (await portfolio(stack)).ess_moves]
        assert moves[0] == (ES.WARNING, "venue_outage") and moves[-1][0] is ES.NORMAL, moves
        await handle.execute_update("close", ClosePositionRequest(reason="operator"))
        await handle.result()

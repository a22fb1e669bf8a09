"""The portfolio singleton survives its own faults (scenario 5) and keeps its flattens (scenario 4):

- a holder check that fails (visibility down) never fails the portfolio: it keeps its book and tries
  again at the next check;
- a FRESH portfolio (the old one failed or was terminated, and a position's signal-with-start began a
  new run) rebuilds its book from the running positions before it decides anything, so the limits
  still count every holder (the old system's audit found 17 open positions under a limit of 10);
- an emergency flatten asked right before a continue-as-new still reaches every holder, and a holder
  that could not act on it yet is told again until it lets its slot go.

Most tests run the portfolio on a worker of their own, with the activity that is to misbehave
replaced (the real ones elsewhere), and stand-in holders on another task queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from temporalio import activity, workflow
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.worker import Replayer, Worker

from activities.portfolio import PortfolioActivities
from tests.workflows.conftest import Stack
from tests.workflows.test_position_lifecycle import start_position, wait_status
from trading.governor import Denial, Gate, Grant, ReservationRequest, RiskPolicy
from trading.intents import Side, TradeIntent
from workflows.calls import DELIVER_DECISIONS, FIND_STOPPED_HOLDERS, PROJECT_PORTFOLIO, RUNNING_HOLDERS
from workflows.messages import (
    DEFAULT_PORTFOLIO_ID,
    LIFECYCLE_TASK_QUEUE,
    DecisionBatch,
    FlattenRequest,
    PortfolioInput,
    PortfolioView,
    PositionStatus,
    PositionView,
    ReleaseRequest,
)
from workflows.portfolio import PortfolioWorkflow

D = Decimal
PROBES = "portfolio-probes"
ROOMY = RiskPolicy(
    max_open_positions=40,
    allowlist=("*",),
    max_exec_per_hour=1000,
    max_exec_per_5min=1000,
    symbol_cooldown_seconds=0,
    max_total_notional_usdt=D(100000),
)


@workflow.defn(name="PortfolioProbe", sandboxed=False)
class PortfolioProbe:
    """Stands in for a position: takes the portfolio's decision and counts the flattens it hears.
    While `deaf` (a position still entering, on the old position code) it ignores a flatten."""

    def __init__(self) -> None:
        self.decision: Grant | Denial | None = None
        self.flattens = 0
        self.deaf = False

    @workflow.run
    async def run(self, deaf: bool) -> int:
        self.deaf = deaf
        await workflow.wait_condition(lambda: self.flattens > 0)
        return self.flattens

    @workflow.signal(name="reservation_decided")
    def reservation_decided(self, decision: Grant | Denial) -> None:
        self.decision = self.decision or decision

    @workflow.signal(name="emergency_flatten")
    def emergency_flatten(self, req: FlattenRequest) -> None:
        if not self.deaf:
            self.flattens += 1

    @workflow.signal(name="hear")
    def hear(self) -> None:
        self.deaf = False

    @workflow.query(name="decision")
    def get_decision(self) -> Grant | Denial | None:
        return self.decision


async def eventually(check: Callable[[], object], timeout: float = 15.0, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while True:
            ok = check()
            if asyncio.iscoroutine(ok):
                ok = await ok
            if ok:
                return
            await asyncio.sleep(0.2)


async def view(stack: Stack) -> PortfolioView:
    return await stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID).query(
        "state", result_type=PortfolioView
    )


async def start_probe(stack: Stack, wid: str, *, deaf: bool = False) -> WorkflowHandle:
    return await stack.client.start_workflow(PortfolioProbe.run, deaf, id=wid, task_queue=PROBES)


async def decision_of(probe: WorkflowHandle, timeout: float = 15.0) -> Grant | Denial:
    async with asyncio.timeout(timeout):
        while True:
            d = await probe.query("decision", result_type=Grant | Denial | None)
            if d is not None:
                return d
            await asyncio.sleep(0.1)


async def settled(position: WorkflowHandle, timeout: float = 30.0) -> PositionView:
    """The position's state once the portfolio's answer has played out (open, or not)."""
    async with asyncio.timeout(timeout):
        while True:
            v = await position.query("state", result_type=PositionView)
            if v.status not in (PositionStatus.VALIDATING, PositionStatus.GOVERNING, PositionStatus.ENTERING):
                return v
            await asyncio.sleep(0.2)


def request(holder: str, symbol: str, notional: str = "10") -> ReservationRequest:
    return ReservationRequest(holder_id=holder, symbol=symbol, side=Side.LONG, notional_usdt=D(notional))


@contextlib.asynccontextmanager
async def portfolio_worker(stack: Stack, **replaced: Callable) -> AsyncIterator[None]:
    """The portfolio on a worker of its own: the real portfolio activities except those `replaced`
    (by activity name), a projection that writes nothing, and a worker for the probes."""
    real = PortfolioActivities(stack.client, ROOMY, 1.0)

    @activity.defn(name=PROJECT_PORTFOLIO.name)
    async def project_nothing(view: PortfolioView) -> None:
        return None

    @activity.defn(name=RUNNING_HOLDERS.name)
    async def no_positions() -> list[dict]:
        return []

    by_name: dict[str, Callable] = {
        "deliver_decisions": real.deliver_decisions,
        "find_stopped_holders": real.find_stopped_holders,
        "project_portfolio": project_nothing,
        "running_holders": no_positions,
        "previous_portfolio_state": real.previous_portfolio_state,
        **replaced,
    }
    async with (
        Worker(
            stack.client,
            task_queue=LIFECYCLE_TASK_QUEUE,
            workflows=[PortfolioWorkflow],
            activities=list(by_name.values()),
        ),
        Worker(stack.client, task_queue=PROBES, workflows=[PortfolioProbe]),
    ):
        yield


async def assert_portfolio_replays(stack: Stack) -> None:
    """Every run of the portfolio replays against the current code (the new paths are deterministic)."""
    runs = [wf async for wf in stack.client.list_workflows(f"WorkflowId='{DEFAULT_PORTFOLIO_ID}'")]
    assert runs
    replayer = Replayer(workflows=[PortfolioWorkflow], data_converter=pydantic_data_converter)
    for wf in runs:
        history = await stack.client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        await replayer.replay_workflow(history)


# ---------------------------------------------------------------------------------------------- A (1)
async def test_a_failing_holder_check_never_fails_the_portfolio(stack: Stack) -> None:
    """Scenario 5's first half: `find_stopped_holders` fails all its attempts (visibility down). The
    portfolio must not fail (a failed singleton is restarted empty by the next signal-with-start): it
    keeps its book, goes on deciding, and frees the stopped holder once a later check gets through."""
    calls = 0
    failing = True
    real = PortfolioActivities(stack.client, ROOMY, 1.0)

    @activity.defn(name=FIND_STOPPED_HOLDERS.name)
    async def flaky_holder_check(holder_ids: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if failing:
            raise RuntimeError("visibility unavailable (drill)")
        return await real.find_stopped_holders(holder_ids)

    async with portfolio_worker(stack, find_stopped_holders=flaky_holder_check):
        await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=ROOMY, holder_check_seconds=1),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        kept, stopped = await start_probe(stack, "probe-kept"), await start_probe(stack, "probe-stopped")
        await portfolio.signal("request_reservation", request(kept.id, "BTCUSDT"))
        await portfolio.signal("request_reservation", request(stopped.id, "ETHUSDT"))
        assert isinstance(await decision_of(kept), Grant)
        assert isinstance(await decision_of(stopped), Grant)
        await stopped.terminate("gone without releasing")

        async def failed_a_check_or_portfolio_ended() -> bool:
            status = (await portfolio.describe()).status
            return calls >= 4 or status != WorkflowExecutionStatus.RUNNING

        # One check spends its 3 attempts; the 4th call is the next check.
        await eventually(failed_a_check_or_portfolio_ended, 30)
        assert (await portfolio.describe()).status == WorkflowExecutionStatus.RUNNING
        assert set((await view(stack)).book.reservations) == {kept.id, stopped.id}

        late = await start_probe(stack, "probe-late")
        await portfolio.signal("request_reservation", request(late.id, "SOLUSDT"))
        assert isinstance(await decision_of(late), Grant), "the portfolio stopped deciding"

        failing = False

        async def stopped_freed() -> bool:
            return set((await view(stack)).book.reservations) == {kept.id, late.id}

        await eventually(stopped_freed, 15)
        assert (await portfolio.describe()).status == WorkflowExecutionStatus.RUNNING
        await assert_portfolio_replays(stack)


# ---------------------------------------------------------------------------------------------- A (2)
def said(status: str, symbol: str, side: str, qty: str, entry: str) -> dict[str, str]:
    """What a position's `state` query says, as the rebuild reads it."""
    return {"status": status, "symbol": symbol, "side": side, "open_qty": qty, "entry_price": entry}


HELD = [
    ("held-open", said("OPEN", "BTCUSDT", "LONG", "0.002", "60000")),
    ("held-entering", said("ENTERING", "ETHUSDT", "SHORT", "0", "0")),
    ("held-governing", said("GOVERNING", "XRPUSDT", "LONG", "0", "0")),
    ("held-released", said("OPEN", "DOGEUSDT", "LONG", "500", "0.2")),
]


async def test_a_fresh_portfolio_decides_nothing_before_its_book_is_rebuilt(stack: Stack) -> None:
    """A fresh portfolio lists the running positions (slowly here). A request that arrives meanwhile
    waits and is then decided against the rebuilt book (limit 2: an OPEN and an ENTERING holder; one
    still GOVERNING holds nothing; one that released while the list was read is not brought back).
    A rebuilt holder that sends its request again gets its reservation, not a second one."""
    policy = ROOMY.model_copy(update={"max_open_positions": 2})
    listing = asyncio.Event()
    answer = asyncio.Event()

    @activity.defn(name=RUNNING_HOLDERS.name)
    async def slow_running_holders() -> list[dict]:
        listing.set()
        await answer.wait()
        return [{"holder_id": wid, **what} for wid, what in HELD]

    async with portfolio_worker(stack, running_holders=slow_running_holders):
        probes = {wid: await start_probe(stack, wid) for wid, _ in HELD}
        newcomer = await start_probe(stack, "newcomer")
        await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=policy, holder_check_seconds=3600),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        await portfolio.signal("request_reservation", request(newcomer.id, "SOLUSDT", "100"))
        await portfolio.signal("release_reservation", ReleaseRequest(holder_id="held-released"))
        with contextlib.suppress(TimeoutError):  # a portfolio that never lists decides on an empty book
            await asyncio.wait_for(listing.wait(), 5)
        await asyncio.sleep(1.0)  # the request is in: a portfolio that does not wait decides it now
        answer.set()
        decided = await decision_of(newcomer)
        assert isinstance(decided, Denial), decided
        assert decided.gate == Gate.MAX_OPEN_POSITIONS
        book = (await view(stack)).book
        assert set(book.reservations) == {"held-open", "held-entering"}
        # OPEN: its open notional; ENTERING (fill not known yet): the most one grant may be.
        assert book.reservations["held-open"].notional_usdt == D("120")
        assert book.reservations["held-entering"].notional_usdt == policy.max_notional_per_trade_usdt
        assert book.reservations["held-entering"].side == Side.SHORT

        # Idempotent: the holder asks again, gets its own reservation back, nothing is counted twice.
        await portfolio.signal("request_reservation", request("held-open", "BTCUSDT", "150"))
        again = await decision_of(probes["held-open"])
        assert isinstance(again, Grant) and again.notional_usdt == D("120")
        after = await view(stack)
        assert after.slots_used == 2 and after.notional_used == D("120") + policy.max_notional_per_trade_usdt
        await assert_portfolio_replays(stack)


@pytest.mark.parametrize("stack", [{"gov_max_open_positions": 2}], indirect=True)
async def test_a_terminated_portfolio_comes_back_with_every_holder_counted(stack: Stack) -> None:
    """Scenario 5 end to end: two positions hold the two slots, the portfolio is terminated, and a new
    intent's signal-with-start begins a fresh portfolio. It must count both holders (read from the
    running positions) and deny the newcomer; before the fix it started empty and granted it."""
    for sym, price in (("BTCUSDT", "60000"), ("ETHUSDT", "3000"), ("SOLUSDT", "150")):
        stack.exchange.set_price(sym, price)
    async with stack.workers(holder_check_seconds=2):
        btc = await start_position(stack, TradeIntent(symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(150)))
        eth = await start_position(
            stack, TradeIntent(symbol="ETHUSDT", side=Side.SHORT, notional_usdt=D(150))
        )
        held = [await wait_status(h, PositionStatus.OPEN) for h in (btc, eth)]
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        first_run = (await portfolio.describe()).run_id
        await portfolio.terminate("scenario 5: the singleton is gone")

        sol = await start_position(stack, TradeIntent(symbol="SOLUSDT", side=Side.LONG, notional_usdt=D(150)))
        decided = await settled(sol)
        assert decided.status == PositionStatus.REJECTED, decided  # before the fix: OPEN, a third position
        result = await asyncio.wait_for(sol.result(), 10)
        assert result.rejection_gate == Gate.MAX_OPEN_POSITIONS

        fresh = await view(stack)
        assert (await portfolio.describe()).run_id != first_run
        assert set(fresh.book.reservations) == {btc.id, eth.id}
        assert fresh.notional_used == sum((v.open_qty * v.entry_price for v in held), D(0))

        # A rebuilt reservation is released like any other.
        await btc.execute_update("close", {"reason": "manual"})
        await asyncio.wait_for(btc.result(), 20)

        async def btc_released() -> bool:
            return set((await view(stack)).book.reservations) == {eth.id}

        await eventually(btc_released, 15)
        eth_view = await eth.query("state", result_type=PositionView)
        assert eth_view.status == PositionStatus.OPEN
        await assert_portfolio_replays(stack)


# ---------------------------------------------------------------------------------------------- B
async def pump_until_handing_over(portfolio: WorkflowHandle, delivered: set[str], run_id: str | None) -> None:
    """Grow the portfolio's history (requests from holders that do not exist: granted, then freed as
    gone) until it stops deciding: past `max_history_events`, it waits for a held delivery before it
    continues as new."""
    for i in range(80):
        pump = f"pump-{i}"
        await portfolio.signal("request_reservation", request(pump, f"P{i}USDT"))
        try:
            await eventually(lambda p=pump: p in delivered, 3)
        except TimeoutError:
            break
    else:
        pytest.fail("the portfolio never came to continue as new")
    desc = await portfolio.describe()
    assert desc.history_length > 100 and desc.run_id == run_id


async def test_b_flatten_asked_right_before_continue_as_new_reaches_every_holder(stack: Stack) -> None:
    """Scenario 4, portfolio side: the portfolio is about to continue as new (history past its limit,
    waiting for one delivery to finish) when an emergency flatten is asked. The flatten must survive
    the continue-as-new and reach every holder of that moment, the one whose grant is still on its way
    (a position still entering) included. Before the fix the new run never heard of it."""
    late_id = "probe-grant-in-flight"
    hold_delivery = asyncio.Event()
    delivery_held = asyncio.Event()
    delivered: set[str] = set()
    real = PortfolioActivities(stack.client, ROOMY, 1.0)

    @activity.defn(name=DELIVER_DECISIONS.name)
    async def held_delivery(batch: DecisionBatch) -> list[str]:
        if any(d.holder_id == late_id for d in batch.decisions):
            delivery_held.set()
            await asyncio.wait_for(hold_delivery.wait(), 25)
        gone = await real.deliver_decisions(batch)
        delivered.update(d.holder_id for d in batch.decisions)
        return gone

    async with portfolio_worker(stack, deliver_decisions=held_delivery):
        first = await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=ROOMY, holder_check_seconds=3600, max_history_events=100),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        probes = [await start_probe(stack, f"probe-{i}") for i in range(3)]
        for i, p in enumerate(probes):
            await portfolio.signal("request_reservation", request(p.id, f"S{i}USDT"))
        for p in probes:
            assert isinstance(await decision_of(p), Grant)
        late = await start_probe(stack, late_id)
        await portfolio.signal("request_reservation", request(late_id, "LATEUSDT"))
        await asyncio.wait_for(delivery_held.wait(), 10)

        try:
            await pump_until_handing_over(portfolio, delivered, first.result_run_id)
            told = await portfolio.execute_update(
                "emergency_flatten", FlattenRequest(reason="drill"), result_type=list[str]
            )
            assert {p.id for p in probes} | {late_id} <= set(told)
        finally:
            hold_delivery.set()
        heard = await asyncio.wait_for(asyncio.gather(*(p.result() for p in [*probes, late])), 20)
        assert all(n >= 1 for n in heard)
        assert (await portfolio.describe()).run_id != first.result_run_id, "no continue-as-new happened"
        await assert_portfolio_replays(stack)


async def test_b_a_holder_that_could_not_act_on_a_flatten_is_told_again(stack: Stack) -> None:
    """A holder that held its slot when the flatten was asked but could not act on it yet (a position
    still ENTERING, on position code that ignores a flatten there) is told again at the next holder
    checks until it lets its slot go: one signal was all it ever got before."""
    async with portfolio_worker(stack):
        await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=ROOMY, holder_check_seconds=1),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        entering = await start_probe(stack, "probe-entering", deaf=True)
        await portfolio.signal("request_reservation", request(entering.id, "BTCUSDT"))
        assert isinstance(await decision_of(entering), Grant)
        told = await portfolio.execute_update(
            "emergency_flatten", FlattenRequest(reason="drill"), result_type=list[str]
        )
        assert told == [entering.id]
        await asyncio.sleep(1.5)  # the first telling has come and gone unheard
        await entering.signal("hear")  # now it is open and listens
        assert await asyncio.wait_for(entering.result(), 10) >= 1

        async def released() -> bool:  # it stopped: the holder check frees its slot, the telling ends
            return (await view(stack)).slots_used == 0

        await eventually(released, 10)
        await assert_portfolio_replays(stack)


async def test_a_a_delivery_that_fails_at_the_hand_over_never_fails_the_portfolio(stack: Stack) -> None:
    """Scenario 5 through a delivery: the portfolio waits for its deliveries before it continues as new,
    and one of them fails for good. Before the fix that failure failed the singleton there (and the next
    signal-with-start began an empty one); now it is logged and counted, and the book goes on."""
    doomed = "probe-undeliverable"
    release_failure = asyncio.Event()
    delivery_held = asyncio.Event()
    delivered: set[str] = set()
    real = PortfolioActivities(stack.client, ROOMY, 1.0)

    @activity.defn(name=DELIVER_DECISIONS.name)
    async def failing_delivery(batch: DecisionBatch) -> list[str]:
        if any(d.holder_id == doomed for d in batch.decisions):
            delivery_held.set()
            await asyncio.wait_for(release_failure.wait(), 25)
            raise ApplicationError("the holders cannot be told (drill)", non_retryable=True)
        gone = await real.deliver_decisions(batch)
        delivered.update(d.holder_id for d in batch.decisions)
        return gone

    async with portfolio_worker(stack, deliver_decisions=failing_delivery):
        first = await stack.client.start_workflow(
            "PortfolioWorkflow",
            PortfolioInput(policy=ROOMY, holder_check_seconds=3600, max_history_events=100),
            id=DEFAULT_PORTFOLIO_ID,
            task_queue=LIFECYCLE_TASK_QUEUE,
        )
        portfolio = stack.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        kept = await start_probe(stack, "probe-kept")
        await portfolio.signal("request_reservation", request(kept.id, "BTCUSDT"))
        assert isinstance(await decision_of(kept), Grant)
        await portfolio.signal("request_reservation", request(doomed, "ETHUSDT"))
        await asyncio.wait_for(delivery_held.wait(), 10)
        try:
            await pump_until_handing_over(portfolio, delivered, first.result_run_id)
        finally:
            release_failure.set()

        async def handed_over_or_ended() -> bool:
            desc = await portfolio.describe()
            return desc.run_id != first.result_run_id or desc.status != WorkflowExecutionStatus.RUNNING

        await eventually(handed_over_or_ended, 15)
        desc = await portfolio.describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING, "the failed delivery failed the portfolio"
        assert desc.run_id != first.result_run_id
        assert {kept.id, doomed} <= set((await view(stack)).book.reservations)
        await assert_portfolio_replays(stack)

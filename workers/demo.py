"""`qtrader demo`: a paper round trip through the Binance client, then one through a position workflow."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from pydantic import SecretStr

from exchange.client import BinanceFuturesClient
from trading.config import Settings
from trading.intents import Side
from workers.stack import paper_keys
from workflows.messages import (
    LIFECYCLE_TASK_QUEUE,
    PositionInput,
    PositionResult,
    PositionStatus,
    PositionView,
)


def _paper_settings(settings: Settings) -> Settings:
    """Paper mode without keys in the environment uses the pair `stack up` generated."""
    if settings.binance_api_key and settings.binance_api_secret:
        return settings
    key, secret = paper_keys(settings)
    return settings.model_copy(
        update={"binance_api_key": SecretStr(key), "binance_api_secret": SecretStr(secret)}
    )


async def client_round_trip(settings: Settings, symbol: str, notional: Decimal) -> None:
    async with BinanceFuturesClient.from_settings(settings) as client:
        await client.sync_time()
        rules = await client.rules_for(symbol)
        mark = (await client.premium_index(symbol)).mark_price
        qty = rules.round_qty(max(notional, rules.min_notional * Decimal("1.05")) / mark, market=True)
        qty = max(qty, rules.market_min_qty * 2)
        print(f"\n== client round trip on {symbol}: mark {mark}, quantity {qty}")
        await client.set_leverage(symbol, 5)
        tag = str(int(time.time()))
        entry = await client.new_order(symbol, "BUY", "MARKET", qty, client_order_id=f"demo-{tag}-open")
        print(f"opened   {entry.executed_qty} @ {entry.avg_price} ({entry.status})")
        stop = await client.new_algo_order(
            symbol,
            "SELL",
            "STOP_MARKET",
            rules.round_price(mark * Decimal("0.97")),
            close_position=True,
            client_algo_id=f"demo-{tag}-stop",
        )
        print(f"stop     STOP_MARKET close-position at {stop.trigger_price} ({stop.algo_status})")
        position = next(p for p in await client.position_risk(symbol) if p.position_amt != 0)
        print(
            f"position {position.position_amt} @ {position.entry_price}, uPnL {position.un_realized_profit}"
        )
        half = rules.round_qty(qty / 2, market=True)
        reduce = await client.new_order(
            symbol, "SELL", "MARKET", half, reduce_only=True, client_order_id=f"demo-{tag}-reduce"
        )
        print(f"reduced  {reduce.executed_qty} @ {reduce.avg_price}")
        close = await client.new_order(
            symbol, "SELL", "MARKET", qty - half, reduce_only=True, client_order_id=f"demo-{tag}-close"
        )
        print(f"closed   {close.executed_qty} @ {close.avg_price}")
        ids = {entry.order_id, reduce.order_id, close.order_id}
        trades = [t for t in await client.user_trades(symbol, limit=100) if t.order_id in ids]
        pnl = sum((t.realized_pnl for t in trades), Decimal(0))
        fees = sum((t.commission for t in trades), Decimal(0))
        print(f"realized PnL {pnl:.4f} USDT, fees {fees:.4f} USDT, net {pnl - fees:.4f} USDT")
        usdt = next(a for a in (await client.account()).assets if a.asset == "USDT")
        print(f"wallet   {usdt.wallet_balance} USDT")


async def workflow_round_trip(settings: Settings, symbol: str, notional: Decimal) -> int:
    from workers.temporal_client import connect

    client = await connect(settings)
    wf_id = f"position-{symbol}-demo-{int(time.time())}"
    print(f"\n== position workflow {wf_id}")
    handle = await client.start_workflow(
        "PositionWorkflow",
        PositionInput(symbol=symbol, side=Side.LONG, notional_usdt=notional, strategy="demo"),
        id=wf_id,
        task_queue=LIFECYCLE_TASK_QUEUE,
        result_type=PositionResult,
        static_summary=f"LONG {symbol} {notional} USDT (demo)",
    )
    async with asyncio.timeout(60):
        while True:
            view = await handle.query("state", result_type=PositionView)
            if view.status not in (
                PositionStatus.VALIDATING,
                PositionStatus.GOVERNING,
                PositionStatus.ENTERING,
            ):
                break
            await asyncio.sleep(0.2)
    print(
        f"state    {view.status.value} {view.open_qty} @ {view.entry_price}; "
        f"next trigger: {view.next_trigger}"
    )
    if view.status is PositionStatus.OPEN:
        await handle.execute_update("close", {"reason": "demo"})
    result = await asyncio.wait_for(handle.result(), 60)
    print(
        f"result   {result.status.value}: entry {result.entry_price} exit {result.exit_price:.2f} "
        f"net PnL {result.realized_pnl:.4f} USDT (fees {result.fees:.4f}) {result.rejection_reason or ''}"
    )
    ui = f"http://127.0.0.1:{settings.temporal_ui_port}/namespaces/{settings.temporal_namespace}/workflows/{wf_id}"
    print(f"see it   {ui}")
    return 0 if result.status in (PositionStatus.CLOSED, PositionStatus.REJECTED) else 1


async def paper_round_trip(settings: Settings, symbol: str = "BTCUSDT", notional: float = 200.0) -> int:
    settings = _paper_settings(settings)
    amount = Decimal(str(notional))
    await client_round_trip(settings, symbol, amount)
    code = await workflow_round_trip(settings, symbol, amount)
    print("\nThe stack keeps running: `qtrader stack status`, `qtrader stack down`.")
    return code

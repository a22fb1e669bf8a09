"""The market-inputs activities (task queue `trade-lifecycle`): compute correlation clusters and allocation
caps for the portfolio's risk layer from the stored bars (signals/bar_store.py) and the journal's trades,
and deliver them through the portfolio's validated update (workflows/market_inputs.py runs them)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import numpy as np
import redis.asyncio as aioredis
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from journal.store import Journal
from signals.bar_store import BarStore
from signals.data import timeframe_ms
from trading.allocation import realized_volatility
from trading.market_inputs import MarketInputs, market_inputs
from trading.records import ClosedTrade
from workflows import calls
from workflows.messages import DEFAULT_PORTFOLIO_ID, MarketInputsRequest, PortfolioView

log = logging.getLogger("qtrader.market_inputs")


class MarketInputActivities:
    def __init__(self, client: Client, redis: aioredis.Redis, journal: Journal | None, run_id: str) -> None:
        """`journal`/`run_id`: whose closed trades tilt the allocation (none: no tilt)."""
        self.client = client
        self.bars = BarStore(redis)
        self.journal = journal
        self.run_id = run_id

    @activity.defn(name=calls.COMPUTE_MARKET_INPUTS.name)
    async def compute_market_inputs(self, req: MarketInputsRequest) -> MarketInputs | None:
        """None when the portfolio's risk layer is off or no bars are stored yet."""
        handle = self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        view = await handle.query("state", result_type=PortfolioView)
        if view.risk is None:
            log.info("market inputs: the portfolio's risk layer is off; nothing computed")
            return None
        last = await self.bars.last_bars(req.interval)
        if not last:
            log.warning("market inputs: no %s bars stored yet", req.interval)
            return None
        vols: dict[str, float | None] = {}
        for symbol, newest in sorted(last.items()):
            close = (await self.bars.read(symbol, req.interval, newest, req.window_bars)).close
            r = (close[1:] / close[:-1] - 1.0).tolist() if close.shape[0] > 1 else []
            vols[symbol] = realized_volatility(r) if len(r) >= req.min_returns else None
        enough = sorted(s for s, v in vols.items() if v is not None)
        whole: dict[str, list[float]] = {}
        if len(enough) > 1:  # correlation on the bars all of them have, ending at the oldest newest bar
            aligned = await self.bars.read_aligned(
                enough, req.interval, min(last[s] for s in enough), req.window_bars
            )
            if aligned.close.shape[1] > req.min_returns:
                rets = aligned.close[:, 1:] / aligned.close[:, :-1] - 1.0
                whole = {
                    s: rets[k].tolist() for k, s in enumerate(aligned.symbols) if np.isfinite(rets[k]).all()
                }
        trades = await self._recent_trades(view) if view.risk.allocation is not None else {}
        at_ms = max(last.values()) + timeframe_ms(req.interval)  # the close of the newest bar
        inputs = market_inputs(whole, vols, view.risk, view.policy.max_total_notional_usdt, trades, at_ms)
        log.info(
            "market inputs: %d symbols, %d clustered over %d returns, clusters %s, caps %s",
            len(vols),
            len(whole),
            inputs.returns,
            None if inputs.clusters is None else [list(g) for g in inputs.clusters.groups if len(g) > 1],
            inputs.allocation,
        )
        return inputs

    async def _recent_trades(self, view: PortfolioView) -> dict[str, list[ClosedTrade]]:
        if self.journal is None or view.risk is None or view.risk.allocation is None:
            return {}
        keep = view.risk.allocation.tilt_lookback_trades
        records = await asyncio.to_thread(self.journal.trades, run_id=self.run_id)
        by_symbol: dict[str, list[ClosedTrade]] = defaultdict(list)
        for r in records:  # in closing order; a journal row is a ClosedTrade with where it ran
            by_symbol[r.symbol].append(r)
        return {s: ts[-keep:] for s, ts in by_symbol.items()}

    @activity.defn(name=calls.DELIVER_MARKET_INPUTS.name)
    async def deliver_market_inputs(self, inputs: MarketInputs) -> None:
        handle = self.client.get_workflow_handle(DEFAULT_PORTFOLIO_ID)
        try:
            await handle.execute_update("set_market_inputs", inputs.model_dump(mode="json"))
        except WorkflowUpdateFailedError as err:  # refused by its validator (e.g. older than held): final
            raise ApplicationError(
                f"portfolio refused the market inputs: {err.cause}", non_retryable=True
            ) from err

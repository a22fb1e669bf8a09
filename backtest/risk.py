"""The risk layer in the replay: the same pure functions the portfolio will call (`trading.risk`), fed
with what the backtest itself produces.

- the emergency stop sees every closed trade and an equity mark (start balance, realized cash flows and
  the open positions marked at the bar's open) at every trade close and before the entries of a bar;
- protections see the closed trades;
- correlation clusters (`correlation_clusters`) and allocation targets (`allocate`) are recomputed at
  every `refresh_hours` boundary, from the hourly returns of the closes before it (the last
  `correlation_window_hours`); a symbol with a missing price in the window is its own cluster, and one
  with fewer than `min_returns` returns gets no target; volatility is the sample standard deviation of
  those returns (`realized_volatility`'s figure), the tilt comes from the backtest's trades closed
  before the boundary;
- heat counts the book's entries.

The replay asks `retry_after` when a risk gate refused, to jump to when it could answer differently.
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal

import numpy as np

from backtest.config import BacktestConfig, BacktestRisk
from backtest.result import Trade
from signals.data import AlignedKlines, timeframe_ms
from trading.concentration import entry_times
from trading.emergency import EquityMark, OperatorCommand, Transition
from trading.governor import HOUR_MS, EmergencyState, Gate, PortfolioBook, ReservationRequest
from trading.market_inputs import market_inputs, wants_clusters, with_market_inputs
from trading.protections import symbol_lock
from trading.records import ClosedTrade
from trading.risk import (
    ClosedTradeEvent,
    RiskEvent,
    RiskState,
    RiskVerdict,
    assess,
    observe,
)

PARK = -1  # retry_after: wait until a position is released or the clusters and targets are refreshed
NEVER = -2  # retry_after: nothing in the backtest changes the answer
ESS_WAIT = -3  # retry_after: wait until the emergency stop allows entries again
_MARKET_GATES = frozenset({Gate.SYMBOL_CONCENTRATION, Gate.CLUSTER_CONCENTRATION, Gate.ALLOCATION})


def closed_trade(t: Trade) -> ClosedTrade:
    """The backtest's trade as the journal and the risk layer see a closed position."""
    return ClosedTrade(
        trade_id=f"backtest-{t.trade_no}",
        symbol=t.symbol,
        side=t.side,
        strategy=t.strategy,
        regime=None if t.regime == "unknown" else t.regime,
        model_version=t.model_version,
        source="backtest",
        quantity=t.qty,
        entry_price=t.entry_price,
        exit_price=t.exit_price,
        opened_at_ms=t.entry_time_ms,
        closed_at_ms=t.exit_time_ms,
        realized_pnl=t.pnl,
        gross_pnl=t.gross_pnl,
        fees=t.fees,
        funding=t.funding,
        exit_reason=t.exit_reason,
        exit_controller=t.exit_controller,
    )


class RiskTrack:
    """The replay's risk state and everything it learns, in time order."""

    def __init__(self, run: BacktestRisk, cfg: BacktestConfig, bars: AlignedKlines) -> None:
        self.run = run
        self.risk = run.policy
        self.cfg = cfg
        self.state = RiskState()
        self.timeline: list[Transition] = []
        self.symbols = bars.symbols
        self.times = bars.open_time_ms.tolist()
        self.close = bars.close
        self.step = max(1, HOUR_MS // timeframe_ms(bars.timeframe))  # bars per hourly return
        self.refresh_ms = run.refresh_hours * HOUR_MS
        self.epoch: int | None = None
        self.closed: dict[str, list[ClosedTrade]] = {}  # the latest trades, for the allocation's tilt
        self.wants_clusters = wants_clusters(self.risk)
        self.wants_market = self.wants_clusters or self.risk.allocation is not None
        self.wants_equity = self.risk.emergency is not None

    # ------------------------------------------------------------------ decisions
    def assess(self, book: PortfolioBook, req: ReservationRequest, now_ms: int) -> RiskVerdict:
        if self.wants_market:
            self.refresh(now_ms)
        return assess(book, self.cfg.policy, self.risk, self.state, req, now_ms)

    def retry_after(self, gate: Gate, symbol: str, book: PortfolioBook, now_ms: int) -> int:
        """When (ms) a refused entry should ask again, or PARK / NEVER / ESS_WAIT."""
        if gate is Gate.EMERGENCY:
            return ESS_WAIT
        if gate in _MARKET_GATES:
            return PARK
        if gate is Gate.SYMBOL_PROTECTION:
            assert self.risk.protections is not None
            lock = symbol_lock(symbol, self.state.trades.get(symbol, ()), self.risk.protections, now_ms)
            return lock.until_ms if lock is not None else now_ms + 1
        if gate is Gate.HEAT:
            conc = self.risk.concentration
            assert conc is not None and conc.max_entries_per_window is not None
            window = conc.heat_window_seconds * 1000
            recent = [t for t in entry_times(book) if 0 <= now_ms - t < window]
            return recent[len(recent) - conc.max_entries_per_window] + window
        return NEVER

    # ------------------------------------------------------------------ what happened
    def on_close(self, trade: Trade, equity: float) -> list[Transition]:
        closed = closed_trade(trade)
        if self.risk.allocation is not None:
            kept = self.closed.setdefault(trade.symbol, [])
            kept.append(closed)
            if len(kept) > 4 * self.risk.allocation.tilt_lookback_trades:  # only the latest can tilt
                del kept[: -2 * self.risk.allocation.tilt_lookback_trades]
        moved = self.observe(ClosedTradeEvent(trade=closed), trade.exit_time_ms)
        return moved + self.mark(equity, trade.exit_time_ms)

    def mark(self, equity: float, now_ms: int) -> list[Transition]:
        if not self.wants_equity:
            return []
        value = max(Decimal(f"{equity:.2f}"), Decimal(0))
        return self.observe(EquityMark(at_ms=now_ms, equity=value), now_ms)

    def operator_resume_due(self, now_ms: int) -> bool:
        hours = self.run.operator_resume_hours
        ess = self.state.ess
        return (
            hours is not None
            and ess.state in (EmergencyState.CRITICAL, EmergencyState.HALTED)
            and now_ms - ess.entered_ms >= hours * HOUR_MS
        )

    def operator_resume(self, now_ms: int) -> list[Transition]:
        command = OperatorCommand(
            at_ms=now_ms,
            to=EmergencyState.NORMAL,
            reason=f"the operator resumes trading {self.run.operator_resume_hours} h after "
            f"{self.state.ess.state.value}",
            operator="backtest",
        )
        return self.observe(command, now_ms)

    def next_ess_check_ms(self, now_ms: int, bar_ms: int) -> int:
        """When the emergency stop could allow entries again: its cool-off (a recovery by rule) or the
        operator's return, whichever comes first; never sooner than the next bar."""
        assert self.risk.emergency is not None
        due = now_ms + max(self.risk.emergency.cool_off_seconds * 1000, bar_ms)
        hours = self.run.operator_resume_hours
        ess = self.state.ess
        if hours is not None and ess.state in (EmergencyState.CRITICAL, EmergencyState.HALTED):
            due = min(due, max(ess.entered_ms + hours * HOUR_MS, now_ms + bar_ms))
        return due

    def observe(self, event: RiskEvent, now_ms: int) -> list[Transition]:
        self.state, moved = observe(self.state, self.risk, event, now_ms)
        self.timeline.extend(moved)
        return moved

    # ------------------------------------------------------------------ clusters and allocation
    def _last_closed(self, trades: list[ClosedTrade], cutoff: int) -> list[ClosedTrade]:
        """The latest trades (as many as the tilt looks at) closed before `cutoff`; `trades` are in
        closing order."""
        assert self.risk.allocation is not None
        k = len(trades)
        while k and trades[k - 1].closed_at_ms >= cutoff:
            k -= 1
        return trades[max(0, k - self.risk.allocation.tilt_lookback_trades) : k]

    def next_refresh_ms(self, now_ms: int) -> int:
        return (now_ms // self.refresh_ms + 1) * self.refresh_ms

    def refresh(self, now_ms: int) -> bool:
        """Recompute clusters and targets when `now_ms` is past a refresh boundary not used yet."""
        epoch = now_ms // self.refresh_ms
        if epoch == self.epoch:
            return False
        self.epoch = epoch
        cutoff = epoch * self.refresh_ms
        last = bisect_left(self.times, cutoff) - 1  # the last bar that opened (and closed) before it
        points = np.arange(last, -1, -self.step)[: self.run.correlation_window_hours + 1][::-1]
        if points.shape[0] < self.run.min_returns + 1:
            return False
        closes = self.close[:, points]
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = closes[:, 1:] / closes[:, :-1] - 1.0
        finite = np.isfinite(returns)
        whole: dict[str, list[float]] = {}
        if self.wants_clusters:
            whole = {
                s: returns[k].tolist()
                for k, s in enumerate(self.symbols)
                if finite[k].all() and returns.shape[1] >= self.run.min_returns
            }
        vols: dict[str, float | None] = {}
        trades: dict[str, list[ClosedTrade]] = {}
        if self.risk.allocation is not None:
            for k, s in enumerate(self.symbols):
                r = returns[k][finite[k]]
                vols[s] = float(np.std(r, ddof=1)) if r.shape[0] >= self.run.min_returns else None
            trades = {s: self._last_closed(ts, cutoff) for s, ts in self.closed.items()}
        budget = self.cfg.policy.max_total_notional_usdt
        inputs = market_inputs(whole, vols, self.risk, budget, trades, cutoff)
        self.state = with_market_inputs(self.state, inputs)
        return True

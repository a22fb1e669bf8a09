"""What a backtest produced: its trades (with their fills, as the position workflow records them), the
equity curve and the bars it ran over."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
from pydantic import BaseModel, ConfigDict

from backtest.config import BacktestConfig
from trading.emergency import Transition
from trading.intents import Side
from trading.pnl import Fill


class Trade(BaseModel):
    """One closed position. `realized_pnl` is net of fees (the workflow's figure); `pnl` adds funding."""

    model_config = ConfigDict(extra="forbid")

    trade_no: int
    symbol: str
    side: Side
    qty: Decimal
    entry_price: Decimal  # average of the entry fills
    exit_price: Decimal  # average of the exit fills
    entry_time_ms: int
    exit_time_ms: int
    entry_bar: int
    exit_bar: int
    gross_pnl: Decimal
    fees: Decimal
    funding: Decimal
    realized_pnl: Decimal
    pnl: Decimal
    notional_usdt: Decimal  # entry notional
    leverage: int
    exit_reason: str
    exit_controller: str
    strategy: str
    regime: str = "unknown"
    model_version: str | None = None
    fills: list[Fill]


@dataclass(frozen=True, slots=True)
class GateRecord:
    """An entry a gate refused (`granted_usdt` None) or made smaller, with the gate's own words."""

    at_ms: int
    symbol: str
    side: str
    asked_usdt: Decimal
    gate: str
    reason: str
    granted_usdt: Decimal | None = None


@dataclass
class BacktestResult:
    config: BacktestConfig
    symbols: tuple[str, ...]
    open_time_ms: np.ndarray  # [bars]
    close: np.ndarray  # [symbols, bars]
    open: np.ndarray  # [symbols, bars]
    equity: np.ndarray  # [bars], at each bar's close, float
    exposure: np.ndarray  # [bars], True where any position is open at the bar's close
    trades: list[Trade]
    denials: dict[str, int] = field(default_factory=dict)  # gate → count
    decisions: int = 0  # calls into the exit engine (evaluate)
    signal: str = "every-bar"
    funding_history: tuple[str, ...] = ()  # symbols charged their historical funding rates
    refusals: list[GateRecord] = field(default_factory=list)  # every refused entry, in time order
    size_cuts: list[GateRecord] = field(default_factory=list)  # entries the risk layer made smaller
    ess_timeline: list[Transition] = field(default_factory=list)  # the emergency stop's moves

    @property
    def n_bars(self) -> int:
        return int(self.open_time_ms.shape[0])

    @property
    def end_equity(self) -> Decimal:
        return self.config.start_balance + sum((t.pnl for t in self.trades), Decimal(0))

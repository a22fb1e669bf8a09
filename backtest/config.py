"""What one backtest is asked to do: symbols, range, sizing, the portfolio's risk policy and the venue's
costs. Cost defaults are read from the paper exchange's own settings, so a backtest charges exactly what
the paper venue charges unless told otherwise."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trading import margin
from trading.governor import RiskPolicy
from trading.intents import ExitOverrides
from trading.risk import RiskLayerPolicy


def _paper(name: str) -> Decimal:
    """The paper venue's default rate of that name (trading/margin.py holds them for both)."""
    return getattr(margin, name.upper())


class Costs(BaseModel):
    """The venue's charges. Every order the system sends is a MARKET order (entries and exits alike, as
    the position workflow sends them), so the taker fee applies; the maker fee is kept for the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    taker_fee: Decimal = Field(default_factory=lambda: _paper("taker_fee"), ge=0, lt=1)
    maker_fee: Decimal = Field(default_factory=lambda: _paper("maker_fee"), ge=0, lt=1)
    # The paper venue fills at the last price with no slippage by default; a backtest on bars should not
    # assume a perfect fill, so it pays 2 bps per market order unless told otherwise.
    slippage_bps: Decimal = Field(Decimal(2), ge=0, le=1000)
    # Constant funding rate per interval (the paper venue's default, 0.01 % every 8 h): longs pay, shorts
    # receive when positive. The shipped data has no funding history; a funding file in the data folder
    # (`qtrader data download --kind funding`) replaces it inside its range (backtest/engine.py).
    funding_rate: Decimal = Field(default_factory=lambda: _paper("funding_rate"), ge=-1, le=1)
    funding_interval_hours: int = Field(margin.FUNDING_INTERVAL_HOURS, ge=1, le=24)
    maint_margin_rate: Decimal = Field(default_factory=lambda: _paper("maint_margin_rate"), ge=0, lt=1)
    liquidation_fee_rate: Decimal = Field(default_factory=lambda: _paper("liquidation_fee_rate"), ge=0, lt=1)


class BacktestRisk(BaseModel):
    """The risk layer in a backtest (trading/risk.py), and how the backtest stands in for what the live
    system gets from elsewhere: the correlation clusters and allocation targets (a scheduled activity
    there; here recomputed from the backtest's own bars every `refresh_hours`, from the hourly returns of
    the last `correlation_window_hours` before the refresh) and an operator (nobody resumes trading after
    an emergency stop in a backtest unless `operator_resume_hours` says when)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: RiskLayerPolicy = Field(default_factory=RiskLayerPolicy)
    correlation_window_hours: int = Field(720, ge=3, le=24 * 366)
    refresh_hours: int = Field(24, ge=1, le=24 * 366)
    # Fewer hourly returns than this: no clusters and no allocation target for that symbol yet.
    min_returns: int = Field(24, ge=3)
    # The backtest plays an operator who moves the ESS back to NORMAL this long after it entered CRITICAL
    # or HALTED (None: never; a CRITICAL from a losing streak would otherwise end trading for good).
    operator_resume_hours: int | None = Field(24, ge=1)

    @field_validator("min_returns")
    @classmethod
    def _window_holds_minimum(cls, value: int, info) -> int:
        window = info.data.get("correlation_window_hours")
        if window is not None and value > window:
            raise ValueError("min_returns must not exceed correlation_window_hours")
        return value


class BacktestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: tuple[str, ...] = Field(min_length=1)
    timeframe: str = "1h"
    start_ms: int | None = None  # bar open times in [start_ms, end_ms)
    end_ms: int | None = None
    start_balance: Decimal = Field(Decimal(10_000), gt=0)
    notional_usdt: Decimal = Field(Decimal(200), gt=0)  # asked per trade; the governor may grant less
    leverage: int = Field(5, ge=1, le=125)
    policy: RiskPolicy = Field(default_factory=RiskPolicy)
    exits: ExitOverrides | None = None  # per-trade overrides of the policy's exit profile
    costs: Costs = Field(default_factory=Costs)
    strategy: str = "backtest"
    # None: the governor's gates only, as the workflows decide today (the parity tests rely on it).
    risk: BacktestRisk | None = None

    @field_validator("symbols")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"symbols repeat: {list(value)}")
        return value

    def with_symbols_allowed(self) -> BacktestConfig:
        """The policy's allowlist widened to the backtest's symbols (the live default allows BTCUSDT
        only; a backtest of other symbols means to trade them)."""
        if self.policy.allows_symbol(self.symbols[0]) and all(
            self.policy.allows_symbol(s) for s in self.symbols
        ):
            return self
        policy = self.policy.model_copy(update={"allowlist": tuple(self.symbols)})
        return self.model_copy(update={"policy": policy})

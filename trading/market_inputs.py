"""What the market tells the risk layer, recomputed on a schedule: correlation clusters and per-symbol
allocation caps, from the returns of recent bars and the recent closed trades.

The live refresh (`activities/risk_inputs.py`, on a Temporal Schedule) and the backtest's refresh
(`backtest/risk.py`) both end here: each computes the returns and volatilities its own way (the backtest
with numpy over its whole grid), and `market_inputs` decides what follows from them:

- clusters (when the policy limits clusters) over the symbols with a complete window (`returns`); with one
  such symbol or none, every symbol is its own cluster;
- allocation caps (when the policy allocates) from every symbol's volatility (`vols`: None when it has
  too few returns, so it gets no target and does not trade yet), tilted by its recent trades; nothing
  when no symbol has a usable volatility (the previous caps stay).

`with_market_inputs` puts the result into the risk state (a part that was not computed keeps its value).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from trading.allocation import allocate
from trading.concentration import Clusters, correlation_clusters
from trading.records import ClosedTrade
from trading.risk import RiskLayerPolicy, RiskState, with_caps, with_clusters


class MarketInputs(BaseModel):
    """One refresh's result, as the portfolio's `set_market_inputs` update takes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at_ms: int = Field(ge=0)  # the end of the window it was computed from
    clusters: Clusters | None = None  # None: not computed (the gate is off, or no data)
    allocation: dict[str, Decimal] | None = None  # symbol → notional cap (USDT); None: not computed
    symbols: tuple[str, ...] = ()  # the symbols it looked at
    returns: int = Field(0, ge=0)  # returns per symbol in the window (the longest)


def wants_clusters(risk: RiskLayerPolicy) -> bool:
    conc = risk.concentration
    return conc is not None and conc.max_cluster_share is not None


def market_inputs(
    returns: Mapping[str, Sequence[float]],
    vols: Mapping[str, float | None],
    risk: RiskLayerPolicy,
    budget_usdt: Decimal,
    trades: Mapping[str, Sequence[ClosedTrade]],
    at_ms: int,
) -> MarketInputs:
    """`returns`: the symbols with a complete window, aligned; `vols`: every symbol's volatility (None:
    too few returns). See the module docstring."""
    clusters = None
    if wants_clusters(risk):
        clusters = Clusters()  # one symbol or none: each its own cluster
        if len(returns) > 1:
            clusters = correlation_clusters(returns, risk.correlation_threshold)
    allocation = None
    if risk.allocation is not None and any(v for v in vols.values()):
        targets = allocate(vols, budget_usdt, risk.allocation, trades)
        allocation = {s: t.notional_usdt for s, t in sorted(targets.items())}
    return MarketInputs(
        at_ms=at_ms,
        clusters=clusters,
        allocation=allocation,
        symbols=tuple(sorted(vols)),
        returns=max((len(r) for r in returns.values()), default=0),
    )


def with_market_inputs(state: RiskState, inputs: MarketInputs) -> RiskState:
    if inputs.clusters is not None:
        state = with_clusters(state, inputs.clusters, inputs.at_ms)
    if inputs.allocation is not None:
        state = with_caps(state, inputs.allocation, inputs.at_ms)
    return state

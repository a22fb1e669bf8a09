"""Performance figures of a backtest, from its equity curve and its trades (and the same symbols held
instead, for comparison). Ratios use daily returns (UTC days, equity at each day's last bar close), so
they compare across timeframes; annualized with 365 days (crypto trades every day)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal

import numpy as np

from backtest.result import BacktestResult
from signals.data import timeframe_ms

DAY_MS = 86_400_000
YEAR_DAYS = 365.0


@dataclass(frozen=True)
class Metrics:
    start_equity: float
    end_equity: float
    total_return: float
    cagr: float
    sharpe: float
    sortino: float
    calmar: float
    max_drawdown: float  # a fraction, positive (0.12 = 12 % below the peak)
    max_drawdown_days: float  # longest time under a previous peak
    trades: int
    win_rate: float
    profit_factor: float
    expectancy: float  # mean PnL per trade, USDT
    exposure: float  # share of bars with a position open
    fees: float
    funding: float
    days: float
    buy_and_hold_return: float  # equal weights in every symbol, from the first open to the last close
    buy_and_hold: dict[str, float]
    bars: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def daily_equity(result: BacktestResult) -> np.ndarray:
    """Equity at the last bar close of each UTC day, starting with the start balance."""
    day = result.open_time_ms // DAY_MS
    last_of_day = np.flatnonzero(np.r_[day[1:] != day[:-1], True])
    return np.r_[float(result.config.start_balance), result.equity[last_of_day]]


def drawdown(equity: np.ndarray) -> np.ndarray:
    """Fraction below the running peak at every point (0 at a new high)."""
    peak = np.maximum.accumulate(equity)
    return 1.0 - equity / peak


def longest_underwater_ms(equity: np.ndarray, times_ms: np.ndarray) -> int:
    """The longest stretch from a peak until equity is back at it (or the end, if never)."""
    peak = np.maximum.accumulate(equity)
    at_peak = np.flatnonzero(equity >= peak)
    ends = np.r_[at_peak[1:], equity.shape[0] - 1]
    return int(np.max(times_ms[ends] - times_ms[at_peak])) if at_peak.size else 0


def _ratio(mean: float, dev: float) -> float:
    return mean / dev * math.sqrt(YEAR_DAYS) if dev > 0 else 0.0


def compute(result: BacktestResult) -> Metrics:
    start = float(result.config.start_balance)
    eq = result.equity
    end = float(eq[-1]) if eq.size else start
    span_ms = int(result.open_time_ms[-1] - result.open_time_ms[0]) + _bar_ms(result) if eq.size else 0
    days = span_ms / DAY_MS
    total = end / start - 1.0
    cagr = (end / start) ** (YEAR_DAYS / days) - 1.0 if days > 0 and end > 0 else -1.0
    daily = np.diff(daily_equity(result)) / daily_equity(result)[:-1]
    mean = float(np.mean(daily)) if daily.size else 0.0
    sharpe = _ratio(mean, float(np.std(daily, ddof=1)) if daily.size > 1 else 0.0)
    downside = np.minimum(daily, 0.0)
    sortino = _ratio(mean, float(np.sqrt(np.mean(downside**2))) if daily.size else 0.0)
    curve = np.r_[start, eq]
    mdd = float(np.max(drawdown(curve)))
    times = np.r_[result.open_time_ms[0], result.open_time_ms + _bar_ms(result)]
    pnls = [t.pnl for t in result.trades]
    wins = sum((p for p in pnls if p > 0), Decimal(0))
    losses = -sum((p for p in pnls if p < 0), Decimal(0))
    first_open, last_close = first_last(result)
    bh = {s: float(last_close[k] / first_open[k] - 1.0) for k, s in enumerate(result.symbols)}
    return Metrics(
        start_equity=start,
        end_equity=end,
        total_return=total,
        cagr=cagr,
        sharpe=sharpe,
        sortino=sortino,
        calmar=cagr / mdd if mdd > 0 else 0.0,
        max_drawdown=mdd,
        max_drawdown_days=longest_underwater_ms(curve, times) / DAY_MS,
        trades=len(pnls),
        win_rate=sum(1 for p in pnls if p > 0) / len(pnls) if pnls else 0.0,
        profit_factor=float(wins / losses) if losses > 0 else (math.inf if wins > 0 else 0.0),
        expectancy=float(sum(pnls, Decimal(0)) / len(pnls)) if pnls else 0.0,
        exposure=float(np.mean(result.exposure)) if result.exposure.size else 0.0,
        fees=float(sum((t.fees for t in result.trades), Decimal(0))),
        funding=float(sum((t.funding for t in result.trades), Decimal(0))),
        days=days,
        buy_and_hold_return=float(np.mean(list(bh.values()))) if bh else 0.0,
        buy_and_hold=bh,
        bars=result.n_bars,
    )


def first_last(result: BacktestResult) -> tuple[np.ndarray, np.ndarray]:
    """Each symbol's first open and last close that are prices (symbols of a `--union` backtest start
    and end at different bars)."""
    o, c = result.open, result.close
    n = o.shape[1]
    first = np.argmax(np.isfinite(o), axis=1)
    last = n - 1 - np.argmax(np.isfinite(c[:, ::-1]), axis=1)
    rows = np.arange(o.shape[0])
    return o[rows, first], c[rows, last]


def _bar_ms(result: BacktestResult) -> int:
    return timeframe_ms(result.config.timeframe)


def monthly_returns(result: BacktestResult) -> dict[str, float]:
    """Return of each calendar month (UTC), "YYYY-MM" → fraction, from month-end equities."""
    months = (result.open_time_ms.astype("datetime64[ms]").astype("datetime64[M]")).astype(str)
    out: dict[str, float] = {}
    prev = float(result.config.start_balance)
    ends = np.flatnonzero(np.r_[months[1:] != months[:-1], True])
    for k in ends:
        val = float(result.equity[k])
        out[str(months[k])] = val / prev - 1.0
        prev = val
    return out

"""Benchmark: what the risk layer (trading/risk.py) costs.

`python -m bench.risk [--budget-s 240]`

- `bars_per_s_risk_off` / `bars_per_s_risk_on`: the backtester over the ten shipped 1 h files, whole (each
  symbol in its own period, on the union of their times: `bench.backtest.union_bars`), one portfolio, a
  long signal on every bar; off is the governor alone (`BacktestConfig.risk=None`), on is every part of
  the risk layer with its defaults (`BacktestRisk()`); bars counted per symbol. `backtest_overhead_ratio`
  is the time on over the time off (the work differs too: the risk layer refuses and shrinks entries,
  `trades_*` and `refusals_risk_on` say how much);
- `decisions_per_s_decide` / `decisions_per_s_decide_with_risk`: the pure decision alone, on a book of
  six reservations across ten symbols, with clusters, allocation targets and a trade history for the
  protections (every gate is evaluated; the requests are granted), and their ratio
  `decision_overhead_ratio`.

Each backtest figure is the best of the runs the time budget allows (at least one; off and on
alternate, so a load change on the machine hits both); each decision figure runs ~2 s. Progress on
stderr; the last stdout line is one JSON object.
- `decisions_per_s` / `decisions_per_s_today_gates`: one portfolio workflow on a real dev server,
  every gate of the risk layer on against the governor's gates alone (bench/risk_portfolio.py; aim
  ≥ 200 decisions/s), `--requests` each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from backtest.config import BacktestConfig, BacktestRisk
from backtest.engine import run_backtest
from bench.backtest import tradable_every_bar, union_bars
from bench.risk_portfolio import portfolio_decisions
from signals.data import available
from trading.allocation import AllocationPolicy, allocate
from trading.concentration import Clusters
from trading.governor import PortfolioBook, Reservation, ReservationRequest, RiskPolicy, decide
from trading.intents import Side
from trading.records import ClosedTrade
from trading.risk import (
    ClosedTradeEvent,
    RiskLayerPolicy,
    RiskState,
    decide_with_risk,
    observe,
    with_allocation,
    with_clusters,
)

D = Decimal
T0 = 1_767_225_600_000  # 2026-01-01
SYMBOLS = (
    "ADAUSDT",
    "AVAXUSDT",
    "BNBUSDT",
    "BTCUSDT",
    "DOGEUSDT",
    "ETHUSDT",
    "LINKUSDT",
    "LTCUSDT",
    "SOLUSDT",
    "XRPUSDT",
)


def log(msg: str) -> None:
    print(f"[bench.risk] {msg}", file=sys.stderr, flush=True)


def backtests(budget_s: float) -> dict[str, object]:
    symbols = sorted(s for s, tf in available() if tf == "1h")
    bars, real = union_bars(symbols, "1h")
    sig = tradable_every_bar(bars)
    configs = {
        "off": BacktestConfig(symbols=tuple(symbols)),
        "on": BacktestConfig(symbols=tuple(symbols), risk=BacktestRisk()),
    }
    log(f"1h x {len(symbols)}: {real} symbol-bars over {bars.n_bars} times")
    best = {k: float("inf") for k in configs}
    results = {}
    started = time.perf_counter()
    rounds = 0
    while True:
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            results[name] = run_backtest(cfg, bars, sig)
            best[name] = min(best[name], time.perf_counter() - t0)
            log(f"risk {name}: {time.perf_counter() - t0:.2f} s")
        rounds += 1
        elapsed = time.perf_counter() - started
        if rounds >= 3 or elapsed + elapsed / rounds > budget_s:
            break
    on, off = results["on"], results["off"]
    return {
        "bars_per_s_risk_off": round(real / best["off"]),
        "bars_per_s_risk_on": round(real / best["on"]),
        "backtest_overhead_ratio": round(best["on"] / best["off"], 3),
        "seconds_risk_off": round(best["off"], 3),
        "seconds_risk_on": round(best["on"], 3),
        "trades_risk_off": len(off.trades),
        "trades_risk_on": len(on.trades),
        "refusals_risk_on": len(on.refusals),
        "size_cuts_risk_on": len(on.size_cuts),
        "ess_transitions_risk_on": len(on.ess_timeline),
        "bars_1h_10sym": real,
        "backtest_rounds": rounds,
    }


def decision_fixture() -> tuple[
    PortfolioBook, RiskPolicy, RiskLayerPolicy, RiskState, list[ReservationRequest]
]:
    """A book holding six of ten symbols; the four others are asked for, in turn."""
    policy = RiskPolicy(allowlist=("*",), max_exec_per_hour=100, max_exec_per_5min=100)
    risk = RiskLayerPolicy()
    book = PortfolioBook()
    for k, symbol in enumerate(SYMBOLS[:6]):
        book.reservations[f"h{k}"] = Reservation(
            holder_id=f"h{k}",
            symbol=symbol,
            side=Side.LONG if k % 2 else Side.SHORT,
            notional_usdt=D(150),
            reserved_at_ms=T0 - 3_600_000,
        )
        book.executions_ms[symbol] = [T0 - 3_000_000]
    state = RiskState()
    for k in range(40):  # a day of closed trades across the symbols, for the protections
        symbol = SYMBOLS[k % len(SYMBOLS)]
        closed = T0 - 86_000_000 + k * 2_000_000
        trade = ClosedTrade(
            trade_id=f"t{k}",
            symbol=symbol,
            side=Side.LONG,
            strategy="bench",
            source="bench",
            quantity=D(1),
            entry_price=D(100),
            exit_price=D(101) if k % 3 else D(99),
            opened_at_ms=closed - 3_600_000,
            closed_at_ms=closed,
            realized_pnl=D(1) if k % 3 else D(-1),
            gross_pnl=D(1) if k % 3 else D(-1),
            fees=D(0),
            exit_reason="take_profit" if k % 3 else "stop_loss",
        )
        state, _ = observe(state, risk, ClosedTradeEvent(trade=trade), closed)
    state = with_clusters(state, Clusters(groups=(SYMBOLS[3:6], SYMBOLS[6:9])), T0)
    vols = {s: 0.01 + 0.002 * k for k, s in enumerate(SYMBOLS)}
    state = with_allocation(state, allocate(vols, policy.max_total_notional_usdt, AllocationPolicy()), T0)
    reqs = [
        ReservationRequest(holder_id=f"r{k}", symbol=s, side=Side.LONG, notional_usdt=D(100))
        for k, s in enumerate(SYMBOLS[6:])
    ]
    return book, policy, risk, state, reqs


def decisions(seconds: float = 2.0) -> dict[str, object]:
    book, policy, risk, state, reqs = decision_fixture()
    granted = [decide_with_risk(book, policy, risk, state, r, T0).decision for r in reqs]
    assert granted == ["granted"] * len(reqs), granted  # every gate is evaluated
    out: dict[str, float] = {}
    for name, fn in (
        ("decide", lambda r: decide(book, policy, r, T0)),
        ("decide_with_risk", lambda r: decide_with_risk(book, policy, risk, state, r, T0)),
    ):
        n, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            for r in reqs:
                fn(r)
            n += len(reqs)
        out[name] = n / elapsed
        log(f"{name}: {out[name]:,.0f} decisions/s")
    return {
        "decisions_per_s_decide": round(out["decide"]),
        "decisions_per_s_decide_with_risk": round(out["decide_with_risk"]),
        "decision_overhead_ratio": round(out["decide"] / out["decide_with_risk"], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.risk", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=240.0, help="time for the backtest runs (default 240)")
    p.add_argument("--requests", type=int, default=1000, help="reservation requests per portfolio phase")
    args = p.parse_args(argv)
    if args.requests < 1:
        p.error("--requests must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp:
        portfolio = asyncio.run(portfolio_decisions(Path(tmp), args.requests, log))
    result = portfolio | decisions() | backtests(args.budget_s)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The report folder of a backtest: `report.html` (self-contained: inline SVG charts, no scripts, no
network), `trades.csv`, `metrics.json`, and the risk layer's `refusals.csv`, `size_cuts.csv` and
`ess_timeline.csv` (backtest/report_risk.py)."""

from __future__ import annotations

import csv
import html
import json
import math
import warnings
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np

from backtest.engine import __doc__ as ENGINE_RULES
from backtest.metrics import Metrics, compute, drawdown, first_last, monthly_returns
from backtest.report_risk import (
    ess_legend,
    ess_overlay,
    risk_metrics,
    risk_sections,
    risk_setup,
    write_risk_files,
)
from backtest.result import BacktestResult

TRADE_COLUMNS = (
    "trade_no",
    "symbol",
    "side",
    "qty",
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "gross_pnl",
    "fees",
    "funding",
    "pnl",
    "exit_reason",
    "exit_controller",
    "regime",
    "strategy",
)
CHART_POINTS = 1200
ADVERSE_NOTE = (
    "Inside a bar the path is unknown: when a bar crosses both a stop-side and a target-side level, the "
    "adverse one (stop, emergency close, liquidation) is taken first, and the stop is checked again "
    "after every decision in the same bar."
)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def write_report(result: BacktestResult, out: Path, metrics: Metrics | None = None) -> Metrics:
    out.mkdir(parents=True, exist_ok=True)
    m = metrics or compute(result)
    (out / "metrics.json").write_text(
        json.dumps(
            _json_safe(
                m.as_dict()
                | {
                    "denials": result.denials,
                    "signal": result.signal,
                    "funding_history": list(result.funding_history),
                }
                | risk_metrics(result)
            ),
            indent=2,
        )
        + "\n"
    )
    write_risk_files(result, out)
    with (out / "trades.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(TRADE_COLUMNS)
        for t in result.trades:
            w.writerow(
                [
                    t.trade_no,
                    t.symbol,
                    t.side.value,
                    t.qty,
                    iso(t.entry_time_ms),
                    t.entry_price,
                    iso(t.exit_time_ms),
                    t.exit_price,
                    t.gross_pnl,
                    t.fees,
                    t.funding,
                    t.pnl,
                    t.exit_reason,
                    t.exit_controller,
                    t.regime,
                    t.strategy,
                ]
            )
    (out / "report.html").write_text(render_html(result, m))
    return m


def _json_safe(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def metric_rows(m: Metrics) -> list[tuple[str, str]]:
    return [
        ("Total return", _pct(m.total_return)),
        ("Buy and hold (same symbols, equal weights)", _pct(m.buy_and_hold_return)),
        ("CAGR", _pct(m.cagr)),
        ("Sharpe (daily, annualized)", f"{m.sharpe:.2f}"),
        ("Sortino", f"{m.sortino:.2f}"),
        ("Calmar", f"{m.calmar:.2f}"),
        ("Max drawdown", _pct(m.max_drawdown)),
        ("Longest drawdown", f"{m.max_drawdown_days:.1f} days"),
        ("Trades", str(m.trades)),
        ("Win rate", _pct(m.win_rate)),
        ("Profit factor", f"{m.profit_factor:.2f}"),
        ("Expectancy", f"{m.expectancy:.4f} USDT per trade"),
        ("Exposure", _pct(m.exposure)),
        ("Fees", f"{m.fees:.2f} USDT"),
        ("Funding", f"{m.funding:.2f} USDT"),
        ("Equity", f"{m.start_equity:,.2f} → {m.end_equity:,.2f} USDT"),
        ("Period", f"{m.days:.1f} days, {m.bars:,} bars"),
    ]


def _polyline(x: np.ndarray, y: np.ndarray, w: int, h: int, lo: float, hi: float, colour: str) -> str:
    span = (hi - lo) or 1.0
    px = (x - x[0]) / max(float(x[-1] - x[0]), 1.0) * w
    py = h - (y - lo) / span * h
    pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=True))
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{pts}"/>'


def _charts(result: BacktestResult) -> str:
    n = result.n_bars
    idx = np.unique(np.r_[np.linspace(0, n - 1, min(n, CHART_POINTS)).astype(int), n - 1])
    x = result.open_time_ms[idx].astype(float)
    eq = result.equity[idx]
    start = float(result.config.start_balance)
    first_open, _ = first_last(result)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a time before every symbol's first bar
        rel = np.nanmean(result.close[:, idx] / first_open[:, None] - 1.0, axis=0)
    hold = start * (1.0 + np.nan_to_num(rel))
    dd = -drawdown(result.equity)[idx]
    lo, hi = float(min(eq.min(), hold.min())), float(max(eq.max(), hold.max()))
    w, h = 900, 260
    eq_svg = (
        f'<svg viewBox="-60 -10 {w + 70} {h + 30}" width="100%" role="img" aria-label="equity">'
        f'<text x="-58" y="8" font-size="11">{hi:,.0f}</text>'
        f'<text x="-58" y="{h}" font-size="11">{lo:,.0f}</text>'
        f'<line x1="0" y1="{h}" x2="{w}" y2="{h}" stroke="#999"/>'
        + ess_overlay(result, float(x[0]), float(x[-1]), w, h)
        + _polyline(x, hold, w, h, lo, hi, "#bbb")
        + _polyline(x, eq, w, h, lo, hi, "#1f6feb")
        + f'<text x="0" y="{h + 18}" font-size="11">{iso(int(x[0]))}</text>'
        f'<text x="{w - 110}" y="{h + 18}" font-size="11">{iso(int(x[-1]))}</text></svg>'
    )
    dlo = float(dd.min()) if dd.size else 0.0
    dh = 120
    dd_svg = (
        f'<svg viewBox="-60 -10 {w + 70} {dh + 20}" width="100%" role="img" aria-label="drawdown">'
        f'<text x="-58" y="8" font-size="11">0 %</text>'
        f'<text x="-58" y="{dh}" font-size="11">{dlo * 100:.1f} %</text>'
        + _polyline(x, dd, w, dh, dlo, 0.0, "#d1242f")
        + "</svg>"
    )
    return (
        "<h2>Equity</h2><p class=legend><span style='color:#1f6feb'>■</span> strategy "
        f"<span style='color:#bbb'>■</span> buy and hold{ess_legend(result)}</p>"
        + eq_svg
        + "<h2>Drawdown</h2>"
        + dd_svg
    )


def _monthly_table(result: BacktestResult) -> str:
    months = monthly_returns(result)
    years = sorted({k[:4] for k in months})
    head = "".join(f"<th>{m:02d}</th>" for m in range(1, 13))
    rows = []
    for y in years:
        cells = []
        for mo in range(1, 13):
            v = months.get(f"{y}-{mo:02d}")
            cls = "" if v is None else ("pos" if v >= 0 else "neg")
            cells.append(f"<td class='{cls}'>{'' if v is None else f'{v * 100:.2f}'}</td>")
        total = np.prod([1 + v for k, v in months.items() if k.startswith(y)]) - 1
        rows.append(f"<tr><th>{y}</th>{''.join(cells)}<td><b>{total * 100:.2f}</b></td></tr>")
    return f"<table><tr><th>year</th>{head}<th>year</th></tr>{''.join(rows)}</table>"


def _exit_table(result: BacktestResult) -> str:
    """Trades and PnL per exit reason: which part of the exit profile made or lost the money."""
    by: dict[tuple[str, str], list[Decimal]] = {}
    for t in result.trades:
        by.setdefault((t.exit_reason, t.exit_controller), []).append(t.pnl)
    rows = "".join(
        f"<tr><td>{html.escape(r)}</td><td>{html.escape(c)}</td><td>{len(v)}</td>"
        f"<td>{sum(v, Decimal(0)):.2f}</td><td>{sum(v, Decimal(0)) / len(v):.4f}</td></tr>"
        for (r, c), v in sorted(by.items(), key=lambda kv: -len(kv[1]))
    )
    return (
        "<table><tr><th>exit reason</th><th>controller</th><th>trades</th><th>PnL USDT</th>"
        f"<th>per trade</th></tr>{rows}</table>"
    )


def _trade_table(result: BacktestResult, limit: int = 2000) -> str:
    rows = []
    for t in result.trades[:limit]:
        cls = "pos" if t.pnl >= 0 else "neg"
        rows.append(
            f"<tr><td>{t.trade_no}</td><td>{t.symbol}</td><td>{t.side.value}</td><td>{t.qty}</td>"
            f"<td>{iso(t.entry_time_ms)}</td><td>{t.entry_price:.6g}</td><td>{iso(t.exit_time_ms)}</td>"
            f"<td>{t.exit_price:.6g}</td><td>{t.fees:.4f}</td><td>{t.funding:.4f}</td>"
            f"<td class='{cls}'>{t.pnl:.4f}</td><td>{html.escape(t.exit_reason)}</td>"
            f"<td>{html.escape(t.exit_controller)}</td></tr>"
        )
    more = (
        f"<p>First {limit} of {len(result.trades)} trades; all are in trades.csv.</p>"
        if len(result.trades) > limit
        else ""
    )
    return (
        "<table><tr><th>#</th><th>symbol</th><th>side</th><th>qty</th><th>entry</th><th>price</th>"
        "<th>exit</th><th>price</th><th>fees</th><th>funding</th><th>PnL</th><th>reason</th>"
        f"<th>controller</th></tr>{''.join(rows)}</table>{more}"
    )


def render_html(result: BacktestResult, m: Metrics) -> str:
    cfg = result.config
    title = f"Backtest {', '.join(result.symbols)} {cfg.timeframe}"
    metrics = "".join(f"<tr><th>{k}</th><td>{html.escape(v)}</td></tr>" for k, v in metric_rows(m))
    bh = "".join(f"<tr><th>{s}</th><td>{_pct(v)}</td></tr>" for s, v in m.buy_and_hold.items())
    denials = ", ".join(f"{g}: {c}" for g, c in sorted(result.denials.items())) or "none"
    c = cfg.costs
    funding = f"funding {c.funding_rate} every {c.funding_interval_hours} h (constant)"
    if result.funding_history:
        funding = (
            f"funding: the historical rates of {', '.join(result.funding_history)} inside their data, else "
            f"{c.funding_rate} every {c.funding_interval_hours} h"
        )
    setup = (
        f"signal {html.escape(result.signal)}; notional asked {cfg.notional_usdt} USDT, "
        f"leverage {cfg.leverage}; "
        f"taker fee {c.taker_fee}, maker fee {c.maker_fee} (every order is a market order), slippage "
        f"{c.slippage_bps} bps, {funding}, "
        f"isolated margin, maintenance rate {c.maint_margin_rate}, liquidation fee {c.liquidation_fee_rate}; "
        f"entries refused by the portfolio's gates: {denials}; {risk_setup(result)}"
    )
    rules = html.escape((ENGINE_RULES or "").split("Bar rules", 1)[-1])
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:1100px}}
table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ddd;padding:3px 7px;text-align:right}}th{{background:#f6f8fa}}.pos{{color:#116329}}
.neg{{color:#d1242f}}pre{{white-space:pre-wrap;background:#f6f8fa;padding:8px}}.legend{{margin:0}}</style></head><body>
<h1>{title}</h1><p>{iso(int(result.open_time_ms[0]))} → {iso(int(result.open_time_ms[-1]))} UTC · {setup}</p>
<h2>Metrics</h2><table>{metrics}</table><h3>Buy and hold per symbol</h3><table>{bh}</table>
{_charts(result)}<h2>Monthly returns (%)</h2>{_monthly_table(result)}
{risk_sections(result)}
<h2>Exits</h2>{_exit_table(result)}
<h2>How bars are read</h2><p><b>{ADVERSE_NOTE}</b></p><pre>Bar rules{rules}</pre>
<h2>Trades</h2>{_trade_table(result)}</body></html>
"""

"""The risk layer's part of a backtest report: every refused entry with its gate and figures, the entries
made smaller, the emergency stop's timeline (bands on the equity chart and a table), and their CSV files
(`refusals.csv`, `size_cuts.csv`, `ess_timeline.csv`)."""

from __future__ import annotations

import csv
import html
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from backtest.result import BacktestResult, GateRecord
from trading.governor import EmergencyState

GATE_COLUMNS = ("time", "symbol", "side", "asked_usdt", "granted_usdt", "gate", "reason")
ESS_COLUMNS = ("time", "from", "to", "cause", "rule", "reason")
ESS_COLOURS = {
    EmergencyState.WARNING: "#f2cc60",
    EmergencyState.CRITICAL: "#fb8f44",
    EmergencyState.HALTED: "#d1242f",
}
TABLE_ROWS = 1000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def write_risk_files(result: BacktestResult, out: Path) -> None:
    for name, rows in (("refusals.csv", result.refusals), ("size_cuts.csv", result.size_cuts)):
        with (out / name).open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(GATE_COLUMNS)
            for r in rows:
                w.writerow(
                    [_iso(r.at_ms), r.symbol, r.side, r.asked_usdt, r.granted_usdt or "", r.gate, r.reason]
                )
    with (out / "ess_timeline.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ESS_COLUMNS)
        for t in result.ess_timeline:
            w.writerow([_iso(t.at_ms), t.from_state.value, t.to_state.value, t.cause.value, t.rule, t.reason])


def risk_metrics(result: BacktestResult) -> dict[str, object]:
    """What metrics.json adds: the risk setup, refusals and cuts per gate, the emergency stop's moves."""
    risk = result.config.risk
    return {
        "risk_layer": risk.model_dump(mode="json") if risk is not None else None,
        "refusals_by_gate": dict(sorted(Counter(r.gate for r in result.refusals).items())),
        "size_cuts_by_gate": dict(sorted(Counter(r.gate for r in result.size_cuts).items())),
        "ess_transitions": len(result.ess_timeline),
        "ess_final_state": result.ess_timeline[-1].to_state.value if result.ess_timeline else "NORMAL",
    }


def ess_overlay(result: BacktestResult, t0: float, t1: float, w: int, h: int) -> str:
    """Bands on the equity chart where the emergency stop was above NORMAL, and a line at each move
    (hover shows its reason)."""
    moves = sorted(result.ess_timeline, key=lambda t: t.at_ms)
    if not moves:
        return ""
    span = max(t1 - t0, 1.0)

    def x(ms: float) -> float:
        return min(max((ms - t0) / span * w, 0.0), float(w))

    out = []
    ends = [m.at_ms for m in moves[1:]] + [t1]
    for m, end in zip(moves, ends, strict=True):
        colour = ESS_COLOURS.get(m.to_state)
        if colour is not None and end > m.at_ms:
            out.append(
                f'<rect x="{x(m.at_ms):.1f}" y="0" width="{max(x(end) - x(m.at_ms), 0.5):.1f}" height="{h}" '
                f'fill="{colour}" fill-opacity="0.25"/>'
            )
    for m in moves:
        colour = ESS_COLOURS.get(m.to_state, "#116329")
        tip = html.escape(f"{_iso(m.at_ms)} {m.from_state.value} → {m.to_state.value}: {m.reason}")
        out.append(
            f'<line x1="{x(m.at_ms):.1f}" y1="0" x2="{x(m.at_ms):.1f}" y2="{h}" stroke="{colour}" '
            f'stroke-width="0.8"><title>{tip}</title></line>'
        )
    return "".join(out)


def ess_legend(result: BacktestResult) -> str:
    if not result.ess_timeline:
        return ""
    return " · emergency stop: " + " ".join(
        f"<span style='color:{c}'>■</span> {s.value}" for s, c in ESS_COLOURS.items()
    )


def _gate_table(rows: list[GateRecord], what: str, file: str) -> str:
    counts = Counter(r.gate for r in rows)
    summary = "".join(f"<tr><th>{html.escape(g)}</th><td>{n}</td></tr>" for g, n in counts.most_common())
    lines = "".join(
        f"<tr><td>{_iso(r.at_ms)}</td><td>{r.symbol}</td><td>{r.side}</td><td>{r.asked_usdt}</td>"
        f"<td>{'' if r.granted_usdt is None else r.granted_usdt}</td><td>{html.escape(r.gate)}</td>"
        f"<td style='text-align:left'>{html.escape(r.reason)}</td></tr>"
        for r in rows[:TABLE_ROWS]
    )
    more = f"<p>First {TABLE_ROWS} of {len(rows)}; all are in {file}.</p>" if len(rows) > TABLE_ROWS else ""
    if not rows:
        return f"<p>No {what}.</p>"
    return (
        f"<table><tr><th>gate</th><th>{what}</th></tr>{summary}</table>"
        "<table><tr><th>time</th><th>symbol</th><th>side</th><th>asked USDT</th><th>granted USDT</th>"
        f"<th>gate</th><th>reason and figures</th></tr>{lines}</table>{more}"
    )


def _ess_table(result: BacktestResult) -> str:
    if not result.ess_timeline:
        return "<p>The emergency stop stayed NORMAL.</p>" if result.config.risk else ""
    rows = "".join(
        f"<tr><td>{_iso(t.at_ms)}</td><td>{t.from_state.value}</td><td>{t.to_state.value}</td>"
        f"<td>{t.cause.value}</td><td>{html.escape(t.rule)}</td>"
        f"<td style='text-align:left'>{html.escape(t.reason)}</td></tr>"
        for t in result.ess_timeline
    )
    return (
        "<table><tr><th>time</th><th>from</th><th>to</th><th>cause</th><th>rule</th><th>reason</th></tr>"
        f"{rows}</table>"
    )


def risk_setup(result: BacktestResult) -> str:
    risk = result.config.risk
    if risk is None:
        return "risk layer off (the governor's gates only)"
    p = risk.policy
    parts = [
        f"emergency stop {'on' if p.emergency else 'off'}",
        f"protections {'on' if p.protections else 'off'}",
        "heat "
        + (
            f"{p.concentration.max_entries_per_window} entries per {p.concentration.heat_window_seconds} s"
            if p.concentration and p.concentration.max_entries_per_window
            else "off"
        ),
        "concentration "
        + (
            f"symbol {p.concentration.max_symbol_share}, cluster {p.concentration.max_cluster_share} of the "
            f"budget (correlation ≥ {p.correlation_threshold} over {risk.correlation_window_hours} h)"
            if p.concentration
            else "off"
        ),
        f"allocation {'on' if p.allocation else 'off'} (refreshed every {risk.refresh_hours} h)",
        (
            f"an operator resumes trading {risk.operator_resume_hours} h after CRITICAL or HALTED"
            if risk.operator_resume_hours
            else "nobody resumes trading after CRITICAL or HALTED"
        ),
    ]
    return "risk layer: " + "; ".join(parts)


def risk_sections(result: BacktestResult) -> str:
    return (
        "<h2>Emergency stop timeline</h2>"
        + _ess_table(result)
        + "<h2>Refused entries</h2>"
        + _gate_table(result.refusals, "refused entries", "refusals.csv")
        + "<h2>Entries made smaller</h2>"
        + _gate_table(result.size_cuts, "entries made smaller", "size_cuts.csv")
    )

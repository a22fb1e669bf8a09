"""Grafana dashboards in deploy/grafana/dashboards are valid and query only metrics the code exports.

The exported names come from a real paper exchange app's `GET /metrics` (its own registry), the
price watcher's, user-data stream's and performance gauges' registries, and every metric the code
creates through a Temporal meter (found in the source, named the way a real Temporal runtime's
Prometheus endpoint names them, which a test here checks), so a renamed or removed metric fails here
instead of leaving a dashboard panel silently empty.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import generate_latest

from exchange.paper.config import PaperConfig
from exchange.paper.server import create_app
from workers.processes import free_port
from workers.temporal_client import metrics_runtime

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))

# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
        "le",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations removed)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VAR.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for m in _IDENT.finditer(text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def exported_metric_names(exposition: str) -> set[str]:
    """Every series name a scrape can carry: the samples shown plus what each `# TYPE` line implies."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()[:4]
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {name, f"{name}_sum", f"{name}_count"}
            else:
                names.add(name)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


async def _scrape() -> httpx.Response:
    app = create_app(PaperConfig(api_key="KEY", api_secret="SECRET", prices="manual"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://paper") as client:
        await client.get("/fapi/v1/time")
        return await client.get("/metrics")


# Temporal meter instruments → the series names a runtime with `counters_total_suffix=True` exports.
_METER_SERIES = {
    "create_counter": ("_total",),
    "create_gauge": ("",),
    "create_gauge_float": ("",),
    "create_histogram": ("_bucket", "_sum", "_count"),
    "create_histogram_float": ("_bucket", "_sum", "_count"),
    "create_histogram_timedelta": ("_bucket", "_sum", "_count"),
}
_SOURCE_PACKAGES = ("workflows", "activities", "workers", "signals", "exchange", "journal", "backtest")


def meter_metric_names() -> set[str]:
    """Every metric created through a Temporal meter in the code, with a literal name."""
    names: set[str] = set()
    for package in _SOURCE_PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _METER_SERIES
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    names |= {node.args[0].value + s for s in _METER_SERIES[node.func.attr]}
    return names


def registry_metric_names() -> set[str]:
    """The price watcher's, user-data stream's and the lifecycle worker's performance registries."""
    from feeds.price_watcher import WatcherMetrics
    from feeds.user_stream import UserStreamMetrics
    from journal.metrics import PerformanceGauges

    names: set[str] = set()
    for metrics in (WatcherMetrics(), UserStreamMetrics(), PerformanceGauges()):
        names |= exported_metric_names(generate_latest(metrics.registry).decode())
    return names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    resp = asyncio.run(_scrape())
    assert resp.status_code == 200
    names = exported_metric_names(resp.text)
    assert "paper_exchange_orders_total" in names  # labelled families show up before their first sample
    names |= registry_metric_names()
    assert "price_watcher_tick_to_signal_seconds_bucket" in names and "quantum_equity_usdt" in names
    names |= meter_metric_names()
    assert {"quantum_govern_deny_total", "quantum_portfolio_slots_used"} <= names
    return names


def test_the_meter_naming_rule_matches_a_real_temporal_runtime() -> None:
    """Record one of each instrument on a runtime configured as the workers configure theirs, scrape it."""
    port = free_port()
    runtime = metrics_runtime(port)
    assert runtime is not None
    meter = runtime.metric_meter
    made = {
        "create_counter": meter.create_counter("qt_rule_counter", "c"),
        "create_gauge": meter.create_gauge("qt_rule_gauge", "g"),
        "create_gauge_float": meter.create_gauge_float("qt_rule_gauge_float", "g"),
        "create_histogram": meter.create_histogram("qt_rule_histogram", "h"),
        "create_histogram_float": meter.create_histogram_float("qt_rule_histogram_float", "h", "s"),
    }
    for kind, instrument in made.items():
        getattr(instrument, "add" if kind == "create_counter" else "set" if "gauge" in kind else "record")(1)
    scraped = exported_metric_names(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
    for kind in made:
        base = "qt_rule_" + kind.removeprefix("create_")
        assert {base + s for s in _METER_SERIES[kind]} <= scraped, (kind, sorted(scraped))


def test_the_trading_dashboard_has_the_operator_panels() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "quantum-trading.json").read_text())
    queries = " ".join(t["expr"] for p in _panels(dashboard) for t in p.get("targets", []))
    for needed in [
        "quantum_open_positions",  # positions
        "quantum_realized_pnl_usdt",  # PnL (and equity, drawdown, Sharpe below)
        "quantum_equity_usdt",
        "quantum_drawdown_pct",
        "quantum_rolling_sharpe",
        "quantum_portfolio_slots_used",  # slots
        "quantum_govern_allow_total",  # governor allows / denials by gate
        "quantum_govern_deny_total",
        "price_watcher_tick_to_signal_seconds_bucket",  # exit reaction latency
        "reconcile_drift_detected_total",  # drift
        "binance_request_weight_used_1m",  # request weight
        "quantum_intent_confidence_sum",  # model confidence
    ]:
        assert needed in queries, needed


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return out


def test_there_is_a_paper_exchange_dashboard() -> None:
    assert REPO / "deploy" / "grafana" / "dashboards" / "paper-exchange.json" in DASHBOARDS


def test_the_checker_finds_metric_names() -> None:
    assert metric_names('sum by (code) (rate(paper_x_total{code="-2019", path=~"/fapi.*"}[5m]))') == {
        "paper_x_total"
    }
    assert metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval]))) "
        "/ ignoring(x) b + on(y) group_left(z) c offset 5m"
    ) == {"a_bucket", "b", "c"}
    assert metric_names("up == bool 1 and nope_total") == {"up", "nope_total"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_valid_and_queries_only_exported_metrics(path: Path, exported: set[str]) -> None:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard.get("title"), str) and dashboard["title"]
    assert isinstance(dashboard.get("uid"), str) and len(dashboard["uid"]) <= 40
    assert isinstance(dashboard.get("schemaVersion"), int)
    panels = _panels(dashboard)
    assert panels, f"{path.name} has no panels"
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    queried: set[str] = set()
    for panel in panels:
        if panel.get("type") == "row":
            continue
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} queries nothing"
        for target in targets:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r} queries metrics nothing exports: {unknown}"
            queried |= names
    assert queried

"""Prometheus metrics of one paper exchange, exposed at `GET /metrics` (text exposition, no auth).

Every app gets its own `CollectorRegistry` (never the process-global one), so several exchanges in
one process (tests) do not collide.

Hot-path cost is kept to a dict lookup and a few lock-protected increments per request: the labelled
children are cached per label tuple. Things the engine counts (fills, liquidations) and levels
(WebSocket connections, open positions, wallet balance) are read only when Prometheus scrapes.

Exported:
- `paper_exchange_requests_total{method,path,status}`: HTTP requests; `path` is the route template
  (unknown paths are `other`, so the label set stays bounded);
- `paper_exchange_request_seconds{method,path}`: histogram of the time to answer one request;
- `paper_exchange_orders_total{symbol,type,side}`: orders the venue accepted through
  `POST /fapi/v1/order` and `POST /fapi/v1/algoOrder`;
- `paper_exchange_fills_total{symbol}`: executions (trades), whatever caused them (API orders, resting
  limit orders, triggered algo orders, liquidations);
- `paper_exchange_rejections_total{code}`: error answers of `/fapi` by Binance error code (a refused
  request, a rate limit, an internal error); injected faults are counted apart;
- `paper_exchange_faults_injected_total{kind}`: faults the fault injector applied (`418`, `429`,
  `5xx`, `lost`, `latency`; timed ones: `outage_5xx`, `outage_refuse`, `outage_hang`, `ban`,
  `late_execution`, `partial_fills`);
- `paper_exchange_ws_connections`, `paper_exchange_open_positions`,
  `paper_exchange_wallet_balance_usdt`: gauges read at scrape time;
- `paper_exchange_liquidations_total`: positions the venue liquidated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "OTHER_PATH", "PaperMetrics"]

# The classic text format every Prometheus version parses (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

OTHER_PATH = "other"
# Sub-millisecond resolution where the paper exchange lives, up to the fault injector's hangs.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _EngineCollector(Collector):
    """Counters the engine keeps as plain ints (no locks on its hot path), read at scrape time."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        return self._families({}, 0)

    def collect(self) -> Iterable[Metric]:
        fills = getattr(self.engine, "fill_counts", None)
        liquidations = getattr(self.engine, "liquidation_count", 0)
        return self._families(
            dict(fills) if isinstance(fills, dict) else {},
            liquidations if isinstance(liquidations, int) else 0,
        )

    @staticmethod
    def _families(fills: dict[str, int], liquidations: int) -> Iterator[Metric]:
        fam = CounterMetricFamily("paper_exchange_fills", "Executions (trades) by symbol.", labels=["symbol"])
        for symbol, n in sorted(fills.items()):
            fam.add_metric([symbol], n)
        yield fam
        yield CounterMetricFamily(
            "paper_exchange_liquidations", "Positions liquidated by the venue.", value=liquidations
        )


def _number(read: Any) -> float:
    """A gauge callback that never breaks a scrape (a fake engine in tests may lack the attribute)."""
    try:
        return float(read())
    except Exception:
        return 0.0


class PaperMetrics:
    """The metrics of one paper exchange: recorders for the server, a registry for `/metrics`."""

    def __init__(self, engine: Any, hub: Any) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "paper_exchange_requests",
            "HTTP requests by method, route and status.",
            ["method", "path", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "paper_exchange_request_seconds",
            "Time to answer one HTTP request, by method and route.",
            ["method", "path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.orders = Counter(
            "paper_exchange_orders",
            "Orders accepted (order and algo-order endpoints).",
            ["symbol", "type", "side"],
            registry=registry,
        )
        self.rejections = Counter(
            "paper_exchange_rejections",
            "Error answers of /fapi by Binance error code (injected faults excluded).",
            ["code"],
            registry=registry,
        )
        self.faults = Counter(
            "paper_exchange_faults_injected",
            "Faults applied by the fault injector.",
            ["kind"],
            registry=registry,
        )
        Gauge("paper_exchange_ws_connections", "Open WebSocket connections.", registry=registry).set_function(
            lambda: _number(lambda: hub.connection_count)
        )
        Gauge(
            "paper_exchange_open_positions", "Symbols with a non-zero position.", registry=registry
        ).set_function(lambda: _number(lambda: sum(1 for p in engine.positions.values() if p.amt)))
        Gauge(
            "paper_exchange_wallet_balance_usdt",
            "Wallet balance of the paper account (USDT).",
            registry=registry,
        ).set_function(lambda: _number(lambda: engine.wallet))
        registry.register(_EngineCollector(engine))
        # label tuple → child: the per-request cost is one dict lookup, not `labels()`' validation
        self._req: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._orders: dict[tuple[str, str, str], Any] = {}
        self._rejections: dict[int, Any] = {}
        self._faults: dict[str, Any] = {}

    # ---- recorders (event loop thread) --------------------------------------------------------
    def request(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (method, path, status)
        pair = self._req.get(key)
        if pair is None:
            pair = self._req[key] = (
                self.requests.labels(method, path, str(status)),
                self.request_seconds.labels(method, path),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def order(self, symbol: str, otype: str, side: str) -> None:
        key = (symbol, otype, side)
        child = self._orders.get(key)
        if child is None:
            child = self._orders[key] = self.orders.labels(symbol, otype, side)
        child.inc()

    def rejection(self, code: int) -> None:
        child = self._rejections.get(code)
        if child is None:
            child = self._rejections[code] = self.rejections.labels(str(code))
        child.inc()

    def fault(self, kind: str) -> None:
        child = self._faults.get(kind)
        if child is None:
            child = self._faults[kind] = self.faults.labels(kind)
        child.inc()

    # ---- exposition ---------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

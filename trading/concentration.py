"""Portfolio risk gates beyond slots and budget: one symbol's share, one correlated cluster's share, heat.

Exposure is NET and signed: a long counts +notional, a short −notional, summed over a symbol or a
cluster. A request ADDS when it makes that net larger in size (|net after| > |net before|); one that
makes it smaller (a short into a net-long cluster, up to flipping it by no more than it was) is not
adding and is never refused by these gates: refusing a hedge would leave the book more exposed than
granting it. A request that adds may bring the net up to the limit and no further, so a cluster that is
within its limit stays within it whatever the order of the grants. Releases are never refused (exits
always work): closing a hedge can leave a cluster above its limit, and then only requests that reduce
it are granted until it is back under.

Limits are shares of the total notional budget (the governor's `max_total_notional_usdt`), not of what
is reserved now: a share of the reserved total would refuse every first position (it holds 100 %) and
would depend on the order of the grants.

Clusters come from the correlation of the symbols' returns: `correlation_clusters` joins two symbols
whose correlation is at least `threshold` and takes the connected groups (single linkage: A~B and B~C
make one cluster {A, B, C} even when A and C correlate less). Only positive correlation joins: a strongly
anti-correlated pair is not a cluster here (in USDT perpetuals nearly everything correlates positively;
a signed clustering is left for when it matters). A symbol with no returns, or a constant series, is a
cluster of its own.

Heat is the number of entries across the whole book in the last `heat_window_seconds`: many symbols
entered at once are one bet on the market whatever their correlation says.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.governor import HOUR_MS, Gate, PortfolioBook
from trading.intents import Side

__all__ = [
    "Clusters",
    "ConcentrationDenial",
    "ConcentrationPolicy",
    "Exposure",
    "check_concentration",
    "clusters_from_matrix",
    "concentration_room",
    "correlation_clusters",
    "correlation_matrix",
    "entry_times",
    "exposures_of",
    "heat",
    "net_exposure",
]

ZERO = Decimal(0)


class Exposure(BaseModel):
    """One reservation as these gates see it (or a candidate request)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str = Field(min_length=1)
    side: Side
    notional_usdt: Decimal = Field(ge=0)

    @property
    def signed(self) -> Decimal:
        return self.notional_usdt * self.side.sign


def exposures_of(book: PortfolioBook) -> list[Exposure]:
    """The book's reservations as exposures."""
    return [
        Exposure(symbol=r.symbol, side=r.side, notional_usdt=r.notional_usdt)
        for _, r in sorted(book.reservations.items())
    ]


def entry_times(book: PortfolioBook) -> list[int]:
    """Every entry the book remembers, across symbols (the book keeps one hour)."""
    return sorted(t for ts in book.executions_ms.values() for t in ts)


class Clusters(BaseModel):
    """Disjoint groups of correlated symbols (each sorted, groups sorted). A symbol in no group is a
    cluster of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: tuple[tuple[str, ...], ...] = ()
    threshold: float | None = None  # the correlation they were joined at, for the record

    @model_validator(mode="after")
    def _disjoint(self) -> Clusters:
        seen: set[str] = set()
        for group in self.groups:
            if seen & set(group):
                raise ValueError(f"clusters overlap on {sorted(seen & set(group))}")
            seen |= set(group)
        return self

    def members(self, symbol: str) -> tuple[str, ...]:
        return next((g for g in self.groups if symbol in g), (symbol,))


class ConcentrationPolicy(BaseModel):
    """Shares are fractions of the total notional budget; None switches a gate off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_symbol_share: Decimal | None = Field(Decimal("0.25"), gt=0, le=1)
    max_cluster_share: Decimal | None = Field(Decimal("0.5"), gt=0, le=1)
    max_entries_per_window: int | None = Field(None, ge=1)
    # The governor's book keeps one hour of entry times: a longer window would silently count less.
    heat_window_seconds: int = Field(900, gt=0, le=HOUR_MS // 1000)

    @model_validator(mode="after")
    def _cluster_covers_symbol(self) -> ConcentrationPolicy:
        if (
            self.max_symbol_share is not None
            and self.max_cluster_share is not None
            and self.max_cluster_share < self.max_symbol_share
        ):
            raise ValueError(
                "max_cluster_share must be at least max_symbol_share (a symbol is its own cluster)"
            )
        return self


class ConcentrationDenial(BaseModel):
    """Which gate refused, why in words, and the figures (the portfolio turns it into a `Denial`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gate: Gate
    reason: str
    members: tuple[str, ...] = ()
    net_before: Decimal = ZERO
    net_after: Decimal = ZERO
    limit: Decimal = ZERO
    room: Decimal = ZERO


# ------------------------------------------------------------------------------------------ correlation
def correlation_matrix(returns: Mapping[str, Sequence[float]]) -> tuple[list[str], list[list[float]]]:
    """Symbols (sorted) and their pairwise Pearson correlations. The series must be aligned (same
    periods, same length, at least 3, finite); lists and numpy arrays alike. A constant series
    correlates with nothing (NaN). Plain Python (the pure core imports only the standard library and
    pydantic): O(symbols² × periods), a fraction of a second for 50 symbols × 500 returns."""
    symbols = sorted(returns)
    if not symbols:
        return [], []
    data = [[float(v) for v in returns[s]] for s in symbols]
    lengths = {len(d) for d in data}
    if len(lengths) != 1:
        raise ValueError(f"return series are not aligned: lengths {sorted(lengths)}")
    n = lengths.pop()
    if n < 3:
        raise ValueError(f"need at least 3 returns per symbol for a correlation, got {n}")
    if not all(math.isfinite(v) for d in data for v in d):
        raise ValueError("return series hold NaN or infinite values")
    centred = []
    for d in data:
        mean = math.fsum(d) / n
        centred.append([v - mean for v in d])
    norms = [math.sqrt(math.fsum(v * v for v in c)) for c in centred]
    size = len(symbols)
    matrix = [[math.nan] * size for _ in range(size)]
    for i in range(size):
        for j in range(i, size):
            if norms[i] == 0 or norms[j] == 0:
                continue  # a constant series: no correlation is defined
            rho = math.fsum(a * b for a, b in zip(centred[i], centred[j], strict=True)) / (
                norms[i] * norms[j]
            )
            matrix[i][j] = matrix[j][i] = max(-1.0, min(1.0, rho))
    return symbols, matrix


def clusters_from_matrix(
    symbols: Sequence[str], matrix: Sequence[Sequence[float]], threshold: float
) -> Clusters:
    """Single linkage: symbols whose correlation is ≥ threshold are joined, transitively."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a correlation in [-1, 1], got {threshold}")
    parent = list(range(len(symbols)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(symbols)):
        for j in range(i + 1, len(symbols)):
            rho = matrix[i][j]
            if not math.isnan(rho) and rho >= threshold:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[str]] = {}
    for i, s in enumerate(symbols):
        groups.setdefault(root(i), []).append(s)
    return Clusters(groups=tuple(sorted(tuple(sorted(g)) for g in groups.values())), threshold=threshold)


def correlation_clusters(returns: Mapping[str, Sequence[float]], threshold: float = 0.8) -> Clusters:
    """Clusters of the symbols from their aligned return series (see the module docstring)."""
    symbols, matrix = correlation_matrix(returns)
    return clusters_from_matrix(symbols, matrix, threshold)


# ------------------------------------------------------------------------------------------------ gates
def net_exposure(exposures: Iterable[Exposure], symbols: Iterable[str]) -> Decimal:
    """Signed net notional of `symbols` (long +, short −)."""
    members = set(symbols)
    return sum((e.signed for e in exposures if e.symbol in members), ZERO)


def heat(entry_times_ms: Iterable[int], now_ms: int, window_seconds: int) -> int:
    """Entries across the book in the window ending at `now_ms` (same convention as the governor)."""
    return sum(1 for t in entry_times_ms if 0 <= now_ms - t < window_seconds * 1000)


def _room(net: Decimal, side: Side, limit: Decimal) -> Decimal:
    """The largest notional on `side` that keeps |net| within max(|net|, limit): a request may always
    bring the net back towards zero, and may add only up to the limit."""
    toward = net * side.sign  # the net in the request's direction (negative: the request reduces it)
    return max(abs(net), limit) - toward


def concentration_room(
    exposures: Sequence[Exposure],
    clusters: Clusters,
    symbol: str,
    side: Side,
    policy: ConcentrationPolicy,
    budget_usdt: Decimal,
) -> tuple[Decimal, Gate | None]:
    """The largest notional a request on `symbol`/`side` may have under the share gates, and the gate
    that limits it (Infinity and None when no share gate is on). The portfolio may shrink a grant to
    it, as it does for the total budget."""
    room, gate = Decimal("Infinity"), None  # no share gate on: no limit from here
    if policy.max_symbol_share is not None:
        net = net_exposure(exposures, (symbol,))
        room, gate = _room(net, side, policy.max_symbol_share * budget_usdt), Gate.SYMBOL_CONCENTRATION
    if policy.max_cluster_share is not None:
        net = net_exposure(exposures, clusters.members(symbol))
        cluster_room = _room(net, side, policy.max_cluster_share * budget_usdt)
        if cluster_room < room:
            room, gate = cluster_room, Gate.CLUSTER_CONCENTRATION
    return room, gate


def check_concentration(
    exposures: Sequence[Exposure],
    clusters: Clusters,
    request: Exposure,
    policy: ConcentrationPolicy,
    budget_usdt: Decimal,
    *,
    entry_times_ms: Iterable[int] = (),
    now_ms: int = 0,
) -> ConcentrationDenial | None:
    """None when `request` passes the heat, symbol-share and cluster-share gates; otherwise the first
    gate that refuses it, with the figures. Does not change anything."""
    if policy.max_entries_per_window is not None:
        n = heat(entry_times_ms, now_ms, policy.heat_window_seconds)
        if n >= policy.max_entries_per_window:
            return ConcentrationDenial(
                gate=Gate.HEAT,
                reason=f"{n} entries across the book in the last {policy.heat_window_seconds} s "
                f"(limit {policy.max_entries_per_window})",
            )
    checks: list[tuple[Gate, tuple[str, ...], Decimal | None, str]] = [
        (Gate.SYMBOL_CONCENTRATION, (request.symbol,), policy.max_symbol_share, "max_symbol_share"),
        (
            Gate.CLUSTER_CONCENTRATION,
            clusters.members(request.symbol),
            policy.max_cluster_share,
            "max_cluster_share",
        ),
    ]
    for gate, members, share, name in checks:
        if share is None:
            continue
        limit = share * budget_usdt
        net = net_exposure(exposures, members)
        after = net + request.signed
        room = _room(net, request.side, limit)
        if request.notional_usdt > room:
            what = request.symbol if gate is Gate.SYMBOL_CONCENTRATION else f"cluster {list(members)}"
            return ConcentrationDenial(
                gate=gate,
                reason=f"{what}: net exposure {net} → {after} USDT with a {request.side.value} of "
                f"{request.notional_usdt} exceeds the limit {limit} ({name} {share} of {budget_usdt}); "
                f"room {room}",
                members=members,
                net_before=net,
                net_after=after,
                limit=limit,
                room=room,
            )
    return None

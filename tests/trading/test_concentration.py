"""Concentration gates: correlation clusters from returns, symbol and cluster shares with direction, heat;
and grants in any order that never take a cluster past its limit."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.concentration import (
    Clusters,
    ConcentrationPolicy,
    Exposure,
    check_concentration,
    clusters_from_matrix,
    concentration_room,
    correlation_clusters,
    correlation_matrix,
    entry_times,
    exposures_of,
    heat,
    net_exposure,
)
from trading.governor import Gate, PortfolioBook, Reservation
from trading.intents import Side

D = Decimal
L, S = Side.LONG, Side.SHORT
BUDGET = D(2000)
POLICY = ConcentrationPolicy()  # symbol 25 % (500), cluster 50 % (1000) of the budget
MAJORS = Clusters(groups=(("BTCUSDT", "ETHUSDT", "SOLUSDT"),))


def x(symbol: str, side: Side, notional: int | str) -> Exposure:
    return Exposure(symbol=symbol, side=side, notional_usdt=D(notional))


# ------------------------------------------------------------------------------------------ correlation
def test_correlation_matrix_known_values() -> None:
    a = [0.01, -0.02, 0.03, 0.0, 0.015]
    symbols, m = correlation_matrix({"B": a, "A": [2 * v for v in a], "C": [-v for v in a], "Z": [0.1] * 5})
    assert symbols == ["A", "B", "C", "Z"]
    assert m[0][1] == pytest.approx(1.0) and m[0][2] == pytest.approx(-1.0)
    assert all(math.isnan(v) for v in m[3])  # a constant series correlates with nothing


def test_correlation_matrix_takes_numpy_arrays_and_matches_numpy() -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    base = rng.normal(0, 0.01, 200)
    returns = {f"S{i}": base * (i % 3 - 1) + rng.normal(0, 0.01, 200) for i in range(6)}
    symbols, m = correlation_matrix(returns)
    expected = np.corrcoef(np.asarray([returns[s] for s in symbols]))
    assert np.allclose(np.asarray(m), expected, atol=1e-12)


def test_correlation_matrix_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="not aligned"):
        correlation_matrix({"A": [0.1, 0.2, 0.3], "B": [0.1, 0.2]})
    with pytest.raises(ValueError, match="at least 3"):
        correlation_matrix({"A": [0.1, 0.2], "B": [0.1, 0.2]})
    with pytest.raises(ValueError, match="NaN"):
        correlation_matrix({"A": [0.1, float("nan"), 0.3]})
    assert correlation_matrix({}) == ([], [])


def test_single_linkage_is_transitive() -> None:
    symbols = ["A", "B", "C", "D"]
    m = [
        [1.0, 0.9, 0.5, 0.1],
        [0.9, 1.0, 0.85, 0.0],
        [0.5, 0.85, 1.0, -0.95],
        [0.1, 0.0, -0.95, 1.0],
    ]
    c = clusters_from_matrix(symbols, m, 0.8)
    assert c.groups == (("A", "B", "C"), ("D",))  # A~B, B~C joins A and C; anti-correlation does not join
    assert c.members("C") == ("A", "B", "C") and c.members("XYZ") == ("XYZ",)
    assert clusters_from_matrix(symbols, m, 0.95).groups == (("A",), ("B",), ("C",), ("D",))
    with pytest.raises(ValueError, match="threshold"):
        clusters_from_matrix(symbols, m, 1.5)


def test_clusters_from_returns() -> None:
    base = [0.01, -0.02, 0.03, 0.0, 0.015, -0.01]
    noise = [0.002, -0.001, 0.0, 0.001, -0.002, 0.001]
    other = [0.0, 0.01, -0.01, 0.02, -0.02, 0.0]
    returns = {"BTC": base, "ETH": [b + n for b, n in zip(base, noise, strict=True)], "XRP": other}
    assert correlation_clusters(returns, 0.8).groups == (("BTC", "ETH"), ("XRP",))


def test_clusters_must_be_disjoint() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Clusters(groups=(("A", "B"), ("B", "C")))


# ---------------------------------------------------------------------------------------------- gates
def test_symbol_share() -> None:
    book = [x("BTCUSDT", L, 400)]
    assert check_concentration(book, Clusters(), x("ETHUSDT", L, 500), POLICY, BUDGET) is None
    denial = check_concentration([], Clusters(), x("ETHUSDT", L, 501), POLICY, BUDGET)
    assert denial is not None and denial.gate is Gate.SYMBOL_CONCENTRATION
    assert (
        denial.limit == D(500) and denial.room == D(500) and "max_symbol_share 0.25 of 2000" in denial.reason
    )


def test_cluster_share_names_members_and_figures() -> None:
    book = [x("BTCUSDT", L, 500), x("ETHUSDT", L, 400), x("XRPUSDT", L, 500)]
    denial = check_concentration(book, MAJORS, x("SOLUSDT", L, 200), POLICY, BUDGET)
    assert denial is not None and denial.gate is Gate.CLUSTER_CONCENTRATION
    assert denial.members == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert (denial.net_before, denial.net_after, denial.limit, denial.room) == (
        D(900),
        D(1100),
        D(1000),
        D(100),
    )
    assert "['BTCUSDT', 'ETHUSDT', 'SOLUSDT']" in denial.reason and "900 → 1100" in denial.reason
    assert check_concentration(book, MAJORS, x("SOLUSDT", L, 100), POLICY, BUDGET) is None
    # XRP is outside the cluster: only its own share counts.
    assert check_concentration(book, MAJORS, x("DOGEUSDT", L, 500), POLICY, BUDGET) is None


def test_direction_a_hedge_is_not_adding() -> None:
    book = [x("BTCUSDT", L, 500), x("ETHUSDT", L, 500)]  # the cluster is at its limit, net long 1000
    assert check_concentration(book, MAJORS, x("SOLUSDT", L, 10), POLICY, BUDGET) is not None
    assert check_concentration(book, MAJORS, x("SOLUSDT", S, 500), POLICY, BUDGET) is None
    # Over the limit (a hedge was released): a reducing request is still granted.
    over = [x("BTCUSDT", L, 500), x("ETHUSDT", L, 500), x("SOLUSDT", L, 300)]
    assert check_concentration(over, MAJORS, x("SOLUSDT", S, 200), POLICY, BUDGET) is None
    # Flipping the net past the limit on the other side is adding.
    short = [x("BTCUSDT", S, 300)]
    assert concentration_room(
        short, MAJORS, "ETHUSDT", L, POLICY.model_copy(update={"max_symbol_share": None}), BUDGET
    ) == (
        D(1300),
        Gate.CLUSTER_CONCENTRATION,
    )


def test_room_names_the_tighter_gate() -> None:
    book = [x("BTCUSDT", L, 800)]
    policy = ConcentrationPolicy(max_symbol_share=D("0.5"), max_cluster_share=D("0.5"))
    assert concentration_room(book, MAJORS, "ETHUSDT", L, policy, BUDGET) == (
        D(200),
        Gate.CLUSTER_CONCENTRATION,
    )
    assert concentration_room(book, MAJORS, "ETHUSDT", S, policy, BUDGET) == (
        D(1000),
        Gate.SYMBOL_CONCENTRATION,
    )
    off = ConcentrationPolicy(max_symbol_share=None, max_cluster_share=None)
    room, gate = concentration_room(book, MAJORS, "ETHUSDT", L, off, BUDGET)
    assert room == D("Infinity") and gate is None


def test_heat_gate() -> None:
    policy = ConcentrationPolicy(max_entries_per_window=3, heat_window_seconds=600)
    times = [0, 100_000, 500_000]
    assert heat(times, 599_999, 600) == 3 and heat(times, 600_000, 600) == 2
    denial = check_concentration(
        [], Clusters(), x("BTCUSDT", L, 10), policy, BUDGET, entry_times_ms=times, now_ms=500_001
    )
    assert denial is not None and denial.gate is Gate.HEAT and "3 entries" in denial.reason
    assert (
        check_concentration(
            [], Clusters(), x("BTCUSDT", L, 10), policy, BUDGET, entry_times_ms=times, now_ms=600_000
        )
        is None
    )


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_cluster_share"):
        ConcentrationPolicy(max_symbol_share=D("0.5"), max_cluster_share=D("0.3"))
    with pytest.raises(ValueError, match="heat_window_seconds"):
        ConcentrationPolicy(heat_window_seconds=7200)


def test_from_the_governor_book() -> None:
    book = PortfolioBook(
        reservations={
            "h2": Reservation(
                holder_id="h2", symbol="ETHUSDT", side=S, notional_usdt=D(50), reserved_at_ms=0
            ),
            "h1": Reservation(
                holder_id="h1", symbol="BTCUSDT", side=L, notional_usdt=D(100), reserved_at_ms=0
            ),
        },
        executions_ms={"BTCUSDT": [5, 1], "ETHUSDT": [3]},
    )
    assert exposures_of(book) == [x("BTCUSDT", L, 100), x("ETHUSDT", S, 50)]
    assert net_exposure(exposures_of(book), MAJORS.members("BTCUSDT")) == D(50)
    assert entry_times(book) == [1, 3, 5]


# ------------------------------------------------------------------------------------------- properties
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "BNBUSDT"]
cluster_sets = st.sampled_from(
    [
        Clusters(),
        MAJORS,
        Clusters(groups=(("BTCUSDT", "ETHUSDT"), ("DOGEUSDT", "SOLUSDT", "XRPUSDT"))),
        Clusters(groups=(tuple(sorted(SYMBOLS)),)),
    ]
)
requests = st.lists(
    st.tuples(st.sampled_from(SYMBOLS), st.sampled_from([L, S]), st.integers(1, 900)), min_size=1, max_size=30
)
shares = st.sampled_from([None, D("0.1"), D("0.25"), D("0.5"), D(1)])


def _within(book: list[Exposure], clusters: Clusters, policy: ConcentrationPolicy) -> bool:
    for symbol in SYMBOLS:
        if (
            policy.max_symbol_share is not None
            and abs(net_exposure(book, (symbol,))) > policy.max_symbol_share * BUDGET
        ):
            return False
        members = clusters.members(symbol)
        if (
            policy.max_cluster_share is not None
            and abs(net_exposure(book, members)) > policy.max_cluster_share * BUDGET
        ):
            return False
    return True


def _policy(symbol_share: D | None, cluster_share: D | None) -> ConcentrationPolicy:
    if symbol_share is not None and cluster_share is not None and cluster_share < symbol_share:
        symbol_share, cluster_share = cluster_share, symbol_share
    return ConcentrationPolicy(max_symbol_share=symbol_share, max_cluster_share=cluster_share)


@settings(max_examples=200, deadline=None)
@given(requests, cluster_sets, shares, shares, st.randoms(use_true_random=False), st.booleans())
def test_no_order_of_grants_takes_a_cluster_past_its_limit(
    reqs, clusters: Clusters, symbol_share, cluster_share, rnd, shrink: bool
) -> None:
    policy = _policy(symbol_share, cluster_share)
    for order in (reqs, rnd.sample(reqs, len(reqs))):
        book: list[Exposure] = []
        for symbol, side, notional in order:
            request = x(symbol, side, notional)
            if shrink:  # the portfolio may shrink a grant to the room, as for the total budget
                room, _ = concentration_room(book, clusters, symbol, side, policy, BUDGET)
                if room <= 0:
                    continue
                request = x(symbol, side, min(D(notional), room))
            denial = check_concentration(book, clusters, request, policy, BUDGET)
            if denial is None:
                book.append(request)
            else:
                assert denial.net_after == denial.net_before + request.signed
                assert abs(denial.net_after) > max(abs(denial.net_before), denial.limit)
            assert _within(book, clusters, policy)


@settings(max_examples=200, deadline=None)
@given(requests, cluster_sets, st.lists(st.integers(0, 29), max_size=10))
def test_after_a_release_only_reducing_requests_pass(reqs, clusters: Clusters, releases) -> None:
    """A release may leave a cluster over its limit; then a grant never makes it larger."""
    policy = ConcentrationPolicy(max_symbol_share=D("0.25"), max_cluster_share=D("0.4"))
    book: list[Exposure] = []
    for i, (symbol, side, notional) in enumerate(reqs):
        if i in releases and book:
            book.pop(i % len(book))
        request = x(symbol, side, notional)
        before = abs(net_exposure(book, clusters.members(symbol)))
        if check_concentration(book, clusters, request, policy, BUDGET) is None:
            book.append(request)
            after = abs(net_exposure(book, clusters.members(symbol)))
            assert after <= max(before, policy.max_cluster_share * BUDGET)  # type: ignore[operator]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.floats(-0.1, 0.1, allow_nan=False), min_size=8, max_size=8), min_size=1, max_size=6),
    st.floats(0.0, 0.99),
)
def test_clusters_partition_and_join_every_correlated_pair(series, threshold: float) -> None:
    returns = {f"S{i}": s for i, s in enumerate(series)}
    symbols, m = correlation_matrix(returns)
    clusters = clusters_from_matrix(symbols, m, threshold)
    flat = [s for g in clusters.groups for s in g]
    assert sorted(flat) == symbols  # every symbol in exactly one cluster
    for i, a in enumerate(symbols):
        for j, b in enumerate(symbols):
            if i != j and not math.isnan(m[i][j]) and m[i][j] >= threshold:
                assert clusters.members(a) == clusters.members(b)

"""The universe ranking: the top N symbols by 24 h quote volume among the allowed ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trading.universe import top_by_volume

VOLUMES = {"BTCUSDT": 9e9, "ETHUSDT": 5e9, "SOLUSDT": 2e9, "DOGEUSDT": 2e9, "XRPUSDT": 1e9}


def test_highest_volume_first_and_cut_at_n() -> None:
    assert top_by_volume(VOLUMES, ["*"], 3) == ["BTCUSDT", "ETHUSDT", "DOGEUSDT"]


def test_equal_volumes_are_ordered_by_name() -> None:
    assert top_by_volume(VOLUMES, ["*"], 4)[2:] == ["DOGEUSDT", "SOLUSDT"]


def test_only_allowed_symbols_are_ranked() -> None:
    assert top_by_volume(VOLUMES, ["XRPUSDT", "ETHUSDT", "ADAUSDT"], 10) == ["ETHUSDT", "XRPUSDT"]


def test_star_allows_every_symbol_even_beside_names() -> None:
    assert top_by_volume(VOLUMES, ["SOLUSDT", "*"], 10) == top_by_volume(VOLUMES, ["*"], 10)


def test_nothing_to_rank() -> None:
    assert top_by_volume({}, ["*"], 5) == []
    assert top_by_volume(VOLUMES, [], 5) == []
    assert top_by_volume(VOLUMES, ["*"], 0) == []


@given(
    st.dictionaries(st.from_regex(r"[A-Z]{2,5}USDT", fullmatch=True), st.floats(0, 1e12), max_size=30),
    st.integers(0, 40),
)
def test_no_unranked_symbol_outsells_a_ranked_one(volumes: dict[str, float], n: int) -> None:
    top = top_by_volume(volumes, ["*"], n)
    assert len(top) == min(n, len(volumes))
    assert [volumes[s] for s in top] == sorted((volumes[s] for s in top), reverse=True)
    rest = set(volumes) - set(top)
    assert all(volumes[r] <= volumes[t] for r in rest for t in top)

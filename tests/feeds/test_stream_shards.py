"""The price watcher's symbols spread over WebSocket connections (feeds/stream_shards.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.stream_shards import StreamShards

SYMBOLS = [f"S{i:03d}USDT" for i in range(40)]


def test_symbols_fill_a_connection_before_the_next_one_opens() -> None:
    shards = StreamShards(per_connection=3)
    groups = shards.assign(SYMBOLS[:7])
    assert [len(g) for g in groups] == [3, 3, 1]
    assert set().union(*groups) == set(SYMBOLS[:7])


def test_a_watched_symbol_stays_on_its_connection_and_freed_room_is_reused() -> None:
    shards = StreamShards(per_connection=2)
    before = [set(g) for g in shards.assign(["A", "B", "C", "D"])]
    after = shards.assign(["A", "C", "D", "E"])  # B leaves, E comes
    assert after[0] == {"A", "E"} and after[1] == before[1]
    assert shards.assign([]) == [set(), set()]  # emptied connections keep their place


def test_a_connection_holds_at_least_one_symbol() -> None:
    with pytest.raises(ValueError, match="per_connection must be at least 1"):
        StreamShards(per_connection=0)


@given(st.lists(st.sets(st.sampled_from(SYMBOLS)), min_size=1, max_size=12), st.integers(1, 9))
def test_every_symbol_is_on_exactly_one_connection_with_room_and_none_moves(
    steps: list[set[str]], per_connection: int
) -> None:
    shards = StreamShards(per_connection)
    where: dict[str, int] = {}
    peak = 0
    for wanted in steps:
        groups = shards.assign(wanted)
        peak = max(peak, len(wanted))
        placed = {sym: k for k, group in enumerate(groups) for sym in group}
        assert sum(len(g) for g in groups) == len(wanted) == len(placed)
        assert set(placed) == wanted
        assert all(len(g) <= per_connection for g in groups)
        assert all(placed[sym] == k for sym, k in where.items() if sym in wanted)  # none moved
        assert len(groups) <= -(-peak // per_connection)  # a connection opens only when all are full
        where = placed

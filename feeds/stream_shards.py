"""Which WebSocket connection watches which symbol: pure, no I/O.

Binance takes at most 1,024 streams on one connection, and the price watcher subscribes two per symbol
on its `market` connection (aggTrade and markPrice): one connection watched at most 512 symbols, and
the rest were left out with a warning (bench.scale's 5,000 open positions had 4,488 symbols with no
market stream: their exits waited for the position's own mark check). `StreamShards` spreads the
symbols over as many connections as they need. A symbol stays on its connection for as long as it is
watched (moving it would drop its stream for a moment), a new one goes to the first connection with
room, and a connection that empties keeps its place for the next ones.
"""

from __future__ import annotations

from collections.abc import Iterable


class StreamShards:
    """Symbols on connections of at most `per_connection` symbols each."""

    def __init__(self, per_connection: int) -> None:
        if per_connection < 1:
            raise ValueError(f"per_connection must be at least 1, got {per_connection}")
        self.per_connection = per_connection
        self.shards: list[set[str]] = []
        self._where: dict[str, int] = {}

    def assign(self, symbols: Iterable[str]) -> list[set[str]]:
        """The symbols each connection watches, for this set of symbols (one set per connection; the
        list only grows)."""
        wanted = set(symbols)
        for sym in [s for s in self._where if s not in wanted]:
            self.shards[self._where.pop(sym)].discard(sym)
        first_free = 0
        for sym in sorted(wanted - self._where.keys()):
            while first_free < len(self.shards) and len(self.shards[first_free]) >= self.per_connection:
                first_free += 1
            if first_free == len(self.shards):
                self.shards.append(set())
            self.shards[first_free].add(sym)
            self._where[sym] = first_free
        return self.shards

"""A journal writer run as its own process by the kill tests: writes trades `bt:1..N`, and in the
`hang-*` modes stops at a chosen point (after its commit, or halfway through its transaction) and
waits to be killed there, so the test can SIGKILL it at exactly that moment."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

from journal.store import open_journal
from tests.trading.test_records import rec
from trading.records import TradeRecord


def main(url: str, home: str, n: int, mode: str) -> None:
    journal = open_journal(url or None, Path(home))
    trades = [rec(i, f"{i}.25", day=i / 10) for i in range(1, n + 1)]

    def hang(marker: str) -> None:
        print(marker, flush=True)
        time.sleep(600)  # until killed

    if mode == "hang-before-commit":

        def batch() -> Iterator[TradeRecord]:
            yield from trades[: n // 2]
            hang("inserted, not committed")  # the rows above are inserted inside the open transaction

        journal.record_many(batch())
    elif mode == "hang-after-commit":
        for t in trades:
            journal.record(t)
        hang("committed, not acknowledged")
    else:
        print(f"new {journal.record_many(trades)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

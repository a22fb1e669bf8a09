"""The price watcher's trigger table: pure, no I/O, clock injected.

Each open position publishes its *next trigger levels* (the nearest price above and below the
current one at which its decision would change) to the Redis hash `quantum:exit:levels`, one field
per position workflow id, value JSON::

    {"workflow_id": "...", "symbol": "BTCUSDT", "above": "61234.5" | null, "below": "58800.0" | null,
     "version": 7}

`LevelsTable` holds those entries and answers, for one tick, which positions must be signalled:
a tick at `price` crosses a position when `price >= above` or `price <= below`. The test is on the
level, not on an edge between two ticks, so the first tick after a (re)start triggers every position
whose price is already past a level ("a restarted watcher catches up within one tick").

Dedupe: after a `(workflow, version)` was signalled it is not signalled again until its levels
change (new version) or, as a safety resend, `resend_after_s` later (the workflow has not republished
by then: the signal was lost, or the workflow is busy). A failed send may be retried after
`retry_after_s`; a workflow that no longer exists is not signalled again until it publishes anew.

Per symbol the levels are kept in two sorted lists, so a tick costs two bisections plus the work for
positions actually crossed, whatever the number of positions watched.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

__all__ = ["Crossing", "Levels", "LevelsError", "LevelsTable", "parse_price"]

LEVELS_KEY = "quantum:exit:levels"
LEVELS_CHANNEL = "quantum:exit:levels:changed"


class LevelsError(ValueError):
    """A levels entry that cannot be used (bad JSON, missing field, bad price)."""


def parse_price(value: Any) -> Decimal | None:
    """A positive finite Decimal from a string / number, None for None; LevelsError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        raise LevelsError(f"price {value!r} is not a number")
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise LevelsError(f"price {value!r} is not a number") from exc
    if not d.is_finite() or d <= 0:
        raise LevelsError(f"price {value!r} must be positive and finite")
    return d


@dataclass(frozen=True, slots=True)
class Levels:
    workflow_id: str
    symbol: str
    above: Decimal | None
    below: Decimal | None
    version: int

    @classmethod
    def from_dict(cls, obj: Any, *, field: str | None = None) -> Levels:
        if not isinstance(obj, dict):
            raise LevelsError("levels entry is not a JSON object")
        wf = obj.get("workflow_id", field)
        if not isinstance(wf, str) or not wf:
            raise LevelsError("workflow_id missing")
        if field is not None and wf != field:
            raise LevelsError(f"workflow_id {wf!r} differs from its hash field {field!r}")
        sym = obj.get("symbol")
        if not isinstance(sym, str) or not sym.isalnum():
            raise LevelsError(f"symbol {sym!r} is not like BTCUSDT")
        version = obj.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise LevelsError(f"version {version!r} is not an integer")
        return cls(wf, sym.upper(), parse_price(obj.get("above")), parse_price(obj.get("below")), version)

    @classmethod
    def from_json(cls, raw: str | bytes, *, field: str | None = None) -> Levels:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LevelsError(f"levels entry is not JSON: {exc}") from exc
        return cls.from_dict(obj, field=field)

    def to_json(self) -> str:
        return json.dumps(
            {
                "workflow_id": self.workflow_id,
                "symbol": self.symbol,
                "above": None if self.above is None else str(self.above),
                "below": None if self.below is None else str(self.below),
                "version": self.version,
            },
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class Crossing:
    """One signal to send: `workflow_id`'s levels `version` were crossed by `price`."""

    workflow_id: str
    symbol: str
    price: Decimal
    version: int
    side: Literal["above", "below"]
    level: Decimal
    resend: bool  # True when this (workflow, version) was signalled before (safety resend / retry)


@dataclass(slots=True)
class _Sent:
    version: int
    not_before: float  # monotonic time before which this version is not signalled again


class _SymbolBook:
    """Sorted levels of one symbol: `above` ascending, `below` ascending (crossed from the top)."""

    __slots__ = ("above", "below")

    def __init__(self) -> None:
        self.above: list[tuple[Decimal, str]] = []
        self.below: list[tuple[Decimal, str]] = []

    def add(self, lv: Levels) -> None:
        if lv.above is not None:
            bisect.insort(self.above, (lv.above, lv.workflow_id))
        if lv.below is not None:
            bisect.insort(self.below, (lv.below, lv.workflow_id))

    def discard(self, lv: Levels) -> None:
        for lst, price in ((self.above, lv.above), (self.below, lv.below)):
            if price is None:
                continue
            key = (price, lv.workflow_id)
            i = bisect.bisect_left(lst, key)
            if i < len(lst) and lst[i] == key:
                del lst[i]

    def __bool__(self) -> bool:
        return bool(self.above or self.below)


class LevelsTable:
    """Every watched position's levels, and the crossing / dedupe decision for each tick."""

    def __init__(
        self,
        *,
        resend_after_s: float = 2.0,
        retry_after_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resend_after_s = resend_after_s
        self.retry_after_s = retry_after_s
        self.clock = clock
        self._by_wf: dict[str, Levels] = {}
        self._by_symbol: dict[str, _SymbolBook] = {}
        self._count_by_symbol: dict[str, int] = {}
        self._sent: dict[str, _Sent] = {}
        self._gone: dict[str, int] = {}  # workflow id -> version it was found gone at

    # ---- table -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._by_wf)

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._by_wf

    def get(self, workflow_id: str) -> Levels | None:
        return self._by_wf.get(workflow_id)

    def entries(self) -> list[Levels]:
        return list(self._by_wf.values())

    def symbols(self) -> set[str]:
        """Symbols with at least one watched position (the streams to subscribe to)."""
        return set(self._count_by_symbol)

    def upsert(self, lv: Levels) -> None:
        """Replace `lv.workflow_id`'s levels (Redis holds the truth: the newest write wins)."""
        old = self._by_wf.get(lv.workflow_id)
        if old is not None:
            if old == lv:
                return
            self._unindex(old)
        self._by_wf[lv.workflow_id] = lv
        self._by_symbol.setdefault(lv.symbol, _SymbolBook()).add(lv)
        self._count_by_symbol[lv.symbol] = self._count_by_symbol.get(lv.symbol, 0) + 1
        gone = self._gone.get(lv.workflow_id)
        if gone is not None and gone != lv.version:
            del self._gone[lv.workflow_id]

    def remove(self, workflow_id: str) -> Levels | None:
        old = self._by_wf.pop(workflow_id, None)
        if old is not None:
            self._unindex(old)
        self._sent.pop(workflow_id, None)
        self._gone.pop(workflow_id, None)
        return old

    def replace_all(self, levels: Iterable[Levels]) -> None:
        """Load the whole table (start, reconnect). Dedupe state of unchanged versions is kept, so a
        reload does not resend what was just sent."""
        fresh = {lv.workflow_id: lv for lv in levels}
        for wf in list(self._by_wf):
            if wf not in fresh:
                self.remove(wf)
        for lv in fresh.values():
            self.upsert(lv)

    def _unindex(self, lv: Levels) -> None:
        book = self._by_symbol.get(lv.symbol)
        if book is not None:
            book.discard(lv)
            if not book:
                del self._by_symbol[lv.symbol]
        n = self._count_by_symbol.get(lv.symbol, 0) - 1
        if n > 0:
            self._count_by_symbol[lv.symbol] = n
        else:
            self._count_by_symbol.pop(lv.symbol, None)

    # ---- decision ----------------------------------------------------------------------------
    def evaluate(self, symbol: str, price: Decimal, now: float | None = None) -> list[Crossing]:
        """The positions of `symbol` this tick must signal (each at most once), marked as sent."""
        book = self._by_symbol.get(symbol)
        if book is None:
            return []
        if now is None:
            now = self.clock()
        out: list[Crossing] = []
        # above: every level <= price is crossed (a prefix of the ascending list)
        above = book.above
        n = bisect.bisect_right(above, (price, "\U0010ffff"))
        for i in range(n):
            level, wf = above[i]
            c = self._decide(wf, symbol, price, "above", level, now)
            if c is not None:
                out.append(c)
        # below: every level >= price is crossed (a suffix of the ascending list)
        below = book.below
        start = bisect.bisect_left(below, (price, ""))
        for i in range(start, len(below)):
            level, wf = below[i]
            c = self._decide(wf, symbol, price, "below", level, now)
            if c is not None:
                out.append(c)
        return out

    def _decide(
        self,
        wf: str,
        symbol: str,
        price: Decimal,
        side: Literal["above", "below"],
        level: Decimal,
        now: float,
    ) -> Crossing | None:
        lv = self._by_wf[wf]
        if self._gone.get(wf) == lv.version:
            return None
        sent = self._sent.get(wf)
        resend = False
        if sent is not None and sent.version == lv.version:
            if now < sent.not_before:
                return None
            resend = True
        self._sent[wf] = _Sent(lv.version, now + self.resend_after_s)
        return Crossing(wf, symbol, price, lv.version, side, level, resend)

    def send_failed(
        self, workflow_id: str, version: int, *, gone: bool = False, now: float | None = None
    ) -> None:
        """A signal could not be delivered: retry after `retry_after_s`, or, when the workflow no
        longer exists, not until it publishes a new version."""
        if now is None:
            now = self.clock()
        if gone:
            if workflow_id in self._by_wf:
                self._gone[workflow_id] = version
            return
        sent = self._sent.get(workflow_id)
        if sent is not None and sent.version == version:
            sent.not_before = min(sent.not_before, now + self.retry_after_s)

"""The replay's side of the risk layer (a mixin of `backtest.engine.Replay`): the decision with the
risk gates, equity marks for the emergency stop, its checks while entries wait for it, the refresh of
clusters and allocation targets while entries wait for one, and the emergency flatten at HALTED.

Events of the book (not of one symbol) go through the same heap as entries and exits; in one bar they
come first: the emergency stop's check and a refresh at the open, then a flatten at the open, then
entries, then managing what is held."""

from __future__ import annotations

import heapq
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np

from backtest.costs import funding_payment
from backtest.result import GateRecord
from backtest.risk import RiskTrack
from trading.emergency import Transition, allows_entries, must_flatten
from trading.governor import Decision, Gate, ReservationRequest, decide

if TYPE_CHECKING:
    from backtest.config import BacktestConfig
    from trading.governor import PortfolioBook

ESS_CHECK, REFRESH, FLATTEN = -3, -2, -1  # heap kinds, before ENTRY (0) and MANAGE (1)
RISK_GATES = frozenset(
    {
        Gate.EMERGENCY,
        Gate.SYMBOL_PROTECTION,
        Gate.HEAT,
        Gate.SYMBOL_CONCENTRATION,
        Gate.CLUSTER_CONCENTRATION,
        Gate.ALLOCATION,
    }
)


def _dec(x: float) -> Decimal:
    return Decimal(repr(x))


class RiskReplay:
    """Needs the replay's state; see `backtest.engine.Replay`."""

    cfg: BacktestConfig
    book: PortfolioBook
    risk: RiskTrack | None
    held: dict[int, Any]
    heap: list[tuple[int, int, int]]
    t: np.ndarray
    n: int
    _o: list[list[float]]
    cash: list[tuple[int, float]]
    cuts: list[GateRecord]
    ess_parked: set[int]
    market_parked: set[int]
    _pending: set[int]
    _marked_ms: int
    _cash_total: float
    _bar_ms: int
    _funding_set: set[int]
    # and its methods `_schedule_entry`, `_fill_close`, `_finish`

    def _decide(self, req: ReservationRequest, j: int, now: int) -> Decision:
        """The portfolio's decision: `decide` alone, or with the risk layer's gates after it."""
        if self.risk is None:
            return decide(self.book, self.cfg.policy, req, now)
        if self.risk.wants_equity and self._marked_ms != now:  # one equity mark per bar, before its entries
            self._marked_ms = now
            self._ess_moved(self.risk.mark(self._equity_at(j), now), j)
        verdict = self.risk.assess(self.book, req, now)
        for cut in verdict.cuts:
            self.cuts.append(
                GateRecord(
                    now,
                    req.symbol,
                    req.side.value,
                    req.notional_usdt,
                    cut.gate.value,
                    cut.reason,
                    cut.to_usdt,
                )
            )
        return verdict.decision

    def _flow(self, bar: int, amount: float) -> None:
        self.cash.append((bar, amount))
        self._cash_total += amount

    def _equity_at(self, i: int) -> float:
        """Cash so far plus the open positions marked at bar i's open (what is known at that moment)."""
        equity = float(self.cfg.start_balance) + self._cash_total
        for p in self.held.values():
            _, qty, cost = p.segments[-1]
            if qty > 0:
                equity += p.side.sign * (self._o[p.sym][i] * qty - cost)
        return equity

    def _book_event_at(self, kind: int, at_ms: int) -> None:
        """One pending ESS_CHECK or REFRESH at a time, at the first bar opening at or after `at_ms`."""
        if kind in self._pending:
            return
        bar = int(np.searchsorted(self.t, at_ms, side="left"))
        if bar < self.n:
            self._pending.add(kind)
            heapq.heappush(self.heap, (bar, kind, -1))

    def _book_event(self, kind: int, s: int, i: int) -> None:
        assert self.risk is not None
        now = int(self.t[i])
        if kind == FLATTEN:
            p = self.held.get(s)
            if p is not None:
                self._flatten(p, i)
            return
        self._pending.discard(kind)
        if kind == REFRESH:
            self.risk.refresh(now)
            for k in sorted(self.market_parked):
                self._schedule_entry(k, i)
            self.market_parked.clear()
            return
        # ESS_CHECK: time passed; the operator may be back
        moved = self.risk.operator_resume(now) if self.risk.operator_resume_due(now) else []
        self._marked_ms = now
        self._ess_moved(moved + self.risk.mark(self._equity_at(i), now), i)
        if self.ess_parked and not allows_entries(self.risk.state.ess.state):
            self._book_event_at(ESS_CHECK, self.risk.next_ess_check_ms(now, self._bar_ms))

    def _ess_moved(self, moved: list[Transition], bar: int) -> None:
        """Act on the emergency stop's transitions; `bar` is the first bar whose open comes after them
        (the same bar for a check at its open, the next one after a close inside a bar). HALTED
        flattens every position at that open; a state that allows entries again wakes the symbols
        waiting for it."""
        if not moved:
            return
        assert self.risk is not None
        state = self.risk.state.ess.state
        if must_flatten(state) and bar < self.n:
            for s in sorted(self.held):
                heapq.heappush(self.heap, (bar, FLATTEN, s))
        if allows_entries(state) and self.ess_parked:
            for s in sorted(self.ess_parked):
                self._schedule_entry(s, bar)
            self.ess_parked.clear()

    def _flatten(self, p: Any, i: int) -> None:
        """The portfolio's emergency flatten: the position closes at the bar's open, as the workflow's
        market order would (funding due at that open is paid first, as in `_manage`)."""
        if i in self._funding_set and p.opened_ms < self.t[i]:
            pay = funding_payment(p.venue, _dec(self._o[p.sym][i]), self.cfg.costs)
            p.funding += pay
            self._flow(i, float(pay))
        self._fill_close(p, i, p.tally.open_qty, _dec(self._o[p.sym][i]), "emergency_flatten", "portfolio")
        self._finish(p, i)

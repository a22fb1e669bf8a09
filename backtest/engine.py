"""The replay: history through the same pure functions the workflows call, jumping decision to decision.

Per symbol the replay is either flat (waiting for a signal the portfolio's gates allow) or holding one
position. A position publishes its trigger levels (`trading.exit_policy.trigger_levels`, the contract
the live price watcher uses); `backtest.search.first_cross` finds the first later bar whose high / low
crosses one, bounded by the next funding time and the time exit. Only that bar is looked at in Python.

The order of calls copies `workflows/position.py`: `decide` / `apply_grant` (the portfolio) → the entry
at the mark → `resolve_profile` → `initial_state` → `evaluate` repeated at one price until it returns
nothing (`_apply_exit_policies`) → `release` with the cooldown. Fills, margin, funding and liquidation
use the paper venue's arithmetic (`backtest.costs`).

Bar rules (the path inside a bar is unknown, so these are conservative and stated in the report):
- a signal decided at bar i's close enters at bar i+1's open, at the open price (plus slippage);
- a bar that opens beyond a level is decided at its open price (a gap); otherwise a level is decided at
  its own price, then one tick beyond it, then at the bar's extreme, whichever first changes the state
  (never at a price outside the bar's low and high);
- within a bar the adverse side (stop, emergency, liquidation) is checked first, and again after every
  decision, so a bar that crosses both a stop-side and a target-side level takes the stop;
- a gap beyond the exchange's hard stop is filled by that stop at the open (reason `hard_stop`; the
  paper venue triggers resting stops before it checks liquidations); one beyond the isolated
  liquidation price only is the venue's liquidation at that price, with its capped fee;
- funding is paid on positions held at every funding time (bar opens on the interval grid), at the open;
  where the data folder has a symbol's funding history (`binance-futures-<SYMBOL>-funding.csv.gz`),
  its funding times and rates replace the grid and the constant inside the history's range (a funding
  time that is no bar's open, inside a coarser bar, is not charged, as on the grid);
- positions still open at the last bar are closed at its close (reason `end_of_data`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from backtest.config import BacktestConfig
from backtest.costs import (
    apply_fill,
    funding_payment,
    liq_price,
    liquidation_fee,
    taker_fee,
    taker_price,
)
from backtest.replay_risk import ESS_CHECK, REFRESH, RISK_GATES, RiskReplay
from backtest.result import BacktestResult, GateRecord, Trade
from backtest.risk import ESS_WAIT, NEVER, PARK, RiskTrack
from backtest.search import first_cross
from signals.data import AlignedKlines, FundingRates, timeframe_ms
from trading.exit_policy import (
    ExitState,
    evaluate,
    initial_state,
    resolve_profile,
    trigger_levels,
)
from trading.exit_profile import ExitProfile
from trading.exits import entry_quantity
from trading.governor import (
    FIVE_MIN_MS,
    HOUR_MS,
    Denial,
    Gate,
    PortfolioBook,
    ReservationRequest,
    adjust,
    apply_grant,
    release,
)
from trading.instruments import DEFAULT_RULES, SymbolRules
from trading.intents import Side, TradeIntent
from trading.margin import Position
from trading.pnl import Fill, PositionTally

D = Decimal
ZERO = D(0)
INF = float("inf")
SCAN_BARS = 8
MAX_STEPS_PER_BAR = 256  # every step consumes a level or moves the best price; this is only a guard
ENTRY, MANAGE = 0, 1  # in one bar, entries at the open come before managing what is held (and book
# events before both: backtest/replay_risk.py)


def dec(x: float) -> Decimal:
    """A bar price as the decimal it was written as (the shortest repr round-trips the CSV's text)."""
    return Decimal(repr(x))


@dataclass
class SignalSet:
    """Per symbol and bar: the side decided at that bar's close, and what the intent would carry."""

    side: np.ndarray  # int8 [symbols, bars]: +1 long, -1 short, 0 none
    name: str = "every-bar"
    kill_score: np.ndarray | None = None  # float [symbols, bars]
    confidence: np.ndarray | None = None  # float [symbols, bars]
    regime: np.ndarray | None = None  # str [symbols, bars]
    model_version: str | None = None
    # The intent a signal becomes, as the signal layer would build it (size, leverage, exits), or None
    # to skip the bar: (symbol index, signal bar) → intent. Without it: the config's size and exits.
    intent: Callable[[int, int], TradeIntent | None] | None = None


@dataclass
class _Held:
    """One open position in the replay (the state the position workflow would hold)."""

    sym: int
    no: int
    holder: str
    side: Side
    profile: ExitProfile
    state: ExitState
    rules: SymbolRules
    tally: PositionTally
    venue: Position
    entry_bar: int
    opened_ms: int
    notional: Decimal
    regime: str
    leverage: int
    fills: list[Fill] = field(default_factory=list)
    funding: Decimal = ZERO
    reason: str = ""
    controller: str = ""
    exit_seq: int = 0
    segments: list[tuple[int, float, float]] = field(default_factory=list)  # (bar, qty, cost) after fills
    levels: tuple[Decimal | None, Decimal | None] = (None, None)  # trigger_levels of `state`
    liq: Decimal = ZERO  # the venue's liquidation price of the open position (0: none)
    due: int = -1  # the bar of its pending MANAGE event (an emergency flatten leaves one behind)


class Replay(RiskReplay):
    def __init__(
        self,
        config: BacktestConfig,
        bars: AlignedKlines,
        signals: SignalSet,
        rules: dict[str, SymbolRules] | None = None,
        progress: Callable[[float], None] | None = None,
        funding: Mapping[str, FundingRates] | None = None,
    ) -> None:
        self.cfg = config.with_symbols_allowed()
        self.bars = bars
        self.sig = signals
        self.rules = [(rules or DEFAULT_RULES)[s] for s in bars.symbols]
        self.t = bars.open_time_ms
        self.n = bars.n_bars
        self.progress = progress
        self._o = [row.tolist() for row in bars.open]  # python floats: fast scalar access
        self._h = [row.tolist() for row in bars.high]
        self._l = [row.tolist() for row in bars.low]
        self._c = [row.tolist() for row in bars.close]
        # Per symbol: the bars that open at a funding time, and the historical rate of those inside a
        # funding history (the others pay the constant rate).
        self._funding_bars: list[np.ndarray] = []
        self._funding_set: list[set[int]] = []
        self._funding_rate: list[dict[int, Decimal]] = []
        self.funding_history = tuple(s for s in bars.symbols if funding and len(funding.get(s, ())) > 0)
        for s in bars.symbols:
            fb, rates = self._funding_schedule((funding or {}).get(s))
            self._funding_bars.append(fb)
            self._funding_set.append(set(fb.tolist()))
            self._funding_rate.append(rates)
        self._signal_bars = [np.flatnonzero(row) for row in signals.side]
        self.book = PortfolioBook()
        self.heap: list[tuple[int, int, int]] = []
        self.held: dict[int, _Held] = {}
        self.parked: set[int] = set()  # symbols waiting for a slot or notional to be released
        self.trades: list[Trade] = []
        self.cash: list[tuple[int, float]] = []  # (bar, realized cash flow) for the equity curve
        self.spans: list[tuple[int, int, int, float, float, int]] = []  # sym, from, to, qty, cost, sign
        self.denials: dict[str, int] = {}
        self.refusals: list[GateRecord] = []
        self.cuts: list[GateRecord] = []
        self.decisions = 0
        self._seq = 0
        self._cash_total = 0.0  # the sum of `cash`, for the emergency stop's equity marks
        risk = self.cfg.risk
        self.risk = RiskTrack(risk, self.cfg, bars) if risk is not None else None
        self.ess_parked: set[int] = set()  # symbols waiting for the emergency stop to allow entries
        self.market_parked: set[int] = set()  # ... for a release or new clusters and allocation targets
        self._pending: set[int] = set()  # ESS_CHECK / REFRESH events in the heap
        self._marked_ms = -1
        self._bar_ms = timeframe_ms(bars.timeframe)

    def _funding_schedule(self, history: FundingRates | None) -> tuple[np.ndarray, dict[int, Decimal]]:
        grid = np.flatnonzero(self.t % (self.cfg.costs.funding_interval_hours * HOUR_MS) == 0)
        if history is None or len(history) == 0:
            return grid, {}
        # Binance's funding times can be a few ms past the hour; a bar opens on the minute.
        times = (history.time_ms + 30_000) // 60_000 * 60_000
        outside = grid[(self.t[grid] < times[0]) | (self.t[grid] > times[-1])]
        idx = np.searchsorted(self.t, times)
        on_bar = idx < self.n
        on_bar[on_bar] = self.t[idx[on_bar]] == times[on_bar]
        rates = {int(idx[k]): history.rate[k] for k in np.flatnonzero(on_bar)}
        return np.union1d(outside, idx[on_bar]).astype(np.int64), rates

    # ------------------------------------------------------------------ driver
    def run(self) -> BacktestResult:
        for s in range(len(self.bars.symbols)):
            self._schedule_entry(s, 1)
        last_report = 0
        while self.heap:
            bar, kind, s = heapq.heappop(self.heap)
            if kind == ENTRY:
                self._enter(s, bar)
            elif kind == MANAGE:
                p = self.held.get(s)
                if p is not None and p.due == bar:
                    self._manage(p, bar)
            else:
                self._book_event(kind, s, bar)
            if self.progress is not None and bar - last_report >= self.n // 50:
                last_report = bar
                self.progress(bar / max(self.n, 1))
        for s in sorted(self.held):  # still open at the end of the data
            self._close_at_end(self.held[s])
        self.trades.sort(key=lambda t: (t.exit_time_ms, t.trade_no))
        equity, exposure = self._equity()
        return BacktestResult(
            config=self.cfg,
            symbols=self.bars.symbols,
            open_time_ms=self.t,
            close=self.bars.close,
            open=self.bars.open,
            equity=equity,
            exposure=exposure,
            trades=self.trades,
            denials=self.denials,
            decisions=self.decisions,
            signal=self.sig.name,
            funding_history=self.funding_history,
            refusals=self.refusals,
            size_cuts=self.cuts,
            ess_timeline=self.risk.timeline if self.risk is not None else [],
        )

    # ------------------------------------------------------------------ entries
    def _schedule_entry(self, s: int, from_bar: int) -> None:
        """The first bar >= from_bar whose previous bar closed with a signal."""
        nz = self._signal_bars[s]
        k = int(np.searchsorted(nz, from_bar - 1))
        if k < nz.shape[0] and nz[k] + 1 < self.n:
            heapq.heappush(self.heap, (int(nz[k]) + 1, ENTRY, s))

    def _enter(self, s: int, j: int) -> None:
        symbol = self.bars.symbols[s]
        cfg, rules = self.cfg, self.rules[s]
        now = int(self.t[j])
        side = Side.LONG if self.sig.side[s, j - 1] > 0 else Side.SHORT
        kill = float(self.sig.kill_score[s, j - 1]) if self.sig.kill_score is not None else 0.0
        regime = str(self.sig.regime[s, j - 1]) if self.sig.regime is not None else "unknown"
        notional, leverage, exits = cfg.notional_usdt, cfg.leverage, cfg.exits
        if self.sig.intent is not None:
            intent = self.sig.intent(s, j - 1)
            if intent is None:  # below the confidence threshold, or sizing gives nothing tradable
                self.denials["signal_skipped"] = self.denials.get("signal_skipped", 0) + 1
                self._schedule_entry(s, j + 1)
                return
            side, kill, regime = intent.side, intent.kill_score, intent.regime
            notional, leverage, exits = intent.notional_usdt or notional, intent.leverage, intent.exits
        self._seq += 1
        holder = f"backtest-{symbol}-{self._seq}"
        req = ReservationRequest(
            holder_id=holder, symbol=symbol, side=side, notional_usdt=notional, kill_score=kill
        )
        decision = self._decide(req, j, now)
        if isinstance(decision, Denial):
            self.denials[decision.gate.value] = self.denials.get(decision.gate.value, 0) + 1
            self.refusals.append(
                GateRecord(now, symbol, side.value, notional, decision.gate.value, decision.reason)
            )
            self._retry_after_denial(s, j, decision)
            return
        apply_grant(self.book, req, decision, now)
        mark = dec(self._o[s][j])
        qty = entry_quantity(decision.notional_usdt, mark, rules, None)
        if qty < rules.market_min_qty or qty * mark < rules.min_notional:
            # what the entry activity does with a grant below the venue's minimum: nothing is sent
            self.denials[Gate.EXCHANGE_MINIMUM.value] = self.denials.get(Gate.EXCHANGE_MINIMUM.value, 0) + 1
            self.refusals.append(
                GateRecord(
                    now,
                    symbol,
                    side.value,
                    notional,
                    Gate.EXCHANGE_MINIMUM.value,
                    f"a grant of {decision.notional_usdt} USDT at {mark} is {qty} {symbol}: below the "
                    f"venue's minimum ({rules.market_min_qty} and {rules.min_notional} USDT)",
                )
            )
            release(self.book, cfg.policy, holder, now, cooldown=False)
            self._schedule_entry(s, j + 1)
            self._wake_parked(j + 1)
            return
        order_side = side.entry_order_side
        price = taker_price(mark, order_side, cfg.costs, rules)
        fee = taker_fee(qty, price, cfg.costs)
        fill = Fill(
            client_order_id=f"{holder}.entry", side=order_side, price=price, qty=qty, fee=fee, time_ms=now
        )
        tally = PositionTally(side=side)
        tally.add(fill)
        venue = Position(symbol)
        apply_fill(venue, order_side, qty, price, fee, leverage)
        if tally.entry_notional < decision.notional_usdt and adjust(self.book, holder, tally.entry_notional):
            self._wake_parked(j + 1)  # the unfilled part of the grant is notional budget again
        profile, stop_price = resolve_profile(decision.exit_profile, exits, side, tally.avg_entry)
        state = initial_state(
            side, tally.avg_entry, tally.open_qty, leverage, tally.fees, profile, rules, now, stop_price
        )
        held = _Held(
            sym=s,
            no=self._seq,
            holder=holder,
            side=side,
            profile=profile,
            state=state,
            rules=rules,
            tally=tally,
            venue=venue,
            entry_bar=j,
            opened_ms=now,
            notional=tally.entry_notional,
            regime=regime,
            leverage=leverage,
            fills=[fill],
        )
        held.segments.append((j, float(tally.open_qty), float(tally.cost_basis)))
        self._refresh(held)
        self._flow(j, -float(fee))
        self.held[s] = held
        held.due = j
        heapq.heappush(self.heap, (j, MANAGE, s))

    def _retry_after_denial(self, s: int, j: int, denial: Denial) -> None:
        """Jump to when the refusing gate could answer differently (the gate itself decides again then)."""
        gate, symbol, policy, now = denial.gate, self.bars.symbols[s], self.cfg.policy, int(self.t[j])
        retry_ms = now + 1
        if gate is Gate.COOLDOWN:
            retry_ms = self.book.cooldown_until_ms.get(symbol, retry_ms)
        elif gate in (Gate.RATE_HOUR, Gate.RATE_5MIN):
            window, limit = (
                (HOUR_MS, policy.max_exec_per_hour)
                if gate is Gate.RATE_HOUR
                else (FIVE_MIN_MS, policy.max_exec_per_5min)
            )
            if limit == 0:
                return  # this symbol can never enter
            recent = sorted(t for t in self.book.executions_ms.get(symbol, []) if now - t < window)
            retry_ms = recent[len(recent) - limit] + window
        elif gate in (Gate.MAX_OPEN_POSITIONS, Gate.TOTAL_NOTIONAL):
            self.parked.add(s)  # until a position is released
            return
        elif self.risk is not None and gate in RISK_GATES:
            retry_ms = self.risk.retry_after(gate, symbol, self.book, now)
            if retry_ms == ESS_WAIT:
                self.ess_parked.add(s)
                self._book_event_at(ESS_CHECK, self.risk.next_ess_check_ms(now, self._bar_ms))
                return
            if retry_ms == PARK:
                self.market_parked.add(s)  # until a release, or the next refresh of clusters and targets
                self._book_event_at(REFRESH, self.risk.next_refresh_ms(now))
                return
            if retry_ms == NEVER:
                return
        elif gate in (Gate.KILL_SWITCH, Gate.EMERGENCY, Gate.ALLOWLIST):
            return  # nothing in a backtest changes these
        bar = int(np.searchsorted(self.t, retry_ms, side="left"))
        self._schedule_entry(s, max(bar, j + 1))

    # ------------------------------------------------------------------ managing a position
    def _manage(self, p: _Held, i: int) -> None:
        if i in self._funding_set[p.sym] and p.opened_ms < self.t[i]:
            rate = self._funding_rate[p.sym].get(i, self.cfg.costs.funding_rate)
            pay = funding_payment(p.venue, dec(self._o[p.sym][i]), self.cfg.costs, rate)
            p.funding += pay
            p.liq = liq_price(p.venue, self.cfg.costs)  # funding moved the isolated margin
            self._flow(i, float(pay))
        self._bar(p, i, first=i != p.entry_bar)
        if p.tally.open_qty <= 0:
            self._finish(p, i)
            return
        self._schedule_manage(p, i + 1)

    def _refresh(self, p: _Held) -> None:
        """Recompute what the position publishes (its state or margin changed)."""
        p.levels = trigger_levels(p.profile, p.state, p.side, p.leverage, p.rules)
        p.liq = liq_price(p.venue, self.cfg.costs)

    def _schedule_manage(self, p: _Held, start: int) -> None:
        stop = self.n
        hold = p.profile.max_holding_seconds
        if hold is not None:
            stop = min(stop, int(np.searchsorted(self.t, p.opened_ms + hold * 1000, side="left")))
        funding_bars = self._funding_bars[p.sym]
        k = int(np.searchsorted(funding_bars, start))
        if k < funding_bars.shape[0]:
            stop = min(stop, int(funding_bars[k]))
        above, below = p.levels
        liq = p.liq
        hi = INF if above is None else float(above)
        lo = -INF if below is None else float(below)
        if liq > 0:
            if p.side is Side.LONG:
                lo = max(lo, float(liq))
            else:
                hi = min(hi, float(liq))
        s = p.sym
        stop = max(stop, start)  # a time exit or funding already due is decided at `start`
        # The next few bars in Python (cheaper than numpy's call overhead for a position decided soon),
        # then the vectorized search.
        near = min(stop, start + SCAN_BARS)
        high, low = self._h[s], self._l[s]
        hit = next((k for k in range(start, near) if high[k] >= hi or low[k] <= lo), -1)
        if hit < 0:
            hit = (
                first_cross(self.bars.high[s], self.bars.low[s], near, stop, hi, lo) if near < stop else stop
            )
        if hit < self.n:
            p.due = hit
            heapq.heappush(self.heap, (hit, MANAGE, s))
        # else: nothing happens before the data ends; closed at the end

    def _bar(self, p: _Held, i: int, *, first: bool) -> None:
        """Every decision bar i brings for this position (see the module docstring for the rules)."""
        s, sign = p.sym, p.side.sign
        o, h, lo = dec(self._o[s][i]), dec(self._h[s][i]), dec(self._l[s][i])
        long = p.side is Side.LONG
        ext_adv, ext_fav = (lo, h) if long else (h, lo)
        now = int(self.t[i])
        hold = p.profile.max_holding_seconds
        time_due = hold is not None and now - p.opened_ms >= hold * 1000

        def past_adverse(price: Decimal, level: Decimal) -> bool:
            return (level - price) * sign >= 0

        def past_favourable(price: Decimal, level: Decimal) -> bool:
            return (price - level) * sign >= 0

        for _ in range(MAX_STEPS_PER_BAR):
            if p.tally.open_qty <= 0:
                return
            above, below = p.levels
            adv, fav = (below, above) if long else (above, below)
            assert adv is not None  # the stop is always a level
            liq = p.liq
            if first:
                first = False
                # the venue triggers its resting stop on the price move, before its liquidation check
                if past_adverse(o, p.state.hard_stop):
                    self._fill_close(p, i, p.tally.open_qty, o, "hard_stop", "exchange")
                    return
                if liq > 0 and past_adverse(o, liq):
                    self._liquidate(p, i, liq)
                    return
                if past_adverse(o, adv) or (fav is not None and past_favourable(o, fav)) or time_due:
                    if self._act(p, i, o):
                        continue
            liq_hit = liq > 0 and past_adverse(ext_adv, liq)
            if liq_hit and (liq - adv) * sign >= 0:  # the liquidation price comes first on the way
                self._liquidate(p, i, liq)
                return
            if past_adverse(ext_adv, adv):
                if self._act_near(p, i, adv, ext_adv, -sign, lo, h):
                    continue
                if liq_hit:
                    self._liquidate(p, i, liq)
                    return
            if fav is not None and past_favourable(ext_fav, fav):
                if self._act_near(p, i, fav, ext_fav, sign, lo, h):
                    continue
            return

    def _act_near(
        self, p: _Held, i: int, level: Decimal, extreme: Decimal, direction: int, low: Decimal, high: Decimal
    ) -> bool:
        """Decide at the level; if that changes nothing (levels are rounded to the tick), one tick
        beyond it, then at the bar's extreme. Never at a price outside the bar."""
        tried: list[Decimal] = []
        for price in (level, level + direction * p.rules.tick_size, extreme):
            price = min(max(price, low), high)
            if price in tried:
                continue
            tried.append(price)
            if self._act(p, i, price):
                return True
        return False

    def _act(self, p: _Held, i: int, price: Decimal) -> bool:
        """The workflow's `_apply_exit_policies`: evaluate at one price until there is nothing to do.
        True when the position or its levels changed."""
        before = p.levels
        now = int(self.t[i])
        acted = False
        for _ in range(16):
            open_qty = p.tally.open_qty
            if open_qty <= 0:
                break
            action, p.state = evaluate(p.profile, p.state, p.side, open_qty, price, p.leverage, p.rules, now)
            self.decisions += 1
            if action is None:
                break
            acted = True
            if action.kind == "close" and action.quantity > 0:
                self._fill_close(p, i, action.quantity, price, action.reason, action.controller)
        if p.tally.open_qty <= 0:
            return True
        self._refresh(p)
        return acted or p.levels != before

    # ------------------------------------------------------------------ fills
    def _fill_close(
        self, p: _Held, i: int, qty: Decimal, market: Decimal, reason: str, controller: str
    ) -> None:
        costs, order_side = self.cfg.costs, p.side.exit_order_side
        price = taker_price(market, order_side, costs, p.rules)
        self._book_close(p, i, qty, price, taker_fee(qty, price, costs), reason, controller)

    def _liquidate(self, p: _Held, i: int, liq: Decimal) -> None:
        price = p.rules.round_price(liq)
        qty = p.tally.open_qty
        fee = liquidation_fee(p.venue, qty, price, self.cfg.costs)
        self._book_close(p, i, qty, price, fee, "liquidation", "exchange")

    def _book_close(
        self, p: _Held, i: int, qty: Decimal, price: Decimal, fee: Decimal, reason: str, controller: str
    ) -> None:
        p.exit_seq += 1
        fill = Fill(
            client_order_id=f"{p.holder}.x{p.exit_seq}",
            side=p.side.exit_order_side,
            price=price,
            qty=qty,
            fee=fee,
            time_ms=int(self.t[i]),
        )
        gross_before = p.tally.realized_gross
        p.tally.add(fill)
        apply_fill(p.venue, fill.side, qty, price, fee, p.leverage)
        p.fills.append(fill)
        p.reason, p.controller = reason, controller
        p.segments.append((i, float(p.tally.open_qty), float(p.tally.cost_basis)))
        self._flow(i, float(p.tally.realized_gross - gross_before - fee))

    def _close_at_end(self, p: _Held) -> None:
        last = self.n - 1
        self._fill_close(p, last, p.tally.open_qty, dec(self._c[p.sym][last]), "end_of_data", "backtest")
        self._finish(p, last, schedule=False)

    def _finish(self, p: _Held, i: int, *, schedule: bool = True) -> None:
        t = p.tally
        del self.held[p.sym]
        now = int(self.t[i])
        release(self.book, self.cfg.policy, p.holder, now, cooldown=True)
        for seg, nxt in zip(p.segments, [*p.segments[1:], (i + 1, 0.0, 0.0)], strict=True):
            if seg[1] > 0:
                self.spans.append((p.sym, seg[0], nxt[0], seg[1], seg[2], p.side.sign))
        trade = Trade(
            trade_no=p.no,
            symbol=self.bars.symbols[p.sym],
            side=p.side,
            qty=t.entry_qty,
            entry_price=t.avg_entry,
            exit_price=t.avg_exit,
            entry_time_ms=p.opened_ms,
            exit_time_ms=now,
            entry_bar=p.entry_bar,
            exit_bar=i,
            gross_pnl=t.realized_gross,
            fees=t.fees,
            funding=p.funding,
            realized_pnl=t.realized_net,
            pnl=t.realized_net + p.funding,
            notional_usdt=p.notional,
            leverage=p.leverage,
            exit_reason=p.reason,
            exit_controller=p.controller,
            strategy=self.cfg.strategy,
            regime=p.regime,
            model_version=self.sig.model_version,
            fills=p.fills,
        )
        self.trades.append(trade)
        if self.risk is not None:
            self._marked_ms = now
            self._ess_moved(self.risk.on_close(trade, self._equity_at(i)), i + 1)
        if not schedule:
            return
        self._schedule_entry(p.sym, i + 1)
        self._wake_parked(i + 1)

    def _wake_parked(self, bar: int) -> None:
        """A slot or notional was freed: symbols waiting for one ask again from `bar` on."""
        for s in sorted(self.parked | self.market_parked):
            self._schedule_entry(s, bar)
        self.parked.clear()
        self.market_parked.clear()

    # ------------------------------------------------------------------ equity
    def _equity(self) -> tuple[np.ndarray, np.ndarray]:
        """Equity at every bar's close: cash (start + realized flows) + the open positions marked to the
        close. Float: it feeds the curve and the ratios; trade money stays Decimal."""
        n = self.n
        flows = np.zeros(n)
        if self.cash:
            idx, amt = zip(*self.cash, strict=True)
            np.add.at(flows, np.asarray(idx), np.asarray(amt))
        equity = float(self.cfg.start_balance) + np.cumsum(flows)
        exposure = np.zeros(n, dtype=bool)
        close = self.bars.close
        for s, a, b, qty, cost, sign in self.spans:
            b = min(b, n)
            equity[a:b] += sign * (close[s, a:b] * qty - cost)
            exposure[a:b] = True
        return equity, exposure


def run_backtest(
    config: BacktestConfig,
    bars: AlignedKlines,
    signals: SignalSet,
    *,
    rules: dict[str, SymbolRules] | None = None,
    progress: Callable[[float], None] | None = None,
    funding: Mapping[str, FundingRates] | None = None,
) -> BacktestResult:
    """`funding`: per symbol, the funding history to charge inside its range (else the constant)."""
    return Replay(config, bars, signals, rules, progress, funding).run()

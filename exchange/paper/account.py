"""Account and margin arithmetic: the margin that positions and open orders hold, what is available,
the margin check of a new order, liquidation prices (cross and isolated), and the account's ledger
(income rows) and ACCOUNT_UPDATE event."""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal
from typing import Any

from exchange.paper.book import Order
from exchange.paper.errors import ApiError
from exchange.paper.shapes import money, num, qty_str
from exchange.paper.state import ZERO, EngineState
from trading.margin import Position, liquidation_price

# Exact sums (no rounding at any digit): a total minus one of its terms is then exactly the sum of
# the other terms, whatever their order (cross-margin liquidation prices).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
MAX_NOTIONAL = Decimal("1000000000")


class AccountMixin(EngineState):
    """Account arithmetic over the state: totals, available balance, margin checks, liquidation prices."""

    def _isolated(self, sym: str) -> bool:
        return self.margin_type[sym] == "ISOLATED"

    def _held(self) -> list[Position]:
        return [p for p in self.positions.values() if p.amt]

    def _order_im(self, o: Order) -> Decimal:
        """Initial margin an open order holds: the part of it that would open or increase."""
        if o.reduce_only or o.type != "LIMIT":
            return ZERO
        pos = self.positions[o.symbol].amt
        rem = o.remaining
        if pos and (pos > 0) != (o.side == "BUY"):
            rem = max(ZERO, rem - abs(pos))
        return rem * o.price / self.leverage[o.symbol]

    def _totals(self) -> dict[str, Decimal]:
        iso_sum = un_cross = un_all = pos_im_cross = pos_im = mm = cross_free = ZERO
        mmr = self.config.maint_margin_rate
        for p in self._held():
            mark = self.last[p.symbol]
            un = p.unrealized(mark)
            notional = abs(p.amt) * mark
            im = notional / self.leverage[p.symbol]
            pmm = notional * mmr
            un_all += un
            pos_im += im
            mm += pmm
            if self._isolated(p.symbol):
                iso_sum += p.iso_wallet
            else:
                un_cross += un
                pos_im_cross += im
                cross_free = _EXACT.add(cross_free, un - pmm)
        order_im = ZERO
        for book in self.book.values():
            for o in book.values():
                order_im += self._order_im(o)
        cross_wallet = self.wallet - iso_sum
        available = cross_wallet + un_cross - pos_im_cross - order_im
        return {
            "cross_wallet": cross_wallet,
            "un_cross": un_cross,
            "un_all": un_all,
            "pos_im": pos_im,
            "order_im": order_im,
            "mm": mm,
            "cross_free": cross_free,
            "available": max(available, ZERO),
        }

    def _available(self) -> Decimal:
        return self._totals()["available"]

    def _check_margin(self, sym: str, side: str, qty: Decimal, price: Decimal) -> None:
        pos = self.positions[sym].amt
        closing = ZERO
        if pos and (pos > 0) != (side == "BUY"):
            closing = min(abs(pos), qty)
        opening = qty - closing
        if not opening:
            return
        lev = self.leverage[sym]
        need = opening * price / lev + opening * price * self.config.taker_fee
        released = closing * price / lev
        if need > self._available() + released:
            raise ApiError(-2019, "Margin is insufficient.")

    def _liq_price(self, p: Position, totals: dict[str, Decimal] | None = None) -> Decimal:
        if not p.amt:
            return ZERO
        mmr = self.config.maint_margin_rate
        if self._isolated(p.symbol):
            return liquidation_price(p.amt, p.entry, p.iso_wallet, mmr)
        t = totals or self._totals()
        # The other cross positions' unrealized PnL minus maintenance margin: the account-wide sum
        # less this position's own term. Summing the others per position was O(n²) per tick (at 500
        # positions the ticker could not keep up); the exact sum makes `total - own` equal the sum
        # of the others to the last digit. The own term repeats `_totals`' arithmetic exactly.
        mark = self.last[p.symbol]
        other = _EXACT.subtract(t["cross_free"], p.unrealized(mark) - abs(p.amt) * mark * mmr)
        return liquidation_price(p.amt, p.entry, t["cross_wallet"] + other, mmr)

    def _income(self, sym: str, kind: str, amount: Decimal, now: int, trade_id: str = "") -> None:
        tran = self._next("tran")
        row = {
            "symbol": sym,
            "incomeType": kind,
            "income": money(amount),
            "asset": "USDT",
            "info": kind if kind != "FUNDING_FEE" else "FUNDING_FEE",
            "time": now,
            "tranId": tran,
            "tradeId": trade_id,
        }
        self.incomes.append(row)
        self._dirty["income"][tran] = row

    def _account_update(self, reason: str, now: int, positions: list[Position]) -> dict[str, Any]:
        cross = self.wallet - sum(
            (p.iso_wallet for p in self.positions.values() if self._isolated(p.symbol)), ZERO
        )
        return {
            "e": "ACCOUNT_UPDATE",
            "E": now,
            "T": now,
            "a": {
                "m": reason,
                "B": [{"a": "USDT", "wb": money(self.wallet), "cw": money(cross), "bc": "0"}],
                "P": [
                    {
                        "s": p.symbol,
                        "pa": qty_str(self.rules[p.symbol], p.amt),
                        "ep": num(p.entry),
                        "bep": num(p.break_even()),
                        "cr": money(p.cum_realized),
                        "up": money(p.unrealized(self.last[p.symbol])),
                        "mt": "isolated" if self._isolated(p.symbol) else "cross",
                        "iw": money(p.iso_wallet),
                        "ps": "BOTH",
                    }
                    for p in positions
                ],
            },
        }

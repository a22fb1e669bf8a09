"""Fills: what one execution does to the account (wallet, position, trade and income rows, the
user-data events), order records and how they end, the taker price and the reduce-only cap, and the
MARKET orders that fill in parts over time (the `partial_fills` fault)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.account import AccountMixin
from exchange.paper.book import Order
from exchange.paper.errors import ApiError
from exchange.paper.shapes import algo_update, money, num, order_trade_update, price_str, qty_str
from exchange.paper.state import ZERO, _b62
from trading.margin import fill_effect

ONE = Decimal(1)


class FillsMixin(AccountMixin):
    """Executions and the order lifecycle they drive, shared by orders, algo orders and the clock."""

    def _fill(
        self, o: Order, qty: Decimal, price: Decimal, maker: bool, now: int, *, liquidation: bool = False
    ) -> None:
        sym = o.symbol
        rules = self.rules[sym]
        pos = self.positions[sym]
        isolated = self._isolated(sym)
        dq = qty if o.side == "BUY" else -qty
        fee = qty * price * (self.config.maker_fee if maker else self.config.taker_fee)
        if liquidation:
            fee = qty * price * self.config.liquidation_fee_rate
        eff = fill_effect(pos, dq, price, fee, self.leverage[sym], isolated)
        if liquidation:
            # the account cannot lose more than the margin left: the rest goes to the insurance fund
            cap = (pos.iso_wallet if isolated else self.wallet) + eff.realized
            fee = max(ZERO, min(fee, cap))
        self.wallet += eff.realized - fee
        self.wallet_time = now
        was = pos.amt
        pos.apply(eff)
        pos.update_time = now
        o.executed += qty
        o.cum_quote += qty * price
        o.status = "FILLED" if o.executed >= o.qty else "PARTIALLY_FILLED"
        o.update_time = now
        trade_id = self._next("trade")
        self.fill_counts[sym] = self.fill_counts.get(sym, 0) + 1
        self.trades.append(
            {
                "buyer": o.side == "BUY",
                "commission": money(fee),
                "commissionAsset": "USDT",
                "id": trade_id,
                "maker": maker,
                "orderId": o.order_id,
                "price": price_str(rules, price),
                "qty": qty_str(rules, qty),
                "quoteQty": num(qty * price),
                "realizedPnl": money(eff.realized),
                "side": o.side,
                "positionSide": "BOTH",
                "symbol": sym,
                "time": now,
            }
        )
        self._dirty["trades"][trade_id] = self.trades[-1]
        if eff.closed_qty:
            self._income(sym, "REALIZED_PNL", eff.realized, now, str(trade_id))
        if fee:
            self._income(sym, "COMMISSION", -fee, now, str(trade_id))
        self._dirty["orders"][o.order_id] = o
        self._dirty["positions"][sym] = pos
        self._mark_kv("wallet")
        if not o.is_open:
            self.book[sym].pop(o.order_id, None)
        bar = self._bar.get(sym)
        if bar is not None:
            bar[5] += qty
            bar[6] += qty * price
            bar[7] += 1
        if self._listeners:
            self._user(self._account_update("ORDER", now, [pos]))
            self._user(
                order_trade_update(
                    o,
                    rules,
                    "CALCULATED" if liquidation else "TRADE",
                    now,
                    last_qty=qty,
                    last_price=price,
                    fee=fee,
                    trade_id=trade_id,
                    maker=maker,
                    realized=eff.realized,
                )
            )
        if not pos.amt or (was > 0) != (pos.amt > 0):
            self._sweep_reduce_only(sym, now)

    def _sweep_reduce_only(self, sym: str, now: int) -> None:
        """Expire reduce-only / close-position orders that can no longer reduce (Binance does this)."""
        amt = self.positions[sym].amt
        rules = self.rules[sym]
        for o in list(self.book[sym].values()):
            if (o.reduce_only or o.close_position) and (not amt or (amt > 0) == (o.side == "BUY")):
                self._end_order(o, "EXPIRED", now)
        for a in list(self.open_algos[sym].values()):
            if (a.reduce_only or a.close_position) and (not amt or (amt > 0) == (a.side == "BUY")):
                a.status = "EXPIRED"
                a.update_time = now
                del self.open_algos[sym][a.algo_id]
                self._dirty["algos"][a.algo_id] = a
                if self._listeners:
                    self._user(algo_update(a, rules, now))

    def _end_order(self, o: Order, status: str, now: int) -> None:
        o.status = status
        o.update_time = now
        self.book[o.symbol].pop(o.order_id, None)
        self._dirty["orders"][o.order_id] = o
        if self._listeners:
            self._user(order_trade_update(o, self.rules[o.symbol], status, now))

    def _new_order_record(
        self,
        sym: str,
        cid: str | None,
        side: str,
        otype: str,
        tif: str,
        qty: Decimal,
        price: Decimal,
        reduce_only: bool,
        now: int,
        **extra: Any,
    ) -> Order:
        oid = self._next("order")
        if cid is None:
            cid = _b62(f"{self.config.seed}:o:{oid}", 22)
        o = Order(
            order_id=oid,
            symbol=sym,
            client_id=cid,
            side=side,
            type=otype,
            tif=tif,
            qty=qty,
            price=price,
            reduce_only=reduce_only,
            time=now,
            update_time=now,
            **extra,
        )
        self.orders[oid] = o
        self.client_index[(sym, cid)] = oid
        self._dirty["orders"][oid] = o
        if self._listeners and otype != "LIQUIDATION":
            self._user(order_trade_update(o, self.rules[sym], "NEW", now))
        return o

    def _taker_price(self, sym: str, side: str) -> Decimal:
        mkt = self.last[sym]
        slip = self.config.slippage_bps
        if not slip:
            return mkt
        factor = ONE + slip / 10000 if side == "BUY" else ONE - slip / 10000
        return self.rules[sym].round_price(mkt * factor)

    def _reduce_cap(self, sym: str, side: str, qty: Decimal) -> Decimal:
        """The fill a reduce-only order may make now: capped at the opposite position, 0 when none."""
        amt = self.positions[sym].amt
        if not amt or (amt > 0) == (side == "BUY"):
            return ZERO
        return min(qty, abs(amt))

    def _fill_parts(self, now: int) -> None:
        """The next parts of MARKET orders filling over time, at the current price."""
        for oid, split in list(self._splits.items()):
            if now < split.next_ms:
                continue
            o = self.orders[oid]
            if not o.is_open:  # canceled, swept (reduce-only) or liquidated meanwhile
                del self._splits[oid]
                continue
            sym, side = o.symbol, o.side
            qty = split.take()
            if o.reduce_only:
                qty = self._reduce_cap(sym, side, qty)
            price = self._taker_price(sym, side)
            ok = bool(qty)
            if ok and not o.reduce_only:
                # The rest of a MARKET order holds no margin: it may be gone by now.
                try:
                    self._check_margin(sym, side, qty, price)
                except ApiError:
                    ok = False
            if ok:
                self._fill(o, qty, price, False, now)
            if o.is_open and (not ok or split.done):
                self._end_order(o, "EXPIRED", now)
            if not o.is_open:
                del self._splits[oid]

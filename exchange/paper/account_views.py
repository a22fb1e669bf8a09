"""Account views: positions (positionRisk v2 / v3), the account (v2 / v3), the balance, the account's
trades and its income history."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.account import MAX_NOTIONAL, AccountMixin
from exchange.paper.params import _int, _limit
from exchange.paper.shapes import money, num, qty_str
from exchange.paper.state import ZERO


class AccountViewsMixin(AccountMixin):
    """The signed endpoints that read the account."""

    def _position_view(self, s: str, totals: dict[str, Decimal]) -> dict[str, Any]:
        pos = self.positions[s]
        mark = self.last[s]
        un = pos.unrealized(mark)
        notional = pos.amt * mark
        lev = self.leverage[s]
        iso = self._isolated(s)
        r = self.rules[s]
        order_im = sum((self._order_im(o) for o in self.book[s].values()), ZERO)
        bid = sum((o.remaining * o.price for o in self.book[s].values() if o.side == "BUY"), ZERO)
        ask = sum((o.remaining * o.price for o in self.book[s].values() if o.side == "SELL"), ZERO)
        pim = abs(notional) / lev
        return {
            "symbol": s,
            "positionSide": "BOTH",
            "positionAmt": qty_str(r, pos.amt),
            "entryPrice": num(pos.entry),
            "breakEvenPrice": num(pos.break_even()),
            "markPrice": money(mark),
            "unRealizedProfit": money(un),
            "liquidationPrice": num(r.round_price(self._liq_price(pos, totals))),
            "isolatedMargin": money(pos.iso_wallet + un if iso and pos.amt else ZERO),
            "notional": money(notional),
            "marginAsset": "USDT",
            "isolatedWallet": money(pos.iso_wallet),
            "initialMargin": money(pim + order_im),
            "maintMargin": money(abs(notional) * self.config.maint_margin_rate),
            "positionInitialMargin": money(pim),
            "openOrderInitialMargin": money(order_im),
            "adl": 0,
            "bidNotional": num(bid),
            "askNotional": num(ask),
            "updateTime": pos.update_time,
            "leverage": str(lev),
            "marginType": "isolated" if iso else "cross",
            "isolated": iso,
        }

    def position_risk(self, p: dict[str, str], version: int) -> list:
        sym = self._symbol(p, required=False)
        totals = self._totals()
        syms = [sym] if sym else self.symbols
        out = []
        for s in syms:
            v = self._position_view(s, totals)
            if version >= 3:
                if not self.positions[s].amt and not self.book[s]:
                    continue
                for k in ("leverage", "marginType", "isolated"):
                    del v[k]
            else:
                v = {
                    k: v[k]
                    for k in (
                        "entryPrice",
                        "breakEvenPrice",
                        "marginType",
                        "isolatedMargin",
                        "leverage",
                        "liquidationPrice",
                        "markPrice",
                        "positionAmt",
                        "notional",
                        "isolatedWallet",
                        "symbol",
                        "unRealizedProfit",
                        "positionSide",
                        "updateTime",
                    )
                }
                v["isAutoAddMargin"] = "false"
                v["maxNotionalValue"] = num(MAX_NOTIONAL)
            out.append(v)
        return out

    def account(self, p: dict[str, str], version: int) -> dict[str, Any]:
        t = self._totals()
        wallet = self.wallet
        top = {
            "totalInitialMargin": money(t["pos_im"] + t["order_im"]),
            "totalMaintMargin": money(t["mm"]),
            "totalWalletBalance": money(wallet),
            "totalUnrealizedProfit": money(t["un_all"]),
            "totalMarginBalance": money(wallet + t["un_all"]),
            "totalPositionInitialMargin": money(t["pos_im"]),
            "totalOpenOrderInitialMargin": money(t["order_im"]),
            "totalCrossWalletBalance": money(t["cross_wallet"]),
            "totalCrossUnPnl": money(t["un_cross"]),
            "availableBalance": money(t["available"]),
            "maxWithdrawAmount": money(t["available"]),
        }
        asset = {
            "asset": "USDT",
            "walletBalance": money(wallet),
            "unrealizedProfit": money(t["un_all"]),
            "marginBalance": money(wallet + t["un_all"]),
            "maintMargin": money(t["mm"]),
            "initialMargin": money(t["pos_im"] + t["order_im"]),
            "positionInitialMargin": money(t["pos_im"]),
            "openOrderInitialMargin": money(t["order_im"]),
            "crossWalletBalance": money(t["cross_wallet"]),
            "crossUnPnl": money(t["un_cross"]),
            "availableBalance": money(t["available"]),
            "maxWithdrawAmount": money(t["available"]),
            "updateTime": self.wallet_time,
        }
        views = [self._position_view(s, t) for s in self.symbols]
        if version >= 3:
            positions = [
                {
                    k: v[k]
                    for k in (
                        "symbol",
                        "positionSide",
                        "positionAmt",
                        "unrealizedProfit",
                        "isolatedMargin",
                        "notional",
                        "isolatedWallet",
                        "initialMargin",
                        "maintMargin",
                        "updateTime",
                    )
                }
                for v in (dict(v, unrealizedProfit=v["unRealizedProfit"]) for v in views)
                if self.positions[v["symbol"]].amt
            ]
            return {**top, "assets": [asset], "positions": positions}
        asset["marginAvailable"] = True
        positions = [
            {
                "symbol": v["symbol"],
                "initialMargin": v["initialMargin"],
                "maintMargin": v["maintMargin"],
                "unrealizedProfit": v["unRealizedProfit"],
                "positionInitialMargin": v["positionInitialMargin"],
                "openOrderInitialMargin": v["openOrderInitialMargin"],
                "leverage": v["leverage"],
                "isolated": v["isolated"],
                "entryPrice": v["entryPrice"],
                "breakEvenPrice": v["breakEvenPrice"],
                "maxNotional": num(MAX_NOTIONAL),
                "bidNotional": v["bidNotional"],
                "askNotional": v["askNotional"],
                "positionSide": "BOTH",
                "positionAmt": v["positionAmt"],
                "updateTime": v["updateTime"],
            }
            for v in views
        ]
        return {
            "feeTier": 0,
            "feeBurn": False,
            "canTrade": True,
            "canDeposit": True,
            "canWithdraw": True,
            "updateTime": 0,
            "multiAssetsMargin": False,
            "tradeGroupId": -1,
            **top,
            "assets": [asset],
            "positions": positions,
        }

    def balance(self, p: dict[str, str], version: int) -> list:
        t = self._totals()
        return [
            {
                "accountAlias": "SgsRfWTiXqXqTiAu",
                "asset": "USDT",
                "balance": money(self.wallet),
                "crossWalletBalance": money(t["cross_wallet"]),
                "crossUnPnl": money(t["un_cross"]),
                "availableBalance": money(t["available"]),
                "maxWithdrawAmount": money(t["available"]),
                "marginAvailable": True,
                "updateTime": self.wallet_time,
            }
        ]

    def user_trades(self, p: dict[str, str]) -> list:
        sym = self._symbol(p)
        oid = _int(p, "orderId")
        from_id = _int(p, "fromId")
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = _limit(p, 500, 1000)
        rows = [
            t
            for t in self.trades
            if t["symbol"] == sym
            and (oid is None or t["orderId"] == oid)
            and (from_id is None or t["id"] >= from_id)
            and (start is None or t["time"] >= start)
            and (end is None or t["time"] <= end)
        ]
        return rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]

    def income(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        kind = p.get("incomeType") or None
        start, end = _int(p, "startTime"), _int(p, "endTime")
        limit = _limit(p, 100, 1000)
        if start is None and end is None:
            start = self.wall_ms() - 7 * 86_400_000
            newest = True
        else:
            newest = False
        rows = [
            r
            for r in self.incomes
            if (sym is None or r["symbol"] == sym)
            and (kind is None or r["incomeType"] == kind)
            and (start is None or r["time"] >= start)
            and (end is None or r["time"] <= end)
        ]
        return rows[-limit:] if newest else rows[:limit]

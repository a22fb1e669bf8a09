"""Account settings: leverage, margin type, the leverage bracket and the position mode (one-way only),
and transfers into and out of the wallet (the admin API's DEPOSIT / WITHDRAW)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from exchange.paper.account import MAX_NOTIONAL, AccountMixin
from exchange.paper.errors import ApiError
from exchange.paper.params import _bool, _invalid, _req
from exchange.paper.shapes import money, num


class AccountSettingsMixin(AccountMixin):
    """The signed endpoints that change the account's settings, and the admin wallet transfer."""

    def change_leverage(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        assert sym is not None
        raw = _req(p, "leverage")
        try:
            lev = int(raw)
        except ValueError:
            raise _invalid("leverage") from None
        if not 1 <= lev <= 125:
            raise ApiError(-4028, f"Leverage {lev} is not valid")
        now = self.wall_ms()
        self.leverage[sym] = lev
        self._mark_symbol_kv("leverage", sym)
        if self._listeners:
            self._user({"e": "ACCOUNT_CONFIG_UPDATE", "E": now, "T": now, "ac": {"s": sym, "l": lev}})
        self._commit()
        return {"leverage": lev, "maxNotionalValue": num(MAX_NOTIONAL), "symbol": sym}

    def change_margin_type(self, p: dict[str, str]) -> dict[str, Any]:
        sym = self._symbol(p)
        assert sym is not None
        mt = _req(p, "marginType").upper()
        if mt == "CROSS":
            mt = "CROSSED"
        if mt not in ("ISOLATED", "CROSSED"):
            raise _invalid("marginType")
        if self.margin_type[sym] == mt:
            raise ApiError(-4046, "No need to change margin type.")
        if self.positions[sym].amt:
            raise ApiError(-4048, "Margin type cannot be changed if there exists position.")
        if self.book[sym]:
            raise ApiError(-4047, "Margin type cannot be changed if there exists open orders.")
        self.margin_type[sym] = mt
        self._mark_symbol_kv("margin_type", sym)
        self._commit()
        return {"code": 200, "msg": "success"}

    def leverage_bracket(self, p: dict[str, str]) -> list:
        sym = self._symbol(p, required=False)
        syms = [sym] if sym else self.symbols
        return [
            {
                "symbol": s,
                "notionalCoef": 1.0,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": 125,
                        "notionalCap": int(MAX_NOTIONAL),
                        "notionalFloor": 0,
                        "maintMarginRatio": float(self.config.maint_margin_rate),
                        "cum": 0.0,
                    }
                ],
            }
            for s in syms
        ]

    def position_side_dual(self, p: dict[str, str]) -> dict[str, Any]:
        if "dualSidePosition" in p:
            if _bool(p, "dualSidePosition"):
                raise ApiError(-4059, "Hedge mode is not supported by the paper exchange (one-way only).")
            raise ApiError(-4059, "No need to change position side.")
        return {"dualSidePosition": False}

    def transfer(self, amount: Decimal) -> dict[str, str]:
        """Move USDT into (positive) or out of (negative) the futures wallet, as a transfer from the spot
        account does: an income row and an ACCOUNT_UPDATE (reason DEPOSIT / WITHDRAW) on the user stream.
        A withdrawal cannot take more than is available."""
        if not amount.is_finite() or amount == 0:
            raise _invalid("amount")
        if amount < 0 and -amount > self._available():
            raise ApiError(-2019, f"Margin is insufficient: {self._available()} USDT available.")
        now = self.wall_ms()
        self.wallet += amount
        self.wallet_time = now
        self._income("", "TRANSFER", amount, now)
        self._mark_kv("wallet")
        self._user(self._account_update("DEPOSIT" if amount > 0 else "WITHDRAW", now, []))
        self._commit()
        return {"wallet": money(self.wallet)}

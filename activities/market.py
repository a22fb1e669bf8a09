"""Market-data activities that need no API key: the symbol check every intent makes before it may
reserve anything. Run as local activities in the lifecycle worker, so a burst of intents costs no
task-queue round trips; exchangeInfo is cached for a minute."""

from __future__ import annotations

import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.exchange import venue_errors
from activities.vouchers import GrantVouchers
from exchange.client import BinanceFuturesClient
from trading.execution import SymbolCheck, SymbolCheckInput
from trading.instruments import SymbolRules
from workflows import calls
from workflows.errors import ErrorType

RULES_TTL_S = 60.0


class MarketActivities:
    def __init__(self, client: BinanceFuturesClient, vouchers: GrantVouchers | None = None) -> None:
        self.client = client  # keyless: public endpoints only
        # this worker's start_positions fills it
        self.vouchers = vouchers if vouchers is not None else GrantVouchers()
        self._rules: dict[str, SymbolRules] = {}
        self._rules_at = 0.0

    async def _all_rules(self) -> dict[str, SymbolRules]:
        if not self._rules or time.monotonic() - self._rules_at > RULES_TTL_S:
            self._rules = await self.client.exchange_info(refresh=True)
            self._rules_at = time.monotonic()
        return self._rules

    @activity.defn(name=calls.CHECK_SYMBOL.name)
    async def check_symbol(self, inp: SymbolCheckInput) -> SymbolCheck:
        with venue_errors():
            rules = (await self._all_rules()).get(inp.symbol)
            if rules is None or rules.status != "TRADING":
                raise ApplicationError(
                    f"{inp.symbol} is not a trading symbol on the exchange",
                    type=ErrorType.UNKNOWN_SYMBOL,
                    non_retryable=True,
                )
            mark = (await self.client.premium_index(inp.symbol)).mark_price if inp.want_price else None
        # Redeemed last: an attempt that failed above leaves it for the retry.
        vouched = self.vouchers.redeem(inp.vouch_for) if inp.vouch_for else None
        return SymbolCheck(rules=rules, mark_price=mark, vouched_notional=vouched)

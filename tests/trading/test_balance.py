"""Sizing from the venue's equity (trading/balance.py through trading/risk.assess): the per-trade and
total exposure caps, the margin-ratio gate, and an older reading never replacing a newer one."""

from __future__ import annotations

from decimal import Decimal

from trading.balance import AccountBalance, BalancePolicy
from trading.governor import Gate, PortfolioBook, Reservation, ReservationRequest, RiskPolicy
from trading.intents import Side
from trading.risk import RiskLayerPolicy, RiskState, assess, observe

D = Decimal
T0 = 1_767_225_600_000
POLICY = RiskPolicy(
    allowlist=("*",), max_total_notional_usdt=D(100_000), max_notional_per_trade_usdt=D(10_000)
)
RISK = RiskLayerPolicy.off().model_copy(
    update={"balance": BalancePolicy(max_trade_exposure=D("0.1"), max_total_exposure=D("0.5"))}
)


def reading(equity: str, maint: str = "0", at_ms: int = T0) -> AccountBalance:
    e = D(equity)
    return AccountBalance(
        at_ms=at_ms,
        wallet=e,
        unrealized=D(0),
        equity=e,
        available=e,
        initial_margin=D(0),
        maint_margin=D(maint),
    )


def ask(notional: str, book: PortfolioBook | None = None, balance: AccountBalance | None = None):
    state, _ = observe(RiskState(), RISK, balance, T0) if balance else (RiskState(), [])
    req = ReservationRequest(holder_id="h", symbol="BTCUSDT", side=Side.LONG, notional_usdt=D(notional))
    return assess(book or PortfolioBook(), POLICY, RISK, state, req, T0)


def test_no_reading_no_equity_gate() -> None:
    assert ask("900").decision.notional_usdt == D(900)


def test_a_grant_is_cut_to_its_share_of_the_equity_with_the_figures() -> None:
    v = ask("900", balance=reading("5000"))
    assert v.decision.notional_usdt == D(500)
    assert [(c.gate, c.from_usdt, c.to_usdt) for c in v.cuts] == [(Gate.EQUITY, D(900), D(500))]
    assert "equity 5000 USDT × 0.1 per trade" in v.cuts[0].reason


def test_the_total_exposure_counts_what_is_reserved() -> None:
    book = PortfolioBook()
    book.reservations["x"] = Reservation(
        holder_id="x", symbol="ETHUSDT", side=Side.LONG, notional_usdt=D(2400), reserved_at_ms=T0
    )
    v = ask("400", book=book, balance=reading("5000"))  # 0.5 × 5000 − 2400 = 100 left
    assert v.decision.notional_usdt == D(100)
    full = ask("400", book=book, balance=reading("4800"))  # 2400 − 2400 = nothing left
    assert full.decision.decision == "denied" and full.decision.gate is Gate.EQUITY


def test_a_high_margin_ratio_refuses_entries() -> None:
    v = ask("100", balance=reading("1000", maint="600"))
    assert v.decision.decision == "denied" and v.decision.gate is Gate.MARGIN_RATIO
    assert "margin ratio 0.6000" in v.decision.reason


def test_an_older_reading_never_replaces_a_newer_one_but_marks_the_equity() -> None:
    state, _ = observe(RiskState(), RISK, reading("5000", at_ms=T0 + 10), T0)
    state, _ = observe(state, RISK, reading("9000", at_ms=T0), T0)
    assert state.balance is not None and state.balance.equity == D(5000)

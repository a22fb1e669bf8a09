"""Cross-margin liquidation prices from account totals (O(n) per tick) equal the per-position sums.

The engine derives a cross position's liquidation price from the account-wide sum of the cross
positions' `unrealized - maintenance` less its own term. The reference here is the straightforward
definition: for each position, sum that term over every OTHER cross position.
"""

from __future__ import annotations

import random
from decimal import Decimal, localcontext

from exchange.paper.config import PaperConfig
from exchange.paper.engine import PaperEngine
from exchange.paper.prices import ManualPrices, symbol_universe
from tests.exchange.paper.test_engine_support import Clock, D
from trading.margin import Position, liquidation_price

ZERO = Decimal(0)


def reference_liq_price(engine: PaperEngine, pos: Position, *, exact: bool = False) -> Decimal:
    """The liquidation price by definition: isolated from its own wallet; cross from the cross wallet
    plus every other cross position's unrealized PnL minus its maintenance margin (`exact`: that sum
    without rounding, else in the default 28-digit context, term after term)."""
    if not pos.amt:
        return ZERO
    mmr = engine.config.maint_margin_rate
    if engine.margin_type[pos.symbol] == "ISOLATED":
        return liquidation_price(pos.amt, pos.entry, pos.iso_wallet, mmr)
    cross_wallet = engine.wallet - sum(
        (
            q.iso_wallet
            for q in engine.positions.values()
            if q.amt and engine.margin_type[q.symbol] == "ISOLATED"
        ),
        ZERO,
    )
    others = ZERO
    for q in engine.positions.values():
        if not q.amt or q.symbol == pos.symbol or engine.margin_type[q.symbol] == "ISOLATED":
            continue
        mark = engine.last[q.symbol]
        term = q.unrealized(mark) - abs(q.amt) * mark * mmr
        if exact:
            with localcontext() as ctx:
                ctx.prec = 10_000
                others += term
        else:
            others += term
    return liquidation_price(pos.amt, pos.entry, cross_wallet + others, mmr)


class ReferenceEngine(PaperEngine):
    """The engine with the per-position (O(n²) per tick) liquidation price."""

    def _liq_price(self, p: Position, totals: dict[str, Decimal] | None = None) -> Decimal:
        return reference_liq_price(self, p)


def _engine(cls: type[PaperEngine], n: int, clock: Clock, balance: str) -> tuple[PaperEngine, ManualPrices]:
    universe = symbol_universe(n)
    symbols = [s for s in universe if s.startswith("T")][:n]
    config = PaperConfig(
        api_key="k", api_secret="s", extra_symbols=n, symbols=[], clock=clock, start_balance=D(balance)
    )
    prices = ManualPrices(symbols, rules=universe)
    return cls(config, prices), prices


def _set_mark(engine: PaperEngine, prices: ManualPrices, symbol: str, price: Decimal) -> None:
    """Move a mark without the liquidation check `set_price` runs (the next `advance` does it)."""
    prices.set(symbol, price)
    engine.last[symbol] = price
    engine._changes += 1  # a moved mark, as _on_price counts it (the check skips a tick with none)


def _open_book(
    engine: PaperEngine,
    prices: ManualPrices,
    rng: random.Random,
    isolated_every: int,
    *,
    long_share: float = 0.5,
    max_qty: int = 400,
) -> None:
    """Positions over every symbol: long and short, leverage 5..50, some isolated, entries averaged
    over one to three fills (entries with 28 significant digits)."""
    for i, s in enumerate(prices.symbols()):
        engine.change_leverage({"symbol": s, "leverage": str(rng.choice([5, 10, 20, 50]))})
        if isolated_every and i % isolated_every == 0:
            engine.change_margin_type({"symbol": s, "marginType": "ISOLATED"})
        side = "BUY" if rng.random() < long_share else "SELL"
        for _ in range(rng.randint(1, 3)):
            _set_mark(engine, prices, s, D(rng.randint(9_000, 11_000)) / 100)
            qty = D(rng.randint(60, max_qty)) / 1000
            engine.new_order({"symbol": s, "side": side, "type": "MARKET", "quantity": str(qty)})


def test_liquidation_prices_of_many_cross_positions_equal_the_per_position_sum() -> None:
    rng = random.Random(11)
    engine, prices = _engine(PaperEngine, 120, Clock(), "2000")
    _open_book(engine, prices, rng, isolated_every=7)
    for s in prices.symbols():
        _set_mark(engine, prices, s, D(rng.randint(9_500, 10_500)) / 100)
    held = [p for p in engine.positions.values() if p.amt]
    assert len(held) == 120
    assert any(len(p.entry.as_tuple().digits) >= 20 for p in held)  # averaged, not round entries
    totals = engine._totals()
    cross = 0
    for pos in held:
        want = reference_liq_price(engine, pos)
        assert engine._liq_price(pos, totals) == want, pos.symbol
        assert engine._liq_price(pos) == want, pos.symbol
        assert reference_liq_price(engine, pos, exact=True) == want, pos.symbol
        cross += engine.margin_type[pos.symbol] == "CROSSED"
    assert cross > 100
    shown = {v["symbol"]: v["liquidationPrice"] for v in engine.position_risk({}, 3)}
    for pos in held:
        want = engine.rules[pos.symbol].round_price(reference_liq_price(engine, pos))
        assert D(shown[pos.symbol]) == want, pos.symbol
    assert any(D(v) > 0 for v in shown.values())
    engine.close()


def test_liquidations_happen_exactly_as_with_the_per_position_sum() -> None:
    """Same orders and mark walks on the engine and on the reference: the same liquidations at the same
    prices, the same wallet and the same everything else, step by step."""
    clock = Clock()
    fast, fast_prices = _engine(PaperEngine, 40, clock, "600")
    slow, slow_prices = _engine(ReferenceEngine, 40, clock, "600")
    for engine, prices in ((fast, fast_prices), (slow, slow_prices)):
        _open_book(engine, prices, random.Random(3), isolated_every=5, long_share=0.8, max_qty=1000)
    assert fast.state_dump() == slow.state_dump()
    walk = random.Random(4)
    symbols = fast_prices.symbols()
    for step in range(80):
        # a random walk, then every mark falls: the longs lose the account's margin step by step
        if step < 40:
            moves = [(s, D(walk.randint(-400, 400)) / 100) for s in walk.sample(symbols, 8)]
        else:
            moves = [(s, D(walk.randint(-150, 10)) / 100) for s in symbols]
        clock.tick(100)
        for engine, prices in ((fast, fast_prices), (slow, slow_prices)):
            for s, delta in moves:
                _set_mark(engine, prices, s, max(D("1"), engine.last[s] + delta))
            engine.advance()
        assert fast.state_dump() == slow.state_dump()
        assert fast.position_risk({}, 3) == slow.position_risk({}, 3)
    assert fast.liquidation_count == slow.liquidation_count >= 20
    liquidated = {o["symbol"] for o in fast.admin_orders() if o["type"] == "LIQUIDATION"}
    assert len(liquidated) == fast.liquidation_count
    cross = {s for s in liquidated if fast.margin_type[s] == "CROSSED"}
    assert len(cross) >= 10 and len(liquidated - cross) >= 3  # both kinds were liquidated
    fast.close()
    slow.close()


def test_a_cross_position_is_liquidated_by_another_symbols_loss() -> None:
    """Cross margin is shared: a loss on one symbol liquidates another whose mark never moved."""
    clock = Clock()
    engine, prices = _engine(PaperEngine, 2, clock, "1000")
    a, b = prices.symbols()
    for s in (a, b):
        engine.change_leverage({"symbol": s, "leverage": "50"})
        engine.new_order({"symbol": s, "side": "BUY", "type": "MARKET", "quantity": "40.000"})
    pos_a = engine.positions[a]
    before = engine._liq_price(pos_a)
    _set_mark(engine, prices, b, D("99.00"))  # b loses 40: a's liquidation price rises
    clock.tick(100)
    engine.advance()
    assert engine._liq_price(pos_a) > before
    assert engine._liq_price(pos_a) == reference_liq_price(engine, pos_a)
    assert engine.positions[a].amt == D("40") and engine.liquidation_count == 0
    _set_mark(engine, prices, b, D("75.00"))  # b loses 1000: the account's margin is gone
    want = engine.rules[a].round_price(reference_liq_price(engine, pos_a))
    assert want >= engine.last[a] == D("100.00")
    clock.tick(100)
    engine.advance()
    assert engine.positions[a].amt == 0
    liq = [o for o in engine.admin_orders(a) if o["type"] == "LIQUIDATION"]
    assert len(liq) == 1 and D(liq[0]["avgPrice"]) == want
    engine.close()


def test_a_tick_in_which_nothing_moved_checks_no_liquidation_and_a_move_checks_again() -> None:
    # At 5,000 held positions the check on every 100 ms tick took most of the venue's time.
    clock = Clock()
    engine, prices = _engine(PaperEngine, 20, clock, "600")
    _open_book(engine, prices, random.Random(5), isolated_every=5)
    engine.advance()
    totals_taken = []
    real = engine._totals
    engine._totals = lambda: (totals_taken.append(1), real())[1]  # type: ignore[method-assign]
    for _ in range(10):
        clock.tick(100)
        engine.advance()
    assert totals_taken == []
    engine.set_price(prices.symbols()[0], D("80"))
    assert totals_taken == [1]
    engine.close()

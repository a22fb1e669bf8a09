"""Symbol rules (trading/instruments.py): rounding onto the venue's grids, the checks with Binance's
error codes, the exchangeInfo mapping, and the rules made up for synthetic and data-only symbols."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trading.instruments import (
    DEFAULT_RULES,
    FilterViolation,
    SymbolRules,
    inferred_rules,
    synthetic_rules,
    synthetic_symbol,
    synthetic_symbols,
)

D = Decimal
SYNTHETIC = "T042USDT"
INFERRED = "PEPEUSDT"  # not among the built-in symbols
RULES = synthetic_rules(SYNTHETIC)  # tick 0.01, step 0.001, min qty 0.001, min notional 5


def test_quantities_round_down_onto_the_step() -> None:
    # down, never up: a close rounded up could exceed the open quantity
    assert RULES.round_qty(D("1.23456")) == D("1.234")
    assert RULES.round_qty(D("0.0009")) == D("0.000")


def test_prices_round_to_the_nearest_tick() -> None:
    assert RULES.round_price(D("100.004")) == D("100.00")
    assert RULES.round_price(D("100.005")) == D("100.01")


@pytest.mark.parametrize(
    ("qty", "market", "code"),
    [
        ("0", False, -4003),
        ("0.0015", False, -1111),
        ("1000000.001", False, -4005),
        ("100000.001", True, -4005),  # a market order has its own, lower, maximum
    ],
)
def test_a_bad_quantity_is_refused_with_binances_code(qty: str, market: bool, code: int) -> None:
    with pytest.raises(FilterViolation) as err:
        RULES.check_qty(D(qty), market=market)
    assert err.value.code == code
    RULES.check_qty(D("100000"), market=market)  # the same order at the maximum passes


@pytest.mark.parametrize(("price", "code"), [("0", -4001), ("100.005", -4014), ("1000000.01", -4016)])
def test_a_bad_price_is_refused_with_binances_code(price: str, code: int) -> None:
    with pytest.raises(FilterViolation) as err:
        RULES.check_price(D(price))
    assert err.value.code == code
    RULES.check_price(D("100.01"))


def test_a_small_notional_is_refused_unless_reduce_only() -> None:
    with pytest.raises(FilterViolation) as err:
        RULES.check_notional(D("0.001"), D("100"))
    assert err.value.code == -4164
    RULES.check_notional(D("0.001"), D("100"), reduce_only=True)
    RULES.check_notional(D("0.05"), D("100"))


def test_the_default_rules_survive_the_exchange_info_round_trip() -> None:
    for symbol, rules in DEFAULT_RULES.items():
        entry = {"symbol": symbol, "baseAsset": rules.base_asset, "filters": rules.to_filters()}
        entry |= {"pricePrecision": rules.price_precision, "quantityPrecision": rules.quantity_precision}
        assert SymbolRules.from_exchange_info(entry) == rules


def test_synthetic_rules_are_pure_and_generic() -> None:
    r = synthetic_rules(SYNTHETIC)
    assert r == synthetic_rules(SYNTHETIC)
    assert (r.symbol, r.base_asset, r.price_precision, r.quantity_precision) == (SYNTHETIC, "T042", 2, 3)
    assert (r.tick_size, r.step_size, r.min_qty, r.market_max_qty, r.min_notional) == (
        Decimal("0.01"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal("100000"),
        Decimal("5"),
    )
    assert (
        SymbolRules.from_exchange_info(
            {
                "symbol": SYNTHETIC,
                "baseAsset": "T042",
                "pricePrecision": 2,
                "quantityPrecision": 3,
                "filters": r.to_filters(),
            }
        )
        == r
    )
    assert synthetic_symbols(3) == ["T001USDT", "T002USDT", "T003USDT"]
    assert synthetic_symbol(999) == "T999USDT" and synthetic_symbol(1000) == "T1000USDT"
    assert synthetic_symbol(9999) == "T9999USDT"
    for out_of_range in (0, 10_000):
        with pytest.raises(ValueError, match="out of range"):
            synthetic_symbol(out_of_range)
    names = synthetic_symbols(9999)
    assert len(set(names)) == 9999 and not set(names) & set(DEFAULT_RULES)


@pytest.mark.parametrize("price", ["65000", "3000", "150", "1.5", "0.15", "0.0000123"])
def test_inferred_filters_scale_with_the_price(price: str) -> None:
    p = Decimal(price)
    r = inferred_rules(INFERRED, p)
    assert Decimal(10) ** 4 <= p / r.tick_size < Decimal(10) ** 5  # five significant digits
    assert Decimal(1) < r.step_size * p <= Decimal(10)  # one step is worth 1..10 USDT
    assert r.min_notional == Decimal(5) and r.max_price >= p * 10_000 and r.min_price == r.tick_size
    assert r.round_price(p) == p
    entry = {"symbol": INFERRED, "baseAsset": "PEPE", "filters": r.to_filters()}
    entry |= {"pricePrecision": r.price_precision, "quantityPrecision": r.quantity_precision}
    assert SymbolRules.from_exchange_info(entry) == r
    with pytest.raises(ValueError, match="not a USDT perpetual"):
        inferred_rules("pepe", p)

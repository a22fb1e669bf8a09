"""Symbol trading rules (Binance's exchangeInfo filters) and the rounding they demand.

Shared by the exchange client (which refuses a bad order locally) and the paper exchange (which
refuses it with Binance's codes), so both sides round and check exactly alike.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class FilterViolation(ValueError):
    """An order breaks a symbol filter. `code` is the Binance error code the venue would answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SymbolRules(BaseModel):
    """The filters of one USD-M perpetual that decide whether an order is acceptable."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    base_asset: str
    quote_asset: str = "USDT"
    price_precision: int = Field(ge=0)
    quantity_precision: int = Field(ge=0)
    tick_size: Decimal = Field(gt=0)
    min_price: Decimal = Field(ge=0)
    max_price: Decimal = Field(gt=0)
    step_size: Decimal = Field(gt=0)
    min_qty: Decimal = Field(gt=0)
    max_qty: Decimal = Field(gt=0)
    market_step_size: Decimal = Field(gt=0)
    market_min_qty: Decimal = Field(gt=0)
    market_max_qty: Decimal = Field(gt=0)
    min_notional: Decimal = Field(ge=0)
    status: str = "TRADING"

    # --- rounding ---
    def round_qty(self, qty: Decimal, *, market: bool = False) -> Decimal:
        """Round a quantity down onto the step grid (never up: rounding up could over-close)."""
        step = self.market_step_size if market else self.step_size
        return _to_step(qty, step, ROUND_DOWN)

    def round_price(self, price: Decimal) -> Decimal:
        """Round a price to the nearest tick."""
        return _to_step(price, self.tick_size, ROUND_HALF_UP)

    def is_on_qty_step(self, qty: Decimal, *, market: bool = False) -> bool:
        step = self.market_step_size if market else self.step_size
        return qty % step == 0

    def is_on_tick(self, price: Decimal) -> bool:
        return (price - self.min_price) % self.tick_size == 0

    # --- checks (Binance's codes) ---
    def check_qty(self, qty: Decimal, *, market: bool = False) -> None:
        lo, hi = (self.market_min_qty, self.market_max_qty) if market else (self.min_qty, self.max_qty)
        if qty <= 0:
            raise FilterViolation(-4003, "Quantity less than or equal to zero.")
        if not self.is_on_qty_step(qty, market=market):
            raise FilterViolation(-1111, "Precision is over the maximum defined for this asset.")
        if qty < lo:
            raise FilterViolation(-4004, "Quantity less than minimum quantity.")
        if qty > hi:
            raise FilterViolation(-4005, "Quantity greater than maximum quantity.")

    def check_price(self, price: Decimal) -> None:
        if price <= 0:
            raise FilterViolation(-4001, "Price less than 0.")
        if not self.is_on_tick(price):
            raise FilterViolation(-4014, "Price not increased by tick size.")
        if price < self.min_price:
            raise FilterViolation(-4013, "Price less than min price.")
        if price > self.max_price:
            raise FilterViolation(-4016, "Limit price can't be higher than max price.")

    def check_notional(self, qty: Decimal, price: Decimal, *, reduce_only: bool = False) -> None:
        if not reduce_only and qty * price < self.min_notional:
            raise FilterViolation(
                -4164,
                f"Order's notional must be no smaller than {self.min_notional} "
                "(unless you choose reduce only).",
            )

    # --- exchangeInfo mapping ---
    @classmethod
    def from_exchange_info(cls, entry: dict[str, Any]) -> SymbolRules:
        """Parse one element of exchangeInfo's `symbols[]`."""
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        price = filters["PRICE_FILTER"]
        lot = filters["LOT_SIZE"]
        market_lot = filters.get("MARKET_LOT_SIZE", lot)
        notional = filters.get("MIN_NOTIONAL", {"notional": "0"})
        return cls(
            symbol=entry["symbol"],
            base_asset=entry["baseAsset"],
            quote_asset=entry.get("quoteAsset", "USDT"),
            price_precision=int(entry.get("pricePrecision", 2)),
            quantity_precision=int(entry.get("quantityPrecision", 3)),
            tick_size=Decimal(price["tickSize"]),
            min_price=Decimal(price["minPrice"]),
            max_price=Decimal(price["maxPrice"]),
            step_size=Decimal(lot["stepSize"]),
            min_qty=Decimal(lot["minQty"]),
            max_qty=Decimal(lot["maxQty"]),
            market_step_size=Decimal(market_lot["stepSize"]),
            market_min_qty=Decimal(market_lot["minQty"]),
            market_max_qty=Decimal(market_lot["maxQty"]),
            min_notional=Decimal(notional.get("notional", notional.get("minNotional", "0"))),
            status=entry.get("status", "TRADING"),
        )

    def to_filters(self) -> list[dict[str, Any]]:
        """The `filters[]` array exactly as Binance's exchangeInfo shows it (values as strings)."""
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": str(self.min_price),
                "maxPrice": str(self.max_price),
                "tickSize": str(self.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": str(self.min_qty),
                "maxQty": str(self.max_qty),
                "stepSize": str(self.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": str(self.market_min_qty),
                "maxQty": str(self.market_max_qty),
                "stepSize": str(self.market_step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": str(self.min_notional)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ]


def _to_step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    units = (value / step).to_integral_value(rounding=rounding)
    return (units * step).quantize(step)


# The real USD-M filters (2026) for the symbols the shipped data covers; the paper exchange lists these.
_D = Decimal
DEFAULT_RULES: dict[str, SymbolRules] = {
    r.symbol: r
    for r in [
        SymbolRules(
            symbol="BTCUSDT",
            base_asset="BTC",
            price_precision=2,
            quantity_precision=3,
            tick_size=_D("0.10"),
            min_price=_D("261.10"),
            max_price=_D("809484"),
            step_size=_D("0.001"),
            min_qty=_D("0.001"),
            max_qty=_D("1000"),
            market_step_size=_D("0.001"),
            market_min_qty=_D("0.001"),
            market_max_qty=_D("120"),
            min_notional=_D("100"),
        ),
        SymbolRules(
            symbol="ETHUSDT",
            base_asset="ETH",
            price_precision=2,
            quantity_precision=3,
            tick_size=_D("0.01"),
            min_price=_D("39.86"),
            max_price=_D("306177"),
            step_size=_D("0.001"),
            min_qty=_D("0.001"),
            max_qty=_D("10000"),
            market_step_size=_D("0.001"),
            market_min_qty=_D("0.001"),
            market_max_qty=_D("2000"),
            min_notional=_D("20"),
        ),
        SymbolRules(
            symbol="BNBUSDT",
            base_asset="BNB",
            price_precision=3,
            quantity_precision=2,
            tick_size=_D("0.010"),
            min_price=_D("6.600"),
            max_price=_D("100000"),
            step_size=_D("0.01"),
            min_qty=_D("0.01"),
            max_qty=_D("100000"),
            market_step_size=_D("0.01"),
            market_min_qty=_D("0.01"),
            market_max_qty=_D("2000"),
            min_notional=_D("5"),
        ),
        SymbolRules(
            symbol="SOLUSDT",
            base_asset="SOL",
            price_precision=4,
            quantity_precision=0,
            tick_size=_D("0.0100"),
            min_price=_D("0.4200"),
            max_price=_D("6857"),
            step_size=_D("1"),
            min_qty=_D("1"),
            max_qty=_D("1000000"),
            market_step_size=_D("1"),
            market_min_qty=_D("1"),
            market_max_qty=_D("10000"),
            min_notional=_D("5"),
        ),
        SymbolRules(
            symbol="XRPUSDT",
            base_asset="XRP",
            price_precision=4,
            quantity_precision=1,
            tick_size=_D("0.0001"),
            min_price=_D("0.0143"),
            max_price=_D("100000"),
            step_size=_D("0.1"),
            min_qty=_D("0.1"),
            max_qty=_D("10000000"),
            market_step_size=_D("0.1"),
            market_min_qty=_D("0.1"),
            market_max_qty=_D("2000000"),
            min_notional=_D("5"),
        ),
        SymbolRules(
            symbol="ADAUSDT",
            base_asset="ADA",
            price_precision=5,
            quantity_precision=0,
            tick_size=_D("0.00010"),
            min_price=_D("0.01740"),
            max_price=_D("2000"),
            step_size=_D("1"),
            min_qty=_D("1"),
            max_qty=_D("10000000"),
            market_step_size=_D("1"),
            market_min_qty=_D("1"),
            market_max_qty=_D("300000"),
            min_notional=_D("5"),
        ),
        SymbolRules(
            symbol="DOGEUSDT",
            base_asset="DOGE",
            price_precision=6,
            quantity_precision=0,
            tick_size=_D("0.000010"),
            min_price=_D("0.002440"),
            max_price=_D("30"),
            step_size=_D("1"),
            min_qty=_D("1"),
            max_qty=_D("50000000"),
            market_step_size=_D("1"),
            market_min_qty=_D("1"),
            market_max_qty=_D("30000000"),
            min_notional=_D("5"),
        ),
        SymbolRules(
            symbol="LTCUSDT",
            base_asset="LTC",
            price_precision=2,
            quantity_precision=3,
            tick_size=_D("0.01"),
            min_price=_D("3.61"),
            max_price=_D("100000"),
            step_size=_D("0.001"),
            min_qty=_D("0.001"),
            max_qty=_D("100000"),
            market_step_size=_D("0.001"),
            market_min_qty=_D("0.001"),
            market_max_qty=_D("5000"),
            min_notional=_D("20"),
        ),
        SymbolRules(
            symbol="LINKUSDT",
            base_asset="LINK",
            price_precision=3,
            quantity_precision=2,
            tick_size=_D("0.001"),
            min_price=_D("0.460"),
            max_price=_D("100000"),
            step_size=_D("0.01"),
            min_qty=_D("0.01"),
            max_qty=_D("100000"),
            market_step_size=_D("0.01"),
            market_min_qty=_D("0.01"),
            market_max_qty=_D("20000"),
            min_notional=_D("5"),
        ),
        SymbolRules(
            symbol="AVAXUSDT",
            base_asset="AVAX",
            price_precision=4,
            quantity_precision=0,
            tick_size=_D("0.0010"),
            min_price=_D("0.0500"),
            max_price=_D("100000"),
            step_size=_D("1"),
            min_qty=_D("1"),
            max_qty=_D("1000000"),
            market_step_size=_D("1"),
            market_min_qty=_D("1"),
            market_max_qty=_D("50000"),
            min_notional=_D("5"),
        ),
    ]
}


# --- synthetic symbols (load tests) ---------------------------------------------------------------
SYNTHETIC_PREFIX = "T"
SYNTHETIC_START_PRICE = Decimal("100.00")
MAX_SYNTHETIC = 9999


def synthetic_symbol(index: int) -> str:
    """The name of the `index`-th synthetic perpetual (1-based): `T001USDT` ... `T999USDT`, then
    `T1000USDT` ... `T9999USDT` (the scale benchmark holds one position on each of 5,000)."""
    if not 1 <= index <= MAX_SYNTHETIC:
        raise ValueError(f"synthetic symbol index out of range 1..{MAX_SYNTHETIC}: {index}")
    return f"{SYNTHETIC_PREFIX}{index:03d}USDT"


def synthetic_symbols(count: int) -> list[str]:
    """The first `count` synthetic symbol names, in order."""
    return [synthetic_symbol(i) for i in range(1, count + 1)]


def synthetic_rules(symbol: str) -> SymbolRules:
    """Generic USD-M-like filters for a synthetic load-test perpetual (pure: same symbol, same rules).

    Tick 0.01, step 0.001, min qty 0.001, market max qty 100000, min notional 5, precisions 2 / 3.
    """
    if not symbol.endswith("USDT") or len(symbol) <= 4:
        raise ValueError(f"not a USDT perpetual name: {symbol!r}")
    return SymbolRules(
        symbol=symbol,
        base_asset=symbol[:-4],
        price_precision=2,
        quantity_precision=3,
        tick_size=_D("0.01"),
        min_price=_D("0.01"),
        max_price=_D("1000000"),
        step_size=_D("0.001"),
        min_qty=_D("0.001"),
        max_qty=_D("1000000"),
        market_step_size=_D("0.001"),
        market_min_qty=_D("0.001"),
        market_max_qty=_D("100000"),
        min_notional=_D("5"),
    )


# --- inferred symbols (served from kline files, no built-in filters) -------------------------------
INFERRED_MIN_NOTIONAL = Decimal("5")


def _power_of_ten(exponent: int) -> Decimal:
    """10**exponent written without an exponent where Decimal allows it (1000, 0.001)."""
    return Decimal(10**exponent) if exponent >= 0 else Decimal(1).scaleb(exponent)


def inferred_rules(symbol: str, reference_price: Decimal) -> SymbolRules:
    """USD-M-like filters for a perpetual without built-in ones, scaled to its price (pure).

    `reference_price` is the lowest price the symbol is expected to trade at (the paper exchange takes
    the lower of its data's first open and last close). The tick keeps five significant digits there,
    one quantity step is worth at most 10 USDT, min notional 5 USDT; the limits leave room for a price
    10,000× higher. A fixed tick would round a 0.00001-USDT coin to zero or a 60,000-USDT one to
    nonsense.
    """
    if not symbol.endswith("USDT") or len(symbol) <= 4 or not symbol.isalnum() or not symbol.isupper():
        raise ValueError(f"not a USDT perpetual name like BTCUSDT: {symbol!r}")
    if not reference_price.is_finite() or reference_price <= 0:
        raise ValueError(f"{symbol}: reference price must be positive, got {reference_price}")
    top = reference_price.adjusted()  # exponent of the leading digit
    tick = _power_of_ten(top - 4)
    step = _power_of_ten((Decimal(10) / reference_price).adjusted())
    return SymbolRules(
        symbol=symbol,
        base_asset=symbol[:-4],
        price_precision=max(0, -tick.as_tuple().exponent),  # type: ignore[operator]
        quantity_precision=max(0, -step.as_tuple().exponent),  # type: ignore[operator]
        tick_size=tick,
        min_price=tick,
        max_price=_power_of_ten(top + 5),
        step_size=step,
        min_qty=step,
        max_qty=step * 10**9,
        market_step_size=step,
        market_min_qty=step,
        market_max_qty=step * 10**8,
        min_notional=INFERRED_MIN_NOTIONAL,
    )

"""Settings of one paper exchange instance (the venue's behaviour, not the trader's)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trading import margin
from trading.instruments import MAX_SYNTHETIC


def _wall_ms() -> int:
    import time

    return int(time.time() * 1000)


class PaperConfig(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    api_key: str = Field(min_length=1, repr=False)
    api_secret: str = Field(min_length=1, repr=False)
    start_balance: Decimal = Decimal("10000")
    taker_fee: Decimal = margin.TAKER_FEE
    maker_fee: Decimal = margin.MAKER_FEE
    slippage_bps: Decimal = Decimal("0")
    funding_rate: Decimal = margin.FUNDING_RATE
    funding_interval_hours: int = margin.FUNDING_INTERVAL_HOURS
    default_leverage: int = 20
    maint_margin_rate: Decimal = margin.MAINT_MARGIN_RATE
    liquidation_fee_rate: Decimal = margin.LIQUIDATION_FEE_RATE
    # Price source: "manual" (fixed until set through /admin/price), "replay" (real klines), "synthetic".
    prices: Literal["manual", "replay", "synthetic"] = "manual"
    data_dir: Path | None = None
    symbols: list[str] | None = None  # None: every symbol the price source has
    # Synthetic perpetuals T001USDT..TNNNUSDT listed on top of `symbols` (load tests); generic filters,
    # start price 100.00 (constant under replay, a random walk under synthetic, settable under manual).
    extra_symbols: int = Field(0, ge=0, le=MAX_SYNTHETIC)
    speed: float = Field(1.0, gt=0)  # market clock speed relative to wall time (replay / synthetic)
    seed: int = 7
    tick_interval_ms: int = Field(100, ge=10)
    weight_limit_1m: int = 2400
    order_limit_10s: int = 300
    order_limit_1m: int = 1200
    # Injectable wall clock (tests); server time and order timestamps use it.
    clock: Callable[[], int] = _wall_ms

"""What a position workflow is asked to do: one trade intent, validated field by field."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trading.exit_profile import ExitProfile

SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}USDT$"


class Side(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"

    @property
    def entry_order_side(self) -> str:
        return "BUY" if self is Side.LONG else "SELL"

    @property
    def exit_order_side(self) -> str:
        return "SELL" if self is Side.LONG else "BUY"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1


class IntentSource(StrEnum):
    MODEL = "model"
    MANUAL = "manual"
    ADOPTED = "adopted"


class ExitOverrides(BaseModel):
    """Per-intent changes to the default exit profile (percentages of the entry price)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stop_loss_pct: Decimal | None = Field(None, gt=0, lt=100)
    take_profit_pct: Decimal | None = Field(None, gt=0, le=1000)
    hard_stop_pct: Decimal | None = Field(None, gt=0, lt=100)
    stop_loss_price: Decimal | None = Field(None, gt=0)
    take_profit_price: Decimal | None = Field(None, gt=0)
    # Any other field of the exit profile (trading/exit_profile.py ExitProfile), e.g.
    # {"trailing_enabled": false, "tp_levels": [{"at": 3, "fraction": 1}]}.
    profile: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _profile_fields(self) -> ExitOverrides:
        if self.profile:
            ExitProfile.model_validate(self.profile)  # unknown or bad fields fail here, by name
        return self


class TradeIntent(BaseModel):
    """One request to open a position. Unknown fields are refused so a typo never goes unnoticed."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    symbol: str = Field(pattern=SYMBOL_PATTERN, description="a USD-M perpetual such as BTCUSDT")
    side: Side
    quantity: Decimal | None = Field(None, gt=0, description="base-asset quantity")
    notional_usdt: Decimal | None = Field(None, gt=0, description="USDT notional at entry")
    leverage: int = Field(5, ge=1, le=125)
    confidence: float = Field(1.0, ge=0, le=1)
    kill_score: float = Field(0.0, ge=0, le=1)
    strategy: str = Field("manual", min_length=1, max_length=64)
    regime: str = Field("unknown", min_length=1, max_length=32)
    source: IntentSource = IntentSource.MANUAL
    intent_id: str | None = Field(None, min_length=1, max_length=128)
    exits: ExitOverrides | None = None

    @model_validator(mode="after")
    def _one_size(self) -> TradeIntent:
        if (self.quantity is None) == (self.notional_usdt is None):
            raise ValueError("give exactly one of quantity or notional_usdt")
        return self

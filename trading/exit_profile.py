"""The exit profile: which exits a position has and where they sit (the harvest levels, the take-profit
ladder, the stops, trailing and the time exit). `trading.exit_policy` runs it; an intent's overrides
(`trading.intents.ExitOverrides`) are checked against it."""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

D = Decimal


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: Decimal = Field(gt=0)  # R multiple (harvest) or percent from entry (take-profit)
    fraction: Decimal = Field(gt=0, le=1)  # of the initial quantity


class ExitProfile(BaseModel):
    """Every exit policy of one position, each switchable. Defaults follow the seed's settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r_basis: Literal["risk", "margin"] = "risk"  # "margin": R against margin, as the old HarvestBrain did
    harvest_enabled: bool = True
    harvest_levels: tuple[Level, ...] = (Level(at=D("0.5"), fraction=D("0.25")),)  # HARVEST_MIN_R
    move_sl_be: bool = True  # MOVE_SL_BE: stop to break-even after the first harvest
    harvest_max_actions_per_min: int = Field(2, ge=1)
    tp_enabled: bool = True
    tp_levels: tuple[Level, ...] = (
        Level(at=D(2), fraction=D("0.25")),
        Level(at=D(4), fraction=D("0.25")),
        Level(at=D(6), fraction=D("0.5")),
    )
    ratchet_sl_enabled: bool = True  # RATCHET_SL_ENABLED: BE after TP1, then the previous TP level
    stop_pct: Decimal = Field(D(2), gt=0, lt=100)  # internal stop from entry
    min_stop_distance_pct: Decimal = Field(D("0.2"), ge=0, lt=100)  # MIN_PRICE_STOP_DISTANCE_PCT
    hard_stop_pct: Decimal = Field(D(3), gt=0, lt=100)  # MAX_LOSS_PCT_HARD_SL, on the exchange
    max_unrealized_loss_pct: Decimal = Field(D("12.5"), gt=0, le=100)  # of the entry notional
    max_margin_loss_pct: Decimal = Field(D(10), gt=0, le=1000)  # MAX_MARGIN_LOSS_PER_TRADE_PCT
    trailing_enabled: bool = True
    trailing_pct: Decimal = Field(D("1.5"), gt=0, lt=100)
    trailing_activation_pct: Decimal = Field(D(1), ge=0)
    trailing_step_pct: Decimal = Field(D("0.25"), gt=0)  # how far a new best price must go to re-arm
    max_holding_seconds: int | None = Field(None, gt=0)  # time exit, off by default

    @field_validator("tp_levels")
    @classmethod
    def _ladder(cls, levels: tuple[Level, ...]) -> tuple[Level, ...]:
        if len(levels) > 4:
            raise ValueError("at most 4 take-profit levels")
        if any(b.at <= a.at for a, b in itertools.pairwise(levels)):
            raise ValueError("take-profit levels must rise")
        return levels

    @field_validator("harvest_levels")
    @classmethod
    def _harvest(cls, levels: tuple[Level, ...]) -> tuple[Level, ...]:
        if any(b.at <= a.at for a, b in itertools.pairwise(levels)):
            raise ValueError("harvest levels must rise")
        return levels

    @field_validator("hard_stop_pct")
    @classmethod
    def _hard_behind_internal(cls, value: Decimal, info) -> Decimal:
        stop = info.data.get("stop_pct")
        if stop is not None and value < stop:
            raise ValueError(
                "hard_stop_pct must be at least stop_pct: the exchange stop is the net behind it"
            )
        return value

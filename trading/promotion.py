"""Champion / challenger / shadow rules of continuous learning (pure).

A challenger replaces the champion only when, scored on the same out-of-sample rows that neither
model trained on, its AUC beats the champion's by `min_auc_gain` and its log-loss is no worse than
`max_logloss_loss` above the champion's. Too few out-of-sample rows is "wait", never "promote": AUC
on a few hundred rows moves by ±0.03 on noise alone. An AUC above `leakage_auc` is refused as
suspected leakage (real bars give 0.50–0.55).

A shadow model's predictions are published with `shadow` set and must never be traded:
`is_tradeable(decision)` is the one check the trading path makes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelScore(BaseModel):
    """A model's out-of-sample scores on one set of rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str | None = None
    rows: int = Field(0, ge=0)
    auc: float | None = None
    logloss: float | None = None
    brier: float | None = None
    pnl_per_trade: float | None = None  # mean net log return per trade of the long/short signal
    note: str | None = None  # why a score is missing (e.g. the champion failed to load)


class PromotionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_auc_gain: float = Field(0.005, ge=0, le=0.5)
    max_logloss_loss: float = Field(0.002, ge=0)
    min_rows: int = Field(300, ge=1)
    leakage_auc: float = Field(0.60, gt=0.5, le=1)


class Verdict(StrEnum):
    PROMOTE = "promote"
    REJECT = "reject"
    WAIT = "wait"  # not enough out-of-sample rows to tell


class PromotionDecision(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: Verdict
    reason: str

    @property
    def promote(self) -> bool:
        return self.verdict is Verdict.PROMOTE


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def decide_promotion(
    challenger: ModelScore, champion: ModelScore | None, policy: PromotionPolicy | None = None
) -> PromotionDecision:
    """Should `challenger` replace `champion` (None: there is none)? Both scored on the same rows."""
    p = policy or PromotionPolicy()
    if challenger.rows < p.min_rows:
        return PromotionDecision(
            verdict=Verdict.WAIT, reason=f"only {challenger.rows} out-of-sample rows (< {p.min_rows})"
        )
    if not _finite(challenger.auc) or not _finite(challenger.logloss):
        return PromotionDecision(
            verdict=Verdict.REJECT, reason=f"challenger has no out-of-sample score ({challenger.note})"
        )
    c_auc, c_ll = float(challenger.auc), float(challenger.logloss)  # type: ignore[arg-type]
    if c_auc > p.leakage_auc:
        return PromotionDecision(
            verdict=Verdict.REJECT,
            reason=f"out-of-sample AUC {c_auc:.4f} > {p.leakage_auc:.2f}: suspected leakage",
        )
    if champion is None:
        return PromotionDecision(verdict=Verdict.PROMOTE, reason="no champion yet")
    if not _finite(champion.auc) or not _finite(champion.logloss):
        return PromotionDecision(
            verdict=Verdict.PROMOTE,
            reason=f"champion {champion.version} cannot be scored ({champion.note})",
        )
    h_auc, h_ll = float(champion.auc), float(champion.logloss)  # type: ignore[arg-type]
    vs = (
        f"AUC {c_auc:.4f} vs champion {champion.version} {h_auc:.4f}, "
        f"log-loss {c_ll:.4f} vs {h_ll:.4f} on {challenger.rows} rows"
    )
    if c_auc < h_auc + p.min_auc_gain:
        return PromotionDecision(
            verdict=Verdict.REJECT, reason=f"does not beat the champion by {p.min_auc_gain}: {vs}"
        )
    if c_ll > h_ll + p.max_logloss_loss:
        return PromotionDecision(verdict=Verdict.REJECT, reason=f"better AUC but worse log-loss: {vs}")
    return PromotionDecision(verdict=Verdict.PROMOTE, reason=f"beats the champion: {vs}")


_TRUE = {"1", "true", "yes", "on"}


def is_tradeable(decision: Mapping[str, Any] | object) -> bool:
    """False for a shadow prediction (a mapping, e.g. a stream entry, or an object with a `shadow`
    attribute); a missing flag means a champion's prediction. Bytes and strings are read as Redis
    writes them ("true" / "1")."""
    if isinstance(decision, Mapping):
        flag = decision.get("shadow", decision.get(b"shadow", False))
    else:
        flag = getattr(decision, "shadow", False)
    if isinstance(flag, bytes):
        flag = flag.decode()
    if isinstance(flag, str):
        return flag.strip().lower() not in _TRUE
    return not bool(flag)

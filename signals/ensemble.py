"""Weighted vote of the available direction models → side, confidence, agreement, kill score.

A model that failed to load (see `load_ensemble`) or raises while predicting is left out; the decision
lists the models used and the missing ones with their reasons. With no model left the decision is
NONE with confidence 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from signals.models.base import DirectionModel, ModelInput, ModelLoadError
from signals.registry import ModelRegistry


class Side(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"
    NONE = "NONE"


def default_kill_score(confidence: float) -> float:
    """The old system's kill score: 1 − confidence (higher = more reason not to trade)."""
    return 1.0 - confidence


@dataclass(frozen=True)
class EnsembleDecision:
    side: Side
    p_up: float
    confidence: float  # max(P(up), 1 − P(up)) of the weighted vote, 0 when no model answered
    models_agree: int  # models whose own vote has the decision's side
    kill_score: float
    votes: dict[str, float]  # model → P(up)
    used: tuple[str, ...]
    missing: dict[str, str]  # model → reason


@dataclass
class Ensemble:
    models: Mapping[str, DirectionModel]
    weights: Mapping[str, float] | None = None
    min_confidence: float = 0.5  # below (or at) this the side is NONE
    kill_score: Callable[[float], float] = default_kill_score
    missing: dict[str, str] = field(default_factory=dict)  # load failures, reported in every decision

    def decide(self, inputs: ModelInput) -> list[EnsembleDecision]:
        n = int(inputs.features.shape[0])
        probs: dict[str, np.ndarray] = {}
        missing = dict(self.missing)
        for name, m in self.models.items():
            try:
                p = np.asarray(m.predict_proba(inputs), dtype=np.float64)
                if p.shape != (n,) or not np.all(np.isfinite(p)):
                    raise ValueError(f"bad output shape {p.shape} or non-finite values")
                probs[name] = np.clip(p, 0.0, 1.0)
            except Exception as e:
                missing[name] = f"predict failed: {type(e).__name__}: {e}"
        used = tuple(probs)
        w = np.array([float((self.weights or {}).get(k, 1.0)) for k in used])
        out = []
        for i in range(n):
            votes = {k: float(probs[k][i]) for k in used}
            if not used or w.sum() <= 0:
                out.append(
                    EnsembleDecision(Side.NONE, 0.5, 0.0, 0, self.kill_score(0.0), votes, used, missing)
                )
                continue
            p = float(np.dot(w, [votes[k] for k in used]) / w.sum())
            conf = max(p, 1.0 - p)
            side = Side.NONE if conf <= self.min_confidence else (Side.LONG if p > 0.5 else Side.SHORT)
            agree = sum(
                1
                for v in votes.values()
                if (v > 0.5 and side is Side.LONG) or (v < 0.5 and side is Side.SHORT)
            )
            out.append(EnsembleDecision(side, p, conf, agree, self.kill_score(conf), votes, used, missing))
        return out


def load_ensemble(
    registry: ModelRegistry,
    names: Sequence[str],
    expected_features: Sequence[str],
    *,
    weights: Mapping[str, float] | None = None,
    feature_free_kinds: Sequence[str] = ("nhits", "patchtst"),
    **kwargs: object,
) -> Ensemble:
    """Champion of each named model; a model that is refused is recorded as missing with the reason."""
    models: dict[str, DirectionModel] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            meta = registry.meta(name)
            feats = None if meta.kind in feature_free_kinds else expected_features
            models[name] = registry.load(name, "champion", feats).model
        except ModelLoadError as e:
            missing[name] = f"load failed: {e}"
    return Ensemble(models, weights, missing=missing, **kwargs)  # type: ignore[arg-type]

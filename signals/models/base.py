"""The one interface every model of the ensemble implements (XGBoost, LightGBM, N-HiTS, PatchTST).

Inputs are numpy arrays batched over symbols; outputs are P(up) per row, in [0, 1]. Tree models read
the feature matrix; the torch forecasters read windows of past log returns (see `ModelInput`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class ModelInput:
    """One batch: `features` [n, f] (scale-free features of each row's last closed bar) and
    `returns` [n, L] (the L most recent log returns of close ending at that bar, oldest first)."""

    features: np.ndarray
    returns: np.ndarray


class ModelLoadError(RuntimeError):
    """A saved model was refused: missing or corrupted file, feature list or library mismatch."""


@runtime_checkable
class DirectionModel(Protocol):
    kind: ClassVar[str]  # "xgboost" | "lightgbm" | "nhits" | "patchtst"

    def fit(self, inputs: ModelInput, labels: np.ndarray, *, seed: int = 0) -> None:
        """Train on labels in {0, 1} (1 = up)."""

    def predict_proba(self, inputs: ModelInput) -> np.ndarray:
        """P(up) per row, float64 in [0, 1]."""

    def save(self, folder: Path) -> None:
        """Write the model file(s) into `folder` (XGBoost .ubj, LightGBM .txt, torch .safetensors + JSON)."""

    @classmethod
    def load(cls, folder: Path) -> DirectionModel:
        """Read a saved model; raise ModelLoadError with a clear reason on any mismatch or corruption."""

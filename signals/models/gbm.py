"""XGBoost and LightGBM direction classifiers behind `DirectionModel`.

Deterministic by construction: one thread, fixed seeds, LightGBM `deterministic=True` with row-wise
histograms — the same data and seed give bit-identical predictions. They read `ModelInput.features`
(NaN is allowed: both libraries route missing values natively). Files: `model.ubj` / `model.txt`
plus `params.json` (hyper-parameters and the feature count).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import xgboost as xgb

from signals.models.base import ModelInput, ModelLoadError

PARAMS_FILE = "params.json"


def _check_fit_args(inputs: ModelInput, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(inputs.features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be [n, f] and labels [n]; got {x.shape} and {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    return x, y


def _read_params(folder: Path, kind: str) -> dict[str, Any]:
    p = folder / PARAMS_FILE
    if not p.is_file():
        raise ModelLoadError(f"{kind}: {p} is missing")
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{kind}: {p} is not valid JSON: {e}") from e
    if d.get("kind") != kind:
        raise ModelLoadError(f"{kind}: {p} describes a {d.get('kind')!r} model")
    return d


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_params(folder: Path, model: XGBoostModel | LightGBMModel) -> None:
    meta = {
        "kind": model.kind,
        "params": model.params,
        "n_features": model.n_features,
        "file": model.file_name,
        "file_sha256": _sha256(folder / model.file_name),
    }
    (folder / PARAMS_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def _verified_file(folder: Path, kind: str, file_name: str, d: dict[str, Any]) -> Path:
    """The model file, after checking it against the sha256 in params.json (a truncated or altered
    file must never reach the native loader, which may crash on it instead of raising)."""
    path = folder / file_name
    if not path.is_file():
        raise ModelLoadError(f"{kind}: model file {path} is missing")
    want = d.get("file_sha256")
    if not isinstance(want, str):
        raise ModelLoadError(f"{kind}: {folder / PARAMS_FILE} has no file_sha256")
    got = _sha256(path)
    if got != want:
        raise ModelLoadError(f"{kind}: {path} is corrupted (sha256 {got[:12]}…, expected {want[:12]}…)")
    return path


class XGBoostModel:
    kind: ClassVar[str] = "xgboost"
    file_name: ClassVar[str] = "model.ubj"

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {
            "num_boost_round": 200,
            "max_depth": 4,
            "eta": 0.05,
            "subsample": 0.8,
            "colsample_bytree": 0.8,
            "min_child_weight": 5.0,
            "lambda": 1.0,
            **params,
        }
        self.booster: xgb.Booster | None = None
        self.n_features: int | None = None

    def _train_params(self, seed: int) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items() if k != "num_boost_round"}
        return {
            **p,
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "nthread": 1,
            "seed": seed,
            "verbosity": 0,
        }

    def fit(self, inputs: ModelInput, labels: np.ndarray, *, seed: int = 0) -> None:
        x, y = _check_fit_args(inputs, labels)
        dtrain = xgb.DMatrix(x, label=y, missing=np.nan, nthread=1)
        self.booster = xgb.train(
            self._train_params(seed), dtrain, num_boost_round=int(self.params["num_boost_round"])
        )
        self.n_features = x.shape[1]

    def predict_proba(self, inputs: ModelInput) -> np.ndarray:
        if self.booster is None:
            raise RuntimeError("xgboost model is not fitted")
        x = np.asarray(inputs.features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected [n, {self.n_features}] features, got {x.shape}")
        p = self.booster.inplace_predict(x, missing=np.nan)
        return np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)

    def save(self, folder: Path) -> None:
        if self.booster is None:
            raise RuntimeError("xgboost model is not fitted")
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / self.file_name))
        _write_params(folder, self)

    @classmethod
    def load(cls, folder: Path) -> XGBoostModel:
        d = _read_params(folder, cls.kind)
        path = _verified_file(folder, cls.kind, cls.file_name, d)
        m = cls(**d.get("params", {}))
        booster = xgb.Booster()
        try:
            booster.load_model(str(path))
        except xgb.core.XGBoostError as e:
            raise ModelLoadError(
                f"xgboost: {path} is corrupted or unreadable: {str(e).splitlines()[0]}"
            ) from e
        booster.set_param({"nthread": 1})
        if booster.num_features() != d.get("n_features"):
            raise ModelLoadError(
                f"xgboost: {path} has {booster.num_features()} features, "
                f"params.json says {d.get('n_features')}"
            )
        m.booster = booster
        m.n_features = int(d["n_features"])
        return m


class LightGBMModel:
    kind: ClassVar[str] = "lightgbm"
    file_name: ClassVar[str] = "model.txt"

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {
            "num_boost_round": 200,
            "num_leaves": 15,
            "learning_rate": 0.05,
            "min_data_in_leaf": 50,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            **params,
        }
        self.booster: lgb.Booster | None = None
        self.n_features: int | None = None

    def _train_params(self, seed: int) -> dict[str, Any]:
        p = {k: v for k, v in self.params.items() if k != "num_boost_round"}
        return {
            **p,
            "objective": "binary",
            "num_threads": 1,
            "deterministic": True,
            "force_row_wise": True,
            "seed": seed,
            "bagging_seed": seed,
            "feature_fraction_seed": seed,
            "data_random_seed": seed,
            "verbose": -1,
        }

    def fit(self, inputs: ModelInput, labels: np.ndarray, *, seed: int = 0) -> None:
        x, y = _check_fit_args(inputs, labels)
        ds = lgb.Dataset(x, label=y, params={"verbose": -1}, free_raw_data=True)
        self.booster = lgb.train(
            self._train_params(seed), ds, num_boost_round=int(self.params["num_boost_round"])
        )
        self.n_features = x.shape[1]

    def predict_proba(self, inputs: ModelInput) -> np.ndarray:
        if self.booster is None:
            raise RuntimeError("lightgbm model is not fitted")
        x = np.asarray(inputs.features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected [n, {self.n_features}] features, got {x.shape}")
        p = self.booster.predict(x, num_threads=1)
        return np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)

    def save(self, folder: Path) -> None:
        if self.booster is None:
            raise RuntimeError("lightgbm model is not fitted")
        folder.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(folder / self.file_name))
        _write_params(folder, self)

    @classmethod
    def load(cls, folder: Path) -> LightGBMModel:
        d = _read_params(folder, cls.kind)
        path = _verified_file(folder, cls.kind, cls.file_name, d)
        m = cls(**d.get("params", {}))
        try:
            booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as e:
            raise ModelLoadError(f"lightgbm: {path} is corrupted or unreadable: {e}") from e
        if booster.num_feature() != d.get("n_features"):
            raise ModelLoadError(
                f"lightgbm: {path} has {booster.num_feature()} features, "
                f"params.json says {d.get('n_features')}"
            )
        m.booster = booster
        m.n_features = int(d["n_features"])
        return m

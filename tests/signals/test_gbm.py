"""XGBoost / LightGBM: learn a simple signal, bit-identical determinism, save/load, refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from signals.models.base import DirectionModel, ModelInput, ModelLoadError
from signals.models.gbm import LightGBMModel, XGBoostModel

MODELS = [XGBoostModel, LightGBMModel]


def _toy(n: int = 3000, seed: int = 0) -> tuple[ModelInput, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    x[rng.random(size=x.shape) < 0.02] = np.nan
    logit = 1.5 * np.nan_to_num(x[:, 0]) - np.nan_to_num(x[:, 1])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return ModelInput(features=x, returns=np.zeros((n, 4))), y


def _small(cls: type) -> DirectionModel:
    return cls(num_boost_round=60)


@pytest.mark.parametrize("cls", MODELS)
def test_learns_and_is_a_direction_model(cls: type) -> None:
    inp, y = _toy()
    m = _small(cls)
    assert isinstance(m, DirectionModel)
    m.fit(ModelInput(inp.features[:2000], inp.returns[:2000]), y[:2000], seed=1)
    p = m.predict_proba(ModelInput(inp.features[2000:], inp.returns[2000:]))
    assert p.dtype == np.float64 and p.shape == (1000,) and np.all((p >= 0) & (p <= 1))
    acc = np.mean((p > 0.5) == (y[2000:] == 1))
    assert acc > 0.7


@pytest.mark.parametrize("cls", MODELS)
def test_same_data_and_seed_bit_identical(cls: type, tmp_path: Path) -> None:
    inp, y = _toy()
    a, b, c = _small(cls), _small(cls), _small(cls)
    a.fit(inp, y, seed=7)
    b.fit(inp, y, seed=7)
    c.fit(inp, y, seed=8)
    pa, pb = a.predict_proba(inp), b.predict_proba(inp)
    assert pa.tobytes() == pb.tobytes()
    assert pa.tobytes() != c.predict_proba(inp).tobytes()  # the seed matters (row/feature bagging)
    a.save(tmp_path / "m")
    loaded = cls.load(tmp_path / "m")
    assert loaded.predict_proba(inp).tobytes() == pa.tobytes()
    assert (tmp_path / "m" / cls.file_name).suffix == {"xgboost": ".ubj", "lightgbm": ".txt"}[cls.kind]


@pytest.mark.parametrize("cls", MODELS)
def test_load_refuses_corrupt_or_missing(cls: type, tmp_path: Path) -> None:
    inp, y = _toy(500)
    m = _small(cls)
    m.fit(inp, y)
    m.save(tmp_path / "m")
    f = tmp_path / "m" / cls.file_name
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3] + b"\x00garbage")
    with pytest.raises(ModelLoadError, match=r"corrupted|features"):
        cls.load(tmp_path / "m")
    f.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        cls.load(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="missing"):
        cls.load(tmp_path / "nothing")


@pytest.mark.parametrize("cls", MODELS)
def test_rejects_bad_inputs(cls: type) -> None:
    inp, y = _toy(300)
    m = _small(cls)
    with pytest.raises(ValueError):
        m.fit(inp, y * 2)
    m.fit(inp, y)
    with pytest.raises(ValueError):
        m.predict_proba(ModelInput(inp.features[:, :3], inp.returns))

"""Registry: round trip, champion alias, refusal of corrupted / missing files, feature and version drift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from signals.models.base import ModelInput, ModelLoadError
from signals.models.gbm import LightGBMModel, XGBoostModel
from signals.registry import ModelRegistry, library_versions

FEATURES = ("f0", "f1", "f2", "f3")


def _toy(n: int = 400) -> tuple[ModelInput, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    y = (x[:, 0] + rng.normal(0, 0.5, n) > 0).astype(float)
    return ModelInput(x, np.zeros((n, 8))), y


def _save(reg: ModelRegistry, cls: type = XGBoostModel, version: str = "v1", champion: bool = True):
    inp, y = _toy()
    m = cls(num_boost_round=20)
    m.fit(inp, y, seed=3)
    meta = reg.save(
        "btc_dir",
        m,
        features=FEATURES,
        label={"kind": "triple_barrier", "horizon": 12},
        training_span={"start_ms": 0, "end_ms": 1, "symbols": ["BTCUSDT"]},
        data_sha256="ab" * 32,
        metrics={"auc": 0.52},
        version=version,
        make_champion=champion,
    )
    return m, meta, inp


@pytest.mark.parametrize("cls", [XGBoostModel, LightGBMModel])
def test_round_trip_and_champion(tmp_path: Path, cls: type) -> None:
    reg = ModelRegistry(tmp_path)
    m, meta, inp = _save(reg, cls)
    folder = tmp_path / "btc_dir" / "v1"
    assert (folder / "meta.json").is_file() and (folder / cls.file_name).is_file()
    d = json.loads((folder / "meta.json").read_text())
    assert d["features"] == list(FEATURES) and d["kind"] == cls.kind and d["metrics"]["auc"] == 0.52
    assert set(d["library_versions"]) >= {"xgboost", "lightgbm", "torch", "numpy"}
    assert d["files"][cls.file_name] == meta.files[cls.file_name] and len(meta.files[cls.file_name]) == 64
    assert d["created_at"] and d["data_sha256"] == "ab" * 32 and d["label"]["horizon"] == 12
    assert reg.champion("btc_dir") == "v1" and (tmp_path / "btc_dir" / "champion").read_text().strip() == "v1"
    loaded = reg.load("btc_dir", "champion", FEATURES)
    assert loaded.meta.version == "v1"
    assert loaded.model.predict_proba(inp).tobytes() == m.predict_proba(inp).tobytes()
    _save(reg, cls, "v2", champion=False)
    assert reg.versions("btc_dir") == ["v1", "v2"] and reg.champion("btc_dir") == "v1"
    reg.set_champion("btc_dir", "v2")
    assert reg.load("btc_dir", "champion", FEATURES).meta.version == "v2"
    with pytest.raises(FileExistsError):
        _save(reg, cls, "v2")


def test_corrupted_file_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _save(reg)
    f = tmp_path / "btc_dir" / "v1" / "model.ubj"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.ubj is corrupted"):
        reg.load("btc_dir", "champion", FEATURES)


def test_changed_feature_list_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _save(reg)
    with pytest.raises(ModelLoadError, match=r"feature list differs.*missing \['f3'\], new \['g3'\]"):
        reg.load("btc_dir", "v1", ("f0", "f1", "f2", "g3"))
    with pytest.raises(ModelLoadError, match="different order"):
        reg.load("btc_dir", "v1", ("f1", "f0", "f2", "f3"))


def test_missing_file_version_and_champion(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelLoadError, match="no champion"):
        reg.load("btc_dir", "champion", FEATURES)
    _save(reg)
    (tmp_path / "btc_dir" / "v1" / "params.json").unlink()
    with pytest.raises(ModelLoadError, match=r"params\.json is missing"):
        reg.load("btc_dir", "v1", FEATURES)
    with pytest.raises(ModelLoadError, match=r"meta\.json is missing"):
        reg.load("btc_dir", "v9", FEATURES)


def test_major_library_version_change_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    _save(reg)
    p = tmp_path / "btc_dir" / "v1" / "meta.json"
    d = json.loads(p.read_text())
    d["library_versions"]["xgboost"] = "1.7.6"
    p.write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match=r"saved with xgboost 1\.7\.6.*major version differs"):
        reg.load("btc_dir", "v1", FEATURES)
    d["library_versions"]["xgboost"] = library_versions()["xgboost"]
    d["library_versions"]["numpy"] = "1.26.4"
    p.write_text(json.dumps(d))
    with pytest.raises(ModelLoadError, match="numpy"):
        reg.load("btc_dir", "v1", FEATURES)


def test_torch_model_through_the_registry(tmp_path: Path) -> None:
    nhits = pytest.importorskip("signals.models.nhits")
    tc = pytest.importorskip("signals.models.torch_common")
    rng = np.random.default_rng(0)
    r = rng.normal(0, 0.01, size=(300, 24))
    y = (r[:, -4:].sum(1) > 0).astype(float)
    try:
        m = nhits.NHiTSDirectionModel(
            train=tc.TrainConfig(epochs=1, batch_size=64), context=16, horizon=4, hidden=16
        )
        m.fit(ModelInput(np.zeros((300, 0)), r), y, seed=0)
    except Exception as e:
        pytest.skip(f"NHiTSDirectionModel not usable yet: {e}")
    reg = ModelRegistry(tmp_path)
    meta = reg.save(
        "btc_nhits", m, features=(), label={}, training_span={}, data_sha256="0" * 64, make_champion=True
    )
    assert any(n.endswith(".safetensors") for n in meta.files)
    loaded = reg.load("btc_nhits", "champion")
    inp = ModelInput(np.zeros((10, 0)), r[:10])
    assert np.array_equal(loaded.model.predict_proba(inp), m.predict_proba(inp))
    st = next(n for n in meta.files if n.endswith(".safetensors"))
    (tmp_path / "btc_nhits" / meta.version / st).write_bytes(b"broken")
    with pytest.raises(ModelLoadError, match="corrupted"):
        reg.load("btc_nhits", "champion")

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from signals.ensemble import Ensemble, Side, default_kill_score, load_ensemble
from signals.models.base import ModelInput
from signals.models.gbm import XGBoostModel
from signals.registry import ModelRegistry


class Const:
    kind: ClassVar[str] = "const"

    def __init__(self, p: float, fail: bool = False) -> None:
        self.p, self.fail = p, fail

    def fit(self, inputs: ModelInput, labels: np.ndarray, *, seed: int = 0) -> None: ...

    def predict_proba(self, inputs: ModelInput) -> np.ndarray:
        if self.fail:
            raise RuntimeError("boom")
        return np.full(inputs.features.shape[0], self.p)

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> Const:
        return cls(0.5)


INP = ModelInput(np.zeros((2, 3)), np.zeros((2, 4)))


def test_weighted_vote_side_confidence_agree_kill() -> None:
    ens = Ensemble(
        {"a": Const(0.7), "b": Const(0.6), "c": Const(0.4)}, weights={"a": 2.0, "b": 1.0, "c": 1.0}
    )
    d = ens.decide(INP)[0]
    assert d.p_up == (2 * 0.7 + 0.6 + 0.4) / 4 and d.side is Side.LONG
    assert d.confidence == d.p_up and d.models_agree == 2
    assert d.kill_score == default_kill_score(d.confidence) == 1 - d.confidence
    assert d.used == ("a", "b", "c") and d.missing == {}
    short = Ensemble({"a": Const(0.2)}, kill_score=lambda c: c / 2).decide(INP)[1]
    assert short.side is Side.SHORT and short.confidence == 0.8 and short.kill_score == 0.4
    flat = Ensemble({"a": Const(0.54)}, min_confidence=0.55).decide(INP)[0]
    assert flat.side is Side.NONE and flat.models_agree == 0


def test_fallback_when_a_model_fails() -> None:
    d = Ensemble({"a": Const(0.7), "bad": Const(0.1, fail=True)}, missing={"gone": "load failed: x"}).decide(
        INP
    )[0]
    assert d.used == ("a",) and d.side is Side.LONG and d.p_up == 0.7
    assert set(d.missing) == {"bad", "gone"} and "boom" in d.missing["bad"]
    none = Ensemble({"bad": Const(0.1, fail=True)}).decide(INP)[0]
    assert none.side is Side.NONE and none.confidence == 0.0 and none.used == ()


def test_load_ensemble_falls_back_on_a_corrupted_model(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(float)
    for name in ("good", "broken"):
        m = XGBoostModel(num_boost_round=10)
        m.fit(ModelInput(x, np.zeros((200, 2))), y)
        reg.save(
            name,
            m,
            features=("a", "b", "c"),
            label={},
            training_span={},
            data_sha256="0" * 64,
            version="v1",
            make_champion=True,
        )
    (tmp_path / "broken" / "v1" / "model.ubj").write_bytes(b"{junk")
    ens = load_ensemble(reg, ["good", "broken", "absent"], ("a", "b", "c"))
    d = ens.decide(ModelInput(x[:3], np.zeros((3, 2))))[0]
    assert d.used == ("good",)
    assert "corrupted" in d.missing["broken"] and "absent" in d.missing

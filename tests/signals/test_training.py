"""End to end training on a small slice of the shipped klines: walk-forward table, registry, champion,
reload with the feature check, and bit-for-bit determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from signals.ensemble import load_ensemble
from signals.labels import LabelSpec
from signals.models.base import ModelInput, ModelLoadError
from signals.registry import ModelRegistry
from signals.training import TorchBudget, main, train_and_validate

MODELS = ("xgboost", "lightgbm", "nhits")
SPEC = LabelSpec(horizon=12)
TINY = TorchBudget(epochs=1, windows_per_epoch=2000, context=32)


@pytest.fixture(scope="module")
def runs(bars3, tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    lines: list[str] = []
    first = train_and_validate(
        models=MODELS,
        label_spec=SPEC,
        folds=3,
        seed=7,
        registry_root=root,
        progress=lines.append,
        bars=bars3,
        torch_budget=TINY,
    )
    second = train_and_validate(
        models=MODELS,
        label_spec=SPEC,
        folds=3,
        seed=7,
        registry_root=root,
        progress=None,
        bars=bars3,
        torch_budget=TINY,
    )
    return root, first, second, lines


def test_table_progress_and_registry(runs, capsys) -> None:
    root, first, _, lines = runs
    rep = first.report
    assert rep.models() == [*MODELS, "ensemble", "always_long", "majority", "momentum"]
    assert len(rep.rows) == (len(MODELS) + 4) * 3
    for m in rep.models():
        assert 0.35 < rep.mean(m, "auc") < 0.60, (m, rep.mean(m, "auc"))
    assert "ensemble" in first.summary_table and "momentum" in first.summary_table
    # progress names the model, the fold, the bars and the AUC
    wf = [ln for ln in lines if ln.startswith("[walk-forward]")]
    assert len(wf) == 3 * len(MODELS)
    assert all("fold" in ln and "bars" in ln and "AUC" in ln for ln in wf)
    reg = ModelRegistry(root)
    for m in MODELS:
        meta = first.saved[m]
        assert first.promoted[m] and reg.champion(m) == meta.version
        assert meta.metrics["wf_auc"] == pytest.approx(rep.mean(m, "auc"))
        assert set(meta.metrics["baselines_wf_auc"]) == {"always_long", "majority", "momentum"}
        assert meta.training_span["symbols"] == list(first.bars.symbols)
        assert meta.data_sha256 == first.bars.sha256()
        assert meta.label == SPEC.to_dict()


def test_champion_kept_when_not_beaten(runs) -> None:
    root, first, second, _ = runs
    reg = ModelRegistry(root)
    for m in MODELS:
        # identical data + seed → identical AUC, which does not *beat* the champion
        assert second.report.mean(m, "auc") == first.report.mean(m, "auc")
        assert not second.promoted[m]
        assert reg.champion(m) == first.saved[m].version
        assert len(reg.versions(m)) == 2


def test_determinism_bit_for_bit_after_reload(runs) -> None:
    root, first, second, _ = runs
    reg = ModelRegistry(root)
    ds = first.dataset
    rows = np.arange(len(ds) - 500, len(ds))
    inp = ModelInput(ds.x[rows], ds.returns[rows])
    for m in MODELS:
        np.testing.assert_array_equal(first.report.oos_predictions[m], second.report.oos_predictions[m])
        p_mem = first.models[m].predict_proba(inp)
        p_champ = reg.load(m, "champion", ds.feature_names).model.predict_proba(inp)
        p_v2 = reg.load(m, second.saved[m].version, ds.feature_names).model.predict_proba(inp)
        assert p_mem.dtype == np.float64
        assert np.array_equal(p_mem, p_champ) and np.array_equal(p_mem, p_v2), m
    ens = load_ensemble(reg, MODELS, ds.feature_names)
    assert not ens.missing
    d = ens.decide(inp)
    assert len(d) == 500 and set(d[0].used) == set(MODELS)


def test_feature_mismatch_refused(runs) -> None:
    root, first, _, _ = runs
    reg = ModelRegistry(root)
    with pytest.raises(ModelLoadError, match="feature list differs"):
        reg.load("xgboost", "champion", first.dataset.feature_names[::-1])


def test_cli_validate_only(capsys, bars3, tmp_path: Path) -> None:
    assert (
        main(
            [
                "--symbols",
                "BTCUSDT,ETHUSDT",
                "--models",
                "lightgbm",
                "--last-n",
                "2500",
                "--folds",
                "2",
                "--horizon",
                "12",
                "--no-save",
                "--registry",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "lightgbm" in out and "always_long" in out and "mean" in out
    assert not any(tmp_path.iterdir())


def test_unknown_model_rejected(bars3, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        train_and_validate(models=("svm",), bars=bars3, registry_root=tmp_path, progress=None)

"""Model-driven backtests are walk-forward: a registry version trained on 2023 backtests from 2024 on
(its decisions, kill scores and regimes reach the trades), and is refused for a range it saw."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from backtest import model_signals
from backtest.model_signals import trained_until_ms
from signals.data import load_aligned
from signals.dataset import build_dataset
from signals.labels import LabelSpec
from signals.models.base import ModelInput
from signals.models.gbm import XGBoostModel
from signals.registry import ModelRegistry
from signals.training import RETURNS_LEN
from workers.cli import main as qtrader


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    bars = load_aligned(["BTCUSDT", "ETHUSDT"], "1h", start_ms=ms("2023-01-01"), end_ms=ms("2024-01-01"))
    spec = LabelSpec()
    ds = build_dataset(bars, spec, returns_len=RETURNS_LEN)
    ds = ds.subset(np.flatnonzero(np.isfinite(ds.returns).all(axis=1)))
    model = XGBoostModel(num_boost_round=30)
    model.fit(ds.inputs(), ds.y, seed=1)
    rows_t = ds.open_time_ms[ds.t]
    ModelRegistry(root).save(
        "xgb",
        model,
        features=ds.feature_names,
        label=spec.to_dict(),
        training_span={
            "symbols": list(bars.symbols),
            "timeframe": "1h",
            "start_ms": int(rows_t.min()),
            "end_ms": int(rows_t.max()),
        },
        data_sha256=bars.sha256(),
        version="v2023",
        make_champion=True,
    )
    return root


def test_refuses_a_range_the_model_was_trained_on(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_DIR", str(registry))
    out = tmp_path / "never"
    argv = [
        "backtest",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--model",
        "xgb@v2023",
        "--from",
        "2023-10-01",
        "--to",
        "2024-02-01",
        "--out",
        str(out),
    ]
    assert qtrader(argv) == 2
    err = capsys.readouterr().err
    assert "xgb version v2023 was trained on data up to 2024-01-" in err and "--from 2024-01-" in err
    assert not out.exists()


def test_model_version_drives_the_trades_after_its_training_span(
    registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODEL_REGISTRY_DIR", str(registry))
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    out = tmp_path / "report"
    argv = [
        "backtest",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--model",
        "xgb",
        "--to",
        "2024-04-01",
        "--out",
        str(out),
    ]
    assert qtrader(argv) == 0  # no --from: the first bar after the model's training data
    meta = ModelRegistry(registry).meta("xgb")
    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert trades, "the model never traded"
    first_entry = min(ms(t["entry_time"].replace(" ", "T")) for t in trades)
    assert first_entry > trained_until_ms(meta)  # every decision after what the model learned from
    assert {t["strategy"] for t in trades} == {"backtest-xgb"}
    assert {t["regime"] for t in trades} - {"unknown"}  # regimes labelled from the same features
    assert {t["side"] for t in trades} <= {"LONG", "SHORT"}


class _Recorder:
    """A direction model that remembers what it was fitted on and always says up."""

    kind = "recorder"
    fitted: ClassVar[list[np.ndarray]] = []

    def fit(self, inputs: ModelInput, labels: np.ndarray, *, seed: int = 0) -> None:
        _Recorder.fitted.append(inputs.features.copy())

    def predict_proba(self, inputs: ModelInput) -> np.ndarray:
        return np.full(inputs.features.shape[0], 0.9)


def test_retraining_per_fold_only_fits_labels_resolved_before_the_fold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars = load_aligned(["BTCUSDT", "ETHUSDT"], "1h", start_ms=ms("2023-06-01"), end_ms=ms("2024-01-01"))
    monkeypatch.setattr(model_signals, "model_factory", lambda kind, spec: _Recorder)
    _Recorder.fitted = []
    first, refit = 2000, 500
    sig = model_signals.retrained_signals("xgboost", bars, first, refit_bars=refit, train_bars=1500)
    folds = list(range(first, bars.n_bars, refit))
    assert len(_Recorder.fitted) == len(folds) == 7
    ds = build_dataset(bars, LabelSpec(), returns_len=RETURNS_LEN)
    where = {row.tobytes(): (int(t), int(e)) for row, t, e in zip(ds.x, ds.t, ds.end, strict=True)}
    for lo, features in zip(folds, _Recorder.fitted, strict=True):
        spans = [where[row.tobytes()] for row in features]
        assert max(e for _, e in spans) < lo  # every label was known before the fold's first decision
        assert min(t for t, _ in spans) >= lo - 1500
        assert max(e for _, e in spans) >= lo - 30  # and the newest ones were used
    assert sig.side.shape == (2, bars.n_bars - first) and (sig.side == 1).mean() > 0.9


def test_walk_forward_cli_trades(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QT_HOME", str(tmp_path / "qt"))
    out = tmp_path / "wf"
    argv = [
        "backtest",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--walk-forward",
        "xgboost",
        "--from",
        "2024-01-01",
        "--to",
        "2024-02-15",
        "--train-days",
        "120",
        "--refit-days",
        "15",
        "--out",
        str(out),
    ]
    assert qtrader(argv) == 0
    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert trades and {t["strategy"] for t in trades} == {"backtest-wf-xgboost"}
    assert min(t["entry_time"] for t in trades) >= "2024-01-01"
    # the signal service's rules: the confidence threshold skips bars; volatility sizing varies the size
    assert json.loads((out / "metrics.json").read_text())["denials"]["signal_skipped"] > 0
    notionals = {round(float(t["qty"]) * float(t["entry_price"]), -1) for t in trades}
    assert len(notionals) > 2, notionals

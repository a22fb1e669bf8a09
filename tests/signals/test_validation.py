"""Walk-forward: numpy metrics vs plain definitions, purging/embargo, leakage alarm, real-data sanity."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from signals.data import AlignedKlines
from signals.dataset import Dataset, build_dataset
from signals.labels import LabelSpec
from signals.models.gbm import LightGBMModel, XGBoostModel
from signals.validation import (
    SuspectedLeakageError,
    WalkForwardConfig,
    brier,
    log_loss,
    roc_auc,
    signal_pnl,
    walk_forward,
    walk_forward_splits,
)


def ref_auc(y: list[int], p: list[float]) -> float:
    pos = [pi for yi, pi in zip(y, p, strict=True) if yi == 1]
    neg = [pi for yi, pi in zip(y, p, strict=True) if yi == 0]
    s = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return s / (len(pos) * len(neg))


def test_metrics_match_definitions() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 2)  # ties on purpose
    assert roc_auc(y, p) == pytest.approx(ref_auc(y.tolist(), p.tolist()), abs=1e-12)
    assert roc_auc(y, y.astype(float)) == 1.0 and roc_auc(y, 1.0 - y) == 0.0
    assert roc_auc(y, np.full(300, 0.3)) == 0.5
    assert math.isnan(roc_auc(np.ones(5), np.ones(5)))
    ll = -sum(
        math.log(pi) if yi else math.log(1 - pi) for yi, pi in zip(y, p.clip(1e-15, 1 - 1e-15), strict=True)
    )
    assert log_loss(y, p) == pytest.approx(ll / 300)
    assert brier(y, p) == pytest.approx(float(np.mean((p - y) ** 2)))
    pnl, n = signal_pnl(np.array([0.9, 0.1, 0.5]), np.array([0.01, 0.02, 0.5]))
    assert n == 2 and pnl == pytest.approx(((0.01 - 0.0008) + (-0.02 - 0.0008)) / 2)


def test_splits_purge_and_embargo() -> None:
    t = np.repeat(np.arange(1000), 2)
    end = t + 10  # every label resolves 10 bars later
    folds = walk_forward_splits(t, end, n_folds=4, embargo=5, min_train_frac=0.4)
    assert len(folds) == 4
    prev_end = None
    for f in folds:
        a = f.test_start
        assert np.all(t[f.test_rows] >= a) and np.all(t[f.test_rows] < f.test_end)
        assert np.all(end[f.train_rows] < a)  # purged: no training label window reaches the test fold
        assert np.all(t[f.train_rows] < a - 5)  # embargo
        assert t[f.train_rows].max() == a - 11  # the last admissible row: its label ends at a - 1
        if prev_end is not None:
            assert a == prev_end
        prev_end = f.test_end
    assert folds[-1].test_end == 1000


@pytest.fixture(scope="module")
def btc_ds(btc_1h: AlignedKlines) -> Dataset:
    return build_dataset(btc_1h.slice(0, 8000), LabelSpec(horizon=12), returns_len=16)


def test_leaky_feature_triggers_leakage_error(btc_ds: Dataset) -> None:
    leaky = np.column_stack([btc_ds.x, btc_ds.ret])  # the label's own future return
    ds = Dataset(
        ("*features", "future_ret"),
        btc_ds.label_spec,
        leaky,
        btc_ds.returns,
        btc_ds.y,
        btc_ds.t,  # type: ignore[arg-type]
        btc_ds.end,
        btc_ds.symbol,
        btc_ds.ret,
        btc_ds.last_ret,
        btc_ds.open_time_ms,
        btc_ds.symbols,
    )
    msgs: list[str] = []
    with pytest.raises(SuspectedLeakageError, match="AUC"):
        walk_forward(
            ds,
            {"xgboost": lambda: XGBoostModel(num_boost_round=30)},
            WalkForwardConfig(n_folds=3),
            progress=msgs.append,
        )
    assert msgs and "fold 1/3" in msgs[0] and "AUC" in msgs[0]


def test_real_btc_walk_forward_is_sane(btc_ds: Dataset) -> None:
    msgs: list[str] = []
    rep = walk_forward(
        btc_ds,
        {"lightgbm": lambda: LightGBMModel(num_boost_round=60)},
        WalkForwardConfig(n_folds=4),
        seed=1,
        progress=msgs.append,
    )
    s = rep.summary()
    assert set(s) == {"lightgbm", "always_long", "majority", "momentum"}
    assert 0.44 < s["lightgbm"]["auc"] < 0.60
    assert s["always_long"]["auc"] == 0.5
    assert 0.6 < s["lightgbm"]["logloss"] < 0.8
    assert len(msgs) == 4
    table = rep.format_table()
    assert "momentum" in table and "mean" in table
    oos = rep.oos_predictions["lightgbm"]
    assert np.isfinite(oos).sum() == sum(r.n_test for r in rep.rows if r.model == "lightgbm")

"""The torch forecasters (N-HiTS, PatchTST) and their DirectionModel adapters: shapes and batching,
bit-for-bit determinism, save / load, refusal of corrupted or mismatched files, a learning sanity check
and probabilities in [0, 1]. Tiny configurations so the whole file stays well under 30 s on 2 cores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from signals.models.base import DirectionModel, ModelInput, ModelLoadError
from signals.models.nhits import NHiTSDirectionModel, NHiTSForecaster
from signals.models.patchtst import PatchTSTDirectionModel, PatchTSTForecaster
from signals.models.torch_common import CONFIG_FILE, WEIGHTS_FILE, TorchForecaster, TrainConfig

CONTEXT, HORIZON = 48, 12
SMALL = {
    "nhits": {"hidden": 32, "pools": [4, 2, 1], "downsample": [4, 2, 1]},
    "patchtst": {"patch_len": 8, "stride": 4, "d_model": 16, "n_heads": 2, "d_ff": 32, "layers": 1},
}
FORECASTERS = {"nhits": NHiTSForecaster, "patchtst": PatchTSTForecaster}
DIRECTION = {"nhits": NHiTSDirectionModel, "patchtst": PatchTSTDirectionModel}
QUICK = TrainConfig(epochs=3, batch_size=128, lr=3e-3)


def sine_windows(n_series: int = 4, length: int = 900, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    """Windows [N, CONTEXT + HORIZON] of sine series (period 24, random phase / amplitude) plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    out = []
    for _ in range(n_series):
        s = rng.uniform(0.5, 2.0) * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi))
        s = s + noise * rng.standard_normal(length)
        out.append(np.lib.stride_tricks.sliding_window_view(s, CONTEXT + HORIZON))
    return np.concatenate(out).astype(np.float32)


def make(kind: str) -> TorchForecaster:
    return FORECASTERS[kind](context=CONTEXT, horizon=HORIZON, **SMALL[kind])


@pytest.fixture(scope="module", params=["nhits", "patchtst"])
def fitted(request: pytest.FixtureRequest) -> tuple[str, TorchForecaster, np.ndarray]:
    kind = request.param
    windows = sine_windows()
    train, test = windows[:2400], windows[2400:]
    model = make(kind)
    model.fit_forecast(train, config=QUICK, seed=7)
    return kind, model, test


def returns_input(n: int, width: int, seed: int = 0) -> tuple[ModelInput, np.ndarray]:
    """Log returns with a predictable cycle (period 12) plus noise; label = sign of the next 6 returns."""
    rng = np.random.default_rng(seed)
    total = n + width + 6
    t = np.arange(total)
    r = 0.004 * np.sin(2 * np.pi * t / 12) + 0.002 * rng.standard_normal(total)
    rows = np.lib.stride_tricks.sliding_window_view(r, width)[:n]
    future = np.array([r[i + width : i + width + 6].sum() for i in range(n)])
    inputs = ModelInput(features=np.zeros((n, 3)), returns=np.ascontiguousarray(rows))
    return inputs, (future > 0).astype(np.float64)


@pytest.fixture(scope="module", params=["nhits", "patchtst"])
def direction(request: pytest.FixtureRequest):
    kind = request.param
    inputs, labels = returns_input(1200, CONTEXT + HORIZON)
    # labels look 6 bars ahead, the forecast 12: the direction score sums the first 6 forecast steps
    model = DIRECTION[kind](train=QUICK, context=CONTEXT, horizon=HORIZON, steps=6, **SMALL[kind])
    model.fit(inputs, labels, seed=3)
    return kind, model


# --- forecaster API ------------------------------------------------------------------------------------


def test_shapes_and_batching(fitted) -> None:
    _, model, test = fitted
    ctx = test[:37, :CONTEXT]
    out = model.forecast(ctx)
    assert out.shape == (37, HORIZON) and out.dtype == np.float32
    # extra leading history is ignored: only the last `context` values are read
    longer = np.concatenate([np.zeros((37, 10), np.float32), ctx], axis=1)
    np.testing.assert_array_equal(model.forecast(longer), out)
    # one batched call matches row-by-row calls and small chunks (eval mode: no batch dependence)
    single = np.concatenate([model.forecast(ctx[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(single, out[:5], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.forecast(ctx, batch_size=8), out, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="context"):
        model.forecast(ctx[:, : CONTEXT - 1])
    bad = ctx.copy()
    bad[0, -1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.forecast(bad)


def test_learns_sine_better_than_naive(fitted) -> None:
    kind, model, test = fitted
    naive = np.repeat(test[:, CONTEXT - 1 : CONTEXT], HORIZON, axis=1)
    naive_mse = float(np.mean((naive - test[:, CONTEXT:]) ** 2))
    mse = model.mse(test)
    assert mse < 0.6 * naive_mse, (kind, mse, naive_mse)


@pytest.mark.parametrize("kind", ["nhits", "patchtst"])
def test_deterministic_bit_for_bit(kind: str) -> None:
    windows = sine_windows(n_series=2, length=300, seed=1)
    cfg = TrainConfig(epochs=2, batch_size=64, lr=3e-3)
    a, b, c = make(kind), make(kind), make(kind)
    a.fit_forecast(windows, config=cfg, seed=11)
    b.fit_forecast(windows, config=cfg, seed=11)
    c.fit_forecast(windows, config=cfg, seed=12)
    ctx = windows[:50, :CONTEXT]
    assert np.array_equal(a.forecast(ctx), b.forecast(ctx))
    for (ka, va), (kb, vb) in zip(a.state_tensors().items(), b.state_tensors().items(), strict=True):
        assert ka == kb and bool((va == vb).all()), ka
    assert not np.array_equal(a.forecast(ctx), c.forecast(ctx))


def test_forecaster_save_load_round_trip(fitted, tmp_path: Path) -> None:
    kind, model, test = fitted
    model.save(tmp_path)
    assert (tmp_path / WEIGHTS_FILE).is_file() and (tmp_path / CONFIG_FILE).is_file()
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["kind"] == kind and meta["hparams"]["context"] == CONTEXT
    loaded = FORECASTERS[kind].load(tmp_path)
    ctx = test[:20, :CONTEXT]
    assert np.array_equal(loaded.forecast(ctx), model.forecast(ctx))


# --- refusals ------------------------------------------------------------------------------------------


def test_corrupted_weights_refused(fitted, tmp_path: Path) -> None:
    kind, model, _ = fitted
    model.save(tmp_path)
    weights = tmp_path / WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(ModelLoadError, match="corrupted"):
        FORECASTERS[kind].load(tmp_path)
    # truncated file whose recorded checksum was (wrongly) updated: the safetensors reader refuses it
    weights.write_bytes(bytes(blob[:100]))
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    import hashlib

    meta["weights_sha256"] = hashlib.sha256(bytes(blob[:100])).hexdigest()
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="cannot read"):
        FORECASTERS[kind].load(tmp_path)
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        FORECASTERS[kind].load(tmp_path)


def test_corrupted_json_refused(fitted, tmp_path: Path) -> None:
    kind, model, _ = fitted
    model.save(tmp_path)
    (tmp_path / CONFIG_FILE).write_text('{"kind": "' + kind)
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        FORECASTERS[kind].load(tmp_path)


def _edit_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / CONFIG_FILE).read_text())
    for key, value in changes.items():
        if key == "hparams":
            meta["hparams"].update(value)
        else:
            meta[key] = value
    (folder / CONFIG_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"hparams": {"horizon": HORIZON + 4}}, "the hyper-parameters need"),
        ({"hparams": {"context": CONTEXT * 2}}, "the hyper-parameters need"),
        ({"hparams": {"bogus": 1}}, "do not match this code"),
        ({"format": 99}, "file format"),
        ({"torch": "1.13.0"}, "saved with torch"),
    ],
)
def test_mismatched_hparams_refused(fitted, tmp_path: Path, change: dict, reason: str) -> None:
    kind, model, _ = fitted
    model.save(tmp_path)
    _edit_meta(tmp_path, **change)
    with pytest.raises(ModelLoadError, match=reason):
        FORECASTERS[kind].load(tmp_path)


def test_wrong_kind_refused(fitted, tmp_path: Path) -> None:
    kind, model, _ = fitted
    model.save(tmp_path)
    other = "patchtst" if kind == "nhits" else "nhits"
    with pytest.raises(ModelLoadError, match=f"holds a '{kind}' model"):
        FORECASTERS[other].load(tmp_path)
    with pytest.raises(ModelLoadError, match="direction calibration"):
        DIRECTION[kind].load(tmp_path)  # a bare forecaster is not a direction model


# --- DirectionModel adapter ----------------------------------------------------------------------------


def test_direction_probabilities(direction) -> None:
    kind, model = direction
    assert isinstance(model, DirectionModel) and model.kind == kind
    inputs, labels = returns_input(400, CONTEXT + 20, seed=5)  # unseen, longer rows
    p = model.predict_proba(inputs)
    assert p.shape == (400,) and p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1)) and np.isfinite(p).all()
    assert p.std() > 0.01  # not a constant
    # the cycle is predictable: the calibrated forecast sorts the directions well out of sample
    accuracy = float(np.mean((p > 0.5) == (labels > 0.5)))
    assert accuracy > 0.7, (kind, accuracy)
    single = model.predict_proba(ModelInput(features=inputs.features[:1], returns=inputs.returns[:1]))
    np.testing.assert_allclose(single, p[:1], rtol=1e-5, atol=1e-6)
    assert model.forecast_returns(inputs).shape == (400, HORIZON)


def test_direction_save_load_round_trip(direction, tmp_path: Path) -> None:
    kind, model = direction
    model.save(tmp_path)
    loaded = DIRECTION[kind].load(tmp_path)
    inputs, _ = returns_input(50, CONTEXT, seed=9)
    assert np.array_equal(loaded.predict_proba(inputs), model.predict_proba(inputs))
    _edit_meta(tmp_path, direction={"scale": 1.0, "sigma_res": -1.0, "a": 0.0, "b": 0.0, "steps": 6})
    with pytest.raises(ModelLoadError, match="invalid direction calibration"):
        DIRECTION[kind].load(tmp_path)


@pytest.mark.parametrize("kind", ["nhits", "patchtst"])
def test_direction_deterministic_and_input_checks(kind: str) -> None:
    inputs, labels = returns_input(300, CONTEXT + HORIZON, seed=2)
    cfg = TrainConfig(epochs=1, batch_size=64)
    a = DIRECTION[kind](train=cfg, context=CONTEXT, horizon=HORIZON, **SMALL[kind])
    b = DIRECTION[kind](train=cfg, context=CONTEXT, horizon=HORIZON, **SMALL[kind])
    a.fit(inputs, labels, seed=4)
    b.fit(inputs, labels, seed=4)
    assert np.array_equal(a.predict_proba(inputs), b.predict_proba(inputs))
    short = ModelInput(features=inputs.features, returns=inputs.returns[:, : CONTEXT + HORIZON - 1])
    with pytest.raises(ValueError, match="past log returns"):
        a.fit(short, labels)
    with pytest.raises(ValueError, match="labels"):
        a.fit(inputs, labels[:-1])
    with pytest.raises(ValueError, match="steps"):
        DIRECTION[kind](context=CONTEXT, horizon=HORIZON, steps=HORIZON + 1, **SMALL[kind])

"""Benchmark: the torch forecasters against their papers on ETTh1, and their inference latency.

`python -m bench.models [--quick]`

Paper check: ETTh1 (`data/ett/ETTh1.csv.gz`), the standard split of 12/4/4 months
(8640/2880/2880 hourly rows; validation and test windows start `context` rows before their border),
per-channel standardisation fitted on the training rows, channel-independent windows of all 7
channels, horizon 96, test MSE in standardised units averaged over all test windows and channels.
Papers: PatchTST/64 0.370 (PatchTST/42, L=336: 0.375), N-HiTS 0.378 (Nixtla's reproduction).

Budgets (2 CPU cores): full mode trains N-HiTS (L=512) and PatchTST (L=336, the paper's ETTh1 model
size) on capped epochs / wall-clock budgets, a few minutes in all; `--quick` trains PatchTST only on a
reduced budget (the figure is then only a smoke check) and reports N-HiTS as null.
Signal layer (`signal_results`): a quick walk-forward of every model + the ensemble on the shipped
BTCUSDT/ETHUSDT 1h klines (`auc`: model → mean out-of-sample AUC, baselines included), then the
whole-ensemble inference at a bar close for 1 and 100 symbols — incremental `FeatureEngine.update` for
the new closed bar + the rolling return windows + every model's `predict_proba` + the ensemble vote —
p50 / p99 in ms (`ensemble_1_*`, `ensemble_100_*`), and the incremental features alone
(`features_100_ms`, p50). 100 symbols are built from the 10 shipped 1h series at different offsets.

Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from signals.data import AlignedKlines, available, default_data_dir, load_klines
from signals.ensemble import Ensemble
from signals.features import compute_features
from signals.models.base import ModelInput
from signals.models.nhits import NHiTSDirectionModel, NHiTSForecaster
from signals.models.patchtst import PatchTSTDirectionModel, PatchTSTForecaster
from signals.models.torch_common import TorchForecaster, TrainConfig
from trading.config import SHIPPED_DATA_DIR

ETTH1 = SHIPPED_DATA_DIR / "ett" / "ETTh1.csv.gz"  # the unmodified file, gzipped
HORIZON = 96
PAPER = {"patchtst": 0.370, "nhits": 0.378}
MONTH = 30 * 24
TRAIN_END, VAL_END, TEST_END = 12 * MONTH, 16 * MONTH, 20 * MONTH


def log(msg: str) -> None:
    print(f"[bench.models] {msg}", file=sys.stderr, flush=True)


def etth1_path() -> Path:
    """ETTh1 in `QT_DATA_DIR/ett` (gzipped or the plain CSV, as the full data folder holds it), else the
    repository's copy."""
    for name in ("ETTh1.csv.gz", "ETTh1.csv"):
        path = default_data_dir() / "ett" / name
        if path.is_file():
            return path
    return ETTH1


def load_etth1() -> np.ndarray:
    """[T, 7] float64 of the 7 channels (HUFL … OT), in file order (numpy reads the .gz itself)."""
    return np.loadtxt(etth1_path(), delimiter=",", skiprows=1, usecols=range(1, 8), dtype=np.float64)


def etth1_windows(context: int, horizon: int = HORIZON) -> dict[str, np.ndarray]:
    """Channel-independent windows [N, context + horizon] (float32) per split, train-set standardised."""
    data = load_etth1()
    train = data[:TRAIN_END]
    data = (data - train.mean(axis=0)) / train.std(axis=0)
    borders = {
        "train": (0, TRAIN_END),
        "val": (TRAIN_END - context, VAL_END),
        "test": (VAL_END - context, TEST_END),
    }
    out = {}
    for name, (lo, hi) in borders.items():
        seg = data[lo:hi].T.astype(np.float32)  # [7, T]
        win = np.lib.stride_tricks.sliding_window_view(seg, context + horizon, axis=1)  # [7, W, L+H]
        out[name] = np.ascontiguousarray(win.reshape(-1, context + horizon))
    return out


def _paper_result(name: str, model: TorchForecaster, windows: dict[str, np.ndarray], report: Any) -> dict:
    t0 = time.perf_counter()
    mse = model.mse(windows["test"])
    log(
        f"{name}: test MSE {mse:.4f} over {len(windows['test'])} windows (paper {PAPER[name]:.3f}, "
        f"{100 * (mse / PAPER[name] - 1):+.1f}%), eval {time.perf_counter() - t0:.1f}s"
    )
    return {
        f"etth1_{name}_mse": round(mse, 4),
        f"etth1_{name}_paper": PAPER[name],
        f"etth1_{name}_within_10pct": bool(mse <= 1.10 * PAPER[name]),
        f"{name}_train_seconds": round(report.seconds, 1),
        f"{name}_epochs": report.epochs_run,
        f"{name}_params": model.n_params(),
        f"{name}_context": model.context,
    }


def etth1_patchtst_mse(quick: bool) -> dict[str, Any]:
    """PatchTST on ETTh1, H=96: L=336, patch 16 / stride 8, the paper's ETTh1 size (d=16, 4 heads,
    3 layers, d_ff=128, dropout 0.3). Full: up to 10 epochs of 1/2 of the training windows (early
    stop on validation MSE, wall-clock budget 240 s). Quick: 3 epochs of 12k windows."""
    context = 336
    w = etth1_windows(context)
    model = PatchTSTForecaster(
        context=context,
        horizon=HORIZON,
        patch_len=16,
        stride=8,
        d_model=16,
        n_heads=4,
        d_ff=128,
        layers=3,
        dropout=0.3,
        head_dropout=0.0,
    )
    if quick:
        cfg = TrainConfig(epochs=3, batch_size=128, lr=2e-3, windows_per_epoch=12000, time_budget_s=45)
    else:
        cfg = TrainConfig(
            epochs=10,
            batch_size=128,
            lr=1e-3,
            windows_per_epoch=len(w["train"]) // 2,
            time_budget_s=240,
            patience=3,
        )
    val = w["val"][::4] if quick else w["val"][::2]
    log(f"patchtst: {len(w['train'])} train windows, {len(val)} val windows, {cfg}")
    report = model.fit_forecast(w["train"], val_windows=val, config=cfg, seed=0, log=log, name="patchtst")
    return _paper_result("patchtst", model, w, report) | {"_model": model}


def etth1_nhits_mse(quick: bool) -> dict[str, Any]:
    """N-HiTS on ETTh1, H=96: L=512, 3 stacks of 1 block, pools 8/4/1, knots 96/24, 96/12, 96 (H/4,
    H/8, H), MLP 2 x 512, RevIN. Full: up to 12 rounds of 14k windows (early stop on validation
    MSE, budget 90 s). Quick: not run (null)."""
    if quick:
        return {
            "etth1_nhits_mse": None,
            "etth1_nhits_paper": PAPER["nhits"],
            "etth1_nhits_within_10pct": None,
            "nhits_train_seconds": None,
        }
    context = 512
    w = etth1_windows(context)
    model = NHiTSForecaster(
        context=context,
        horizon=HORIZON,
        pools=[8, 4, 1],
        downsample=[24, 12, 1],
        hidden=512,
        mlp_layers=2,
        dropout=0.0,
        revin=True,
    )
    # 2M parameters memorise the 56k overlapping windows within ~1 epoch: constant low LR, validation
    # every 14k windows, keep the best checkpoint
    cfg = TrainConfig(
        epochs=12,
        batch_size=256,
        lr=3e-4,
        onecycle=False,
        windows_per_epoch=14000,
        time_budget_s=90,
        patience=3,
    )
    log(f"nhits: {len(w['train'])} train windows, {len(w['val'])} val windows, {cfg}")
    report = model.fit_forecast(w["train"], val_windows=w["val"], config=cfg, seed=0, log=log, name="nhits")
    return _paper_result("nhits", model, w, report) | {"_model": model}


def _latency_ms(fn: Any, repeats: int) -> tuple[float, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]


def inference_timings(model: TorchForecaster | None, prefix: str, repeats: int) -> dict[str, float]:
    """p50 / p99 of `forecast` for 1 and 100 series (one batched call), in ms."""
    if model is None:
        return {}
    out = {}
    rng = np.random.default_rng(0)
    for n in (1, 100):
        x = rng.standard_normal((n, model.context)).astype(np.float32)
        p50, p99 = _latency_ms(lambda x=x: model.forecast(x), repeats)
        out[f"{prefix}_infer_{n}_p50_ms"] = round(p50, 3)
        out[f"{prefix}_infer_{n}_p99_ms"] = round(p99, 3)
    log(f"{prefix} inference: " + ", ".join(f"{k.removeprefix(prefix + '_')} {v}" for k, v in out.items()))
    return out


def direction_timings(repeats: int) -> dict[str, float]:
    """The DirectionModel adapters at their default sizes (what the ensemble runs): fit on a small
    synthetic returns set, then time `predict_proba` for 1 and 100 symbols."""
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}
    for cls in (NHiTSDirectionModel, PatchTSTDirectionModel):
        model = cls(train=TrainConfig(epochs=1, batch_size=256))
        need = model.forecaster.context + model.forecaster.horizon
        r = rng.standard_normal((2000, need)) * 0.01
        labels = (rng.random(2000) < 0.5).astype(np.float64)
        t0 = time.perf_counter()
        model.fit(ModelInput(features=np.zeros((2000, 0)), returns=r), labels, seed=0)
        out[f"{cls.kind}_direction_fit_2000_s"] = round(time.perf_counter() - t0, 2)
        for n in (1, 100):
            inp = ModelInput(features=np.zeros((n, 0)), returns=r[:n])
            p50, p99 = _latency_ms(lambda inp=inp, m=model: m.predict_proba(inp), repeats)
            out[f"{cls.kind}_direction_{n}_p50_ms"] = round(p50, 3)
            out[f"{cls.kind}_direction_{n}_p99_ms"] = round(p99, 3)
    log("direction adapters: " + ", ".join(f"{k} {v}" for k, v in out.items()))
    return out


def torch_model_results(quick: bool) -> dict[str, Any]:
    """All keys of the torch-model part of the benchmark (the ensemble part adds its own)."""
    repeats = 50 if quick else 200
    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    nhits = etth1_nhits_mse(quick)
    patchtst = etth1_patchtst_mse(quick)
    result |= {k: v for k, v in nhits.items() if not k.startswith("_")}
    result |= {k: v for k, v in patchtst.items() if not k.startswith("_")}
    result |= inference_timings(nhits.get("_model"), "nhits_etth1", repeats)
    result |= inference_timings(patchtst.get("_model"), "patchtst_etth1", repeats)
    result |= direction_timings(repeats)
    result["torch_bench_seconds"] = round(time.perf_counter() - t0, 1)
    return result


# ------------------------------------------------------------------------------------- signal layer

N_WARM = 300  # bars of history before the timed bar closes (feature warm-up + 96 returns)


def synthetic_universe(n_symbols: int, n_bars: int) -> AlignedKlines:
    """`n_symbols` series of `n_bars` 1h bars on one time grid, cut from the shipped 1h klines at
    different offsets (symbol 0 is BTCUSDT itself, so the BTC context features are real)."""
    bases = [s for s, tf in available() if tf == "1h"]
    bases.sort(key=lambda s: s != "BTCUSDT")
    series = {s: load_klines(s, "1h") for s in bases}
    grid = series["BTCUSDT"].open_time_ms[-n_bars:]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("open", "high", "low", "close", "volume")}
    names = []
    for i in range(n_symbols):
        base = bases[i % len(bases)]
        k = series[base]
        stop = len(k) - (i // len(bases)) * 97
        if stop - n_bars < 0:
            raise ValueError(f"{base}: not enough bars for offset {i // len(bases)}")
        for c, lst in cols.items():
            lst.append(getattr(k, c)[stop - n_bars : stop])
        names.append(base if i < len(bases) else f"{base}_{i}")
    return AlignedKlines(tuple(names), "1h", grid.copy(), **{c: np.stack(v) for c, v in cols.items()})


def _step_timings(bars: AlignedKlines, ensemble: Ensemble | None, repeats: int) -> list[float]:
    """Warm the engine on the first N_WARM bars, then time each following bar close (ms)."""
    _, engine = compute_features(bars.slice(0, N_WARM))
    lc = np.log(bars.close)
    window = np.diff(lc[:, N_WARM - 97 : N_WARM], axis=1)  # [S, 96] past log returns
    prev = bars.close[:, N_WARM - 1].copy()
    times = []
    for j in range(N_WARM, N_WARM + repeats + 5):
        t0 = time.perf_counter()
        feats = engine.update(
            int(bars.open_time_ms[j]), bars.high[:, j], bars.low[:, j], bars.close[:, j], bars.volume[:, j]
        )
        if ensemble is not None:
            close = bars.close[:, j]
            window = np.concatenate([window[:, 1:], np.log(close / prev)[:, None]], axis=1)
            prev = close
            decisions = ensemble.decide(ModelInput(features=feats, returns=window))
            assert len(decisions) == len(bars.symbols)
        times.append((time.perf_counter() - t0) * 1e3)
    return times[5:]  # first closes warm caches


def _p50_p99(times: list[float]) -> tuple[float, float]:
    t = sorted(times)
    return statistics.median(t), t[min(len(t) - 1, round(0.99 * (len(t) - 1)))]


def signal_results(quick: bool) -> dict[str, Any]:
    """Walk-forward AUC per model (+ ensemble, baselines) and the whole-ensemble latency."""
    import contextlib

    from signals.labels import LabelSpec
    from signals.training import TorchBudget, train_and_validate

    t0 = time.perf_counter()
    last_n = 5000 if quick else 12_000
    budget = TorchBudget(epochs=1, windows_per_epoch=4000) if quick else TorchBudget()
    log(f"signal layer: walk-forward on BTCUSDT+ETHUSDT 1h, last {last_n} bars, 3 folds, all models")
    with contextlib.redirect_stdout(sys.stderr):  # the table goes to stderr; stdout ends with the JSON
        res = train_and_validate(
            ("BTCUSDT", "ETHUSDT"),
            "1h",
            LabelSpec(),
            folds=3,
            seed=0,
            last_n=last_n,
            torch_budget=budget,
            save=False,
            progress=log,
            check_leakage=False,  # reported below instead of aborting the benchmark
        )
    out: dict[str, Any] = {"auc": res.auc(), "auc_bars": res.bars.n_bars, "auc_rows": len(res.dataset)}
    out["auc_over_leakage_threshold"] = sorted(m for m, a in res.auc().items() if a > 0.60)
    ensemble = Ensemble(res.models)
    repeats = 100 if quick else 300
    universe = synthetic_universe(100, N_WARM + repeats + 5)
    u = universe
    one = AlignedKlines(  # BTCUSDT alone
        u.symbols[:1],
        u.timeframe,
        u.open_time_ms,
        u.open[:1],
        u.high[:1],
        u.low[:1],
        u.close[:1],
        u.volume[:1],
    )
    for n, bars in ((1, one), (100, universe)):
        p50, p99 = _p50_p99(_step_timings(bars, ensemble, repeats))
        out[f"ensemble_{n}_p50_ms"] = round(p50, 3)
        out[f"ensemble_{n}_p99_ms"] = round(p99, 3)
    f50, f99 = _p50_p99(_step_timings(universe, None, repeats))
    out["features_100_ms"] = round(f50, 3)
    out["features_100_p99_ms"] = round(f99, 3)
    out["signal_bench_seconds"] = round(time.perf_counter() - t0, 1)
    log("signal layer: " + ", ".join(f"{k} {v}" for k, v in out.items()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced budget, N-HiTS paper check skipped")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    result: dict[str, Any] = {"quick": args.quick, "torch": torch.__version__, "threads": args.threads}
    result |= torch_model_results(args.quick)
    result |= signal_results(args.quick)
    result["bench_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

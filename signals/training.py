"""Train, validate and register the direction models on the shipped klines.

`train_and_validate(...)`:

1. loads the shipped klines (`signals.data.load_aligned`, the most recent `last_n` common bars);
2. builds features, labels and training rows (`signals.dataset.build_dataset`);
3. runs the purged, embargoed walk-forward (`signals.validation.walk_forward`) for every model, adds
   the ensemble (equal-weight mean of the models' out-of-sample P(up), the same vote `Ensemble` makes)
   and the baselines, and prints the table;
4. fits each model on every training row (the full span) and saves it to the registry with its
   walk-forward metrics;
5. promotes a model's new version to champion when there is no champion, when the champion was
   trained on another feature list / label definition, or when the new mean out-of-sample AUC beats
   the champion's recorded one.

`python -m signals.training --help` for the command line. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signals.data import AlignedKlines, load_aligned
from signals.dataset import Dataset, build_dataset
from signals.features import FeatureConfig
from signals.labels import LabelSpec
from signals.models.base import DirectionModel, ModelInput, ModelLoadError
from signals.registry import ModelMeta, ModelRegistry
from signals.validation import (
    FoldResult,
    WalkForwardConfig,
    WalkForwardReport,
    brier,
    dataset_folds,
    log_loss,
    roc_auc,
    signal_pnl,
    walk_forward,
)

ALL_MODELS = ("xgboost", "lightgbm", "nhits", "patchtst")
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")
RETURNS_LEN = 96
ENSEMBLE = "ensemble"

ProgressFn = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_registry_root() -> Path:
    return Path(os.environ.get("QT_HOME", ".qt")) / "models"


@dataclass(frozen=True)
class TorchBudget:
    """Training budget of the torch forecasters (kept small: 2 shared cores)."""

    epochs: int = 3
    windows_per_epoch: int | None = 8000
    batch_size: int = 256
    context: int = 64


def model_factory(
    kind: str, label_spec: LabelSpec, torch_budget: TorchBudget | None = None
) -> Callable[[], Any]:
    """A zero-argument constructor for a model kind, sized for the label horizon."""
    if kind == "xgboost":
        from signals.models.gbm import XGBoostModel

        return XGBoostModel
    if kind == "lightgbm":
        from signals.models.gbm import LightGBMModel

        return LightGBMModel
    if kind in ("nhits", "patchtst"):
        from signals.models.torch_common import TrainConfig

        tb = torch_budget or TorchBudget()
        horizon = max(1, min(label_spec.horizon, RETURNS_LEN - tb.context))
        train = TrainConfig(
            epochs=tb.epochs, batch_size=tb.batch_size, windows_per_epoch=tb.windows_per_epoch
        )
        if kind == "nhits":
            from signals.models.nhits import NHiTSDirectionModel as cls
        else:
            from signals.models.patchtst import PatchTSTDirectionModel as cls  # type: ignore[assignment]

        def make() -> DirectionModel:
            return cls(train=train, steps=horizon, context=tb.context, horizon=horizon)

        return make
    raise ValueError(f"unknown model {kind!r}; known: {ALL_MODELS}")


def add_ensemble(
    report: WalkForwardReport,
    ds: Dataset,
    members: Sequence[str],
    wf: WalkForwardConfig,
    weights: Mapping[str, float] | None = None,
) -> None:
    """Score the ensemble (weighted mean of the members' out-of-sample P(up)) on the same folds."""
    if not members:
        return
    folds = dataset_folds(ds, wf)
    w = np.array([float((weights or {}).get(m, 1.0)) for m in members])
    stacked = np.stack([report.oos_predictions[m] for m in members])  # [M, n]
    p_all = (w[:, None] * stacked).sum(axis=0) / w.sum()
    report.oos_predictions[ENSEMBLE] = p_all
    rows = []
    for fold in folds:
        tr, te = fold.train_rows, fold.test_rows
        if tr.size == 0 or te.size == 0:
            continue
        p, y = p_all[te], ds.y[te]
        pnl, trades = signal_pnl(p, ds.ret[te], band=wf.band, fee=wf.fee)
        rows.append(
            FoldResult(
                ENSEMBLE,
                fold.index,
                int(tr.size),
                int(te.size),
                roc_auc(y, p),
                log_loss(y, p),
                brier(y, p),
                pnl,
                trades,
            )
        )
    # table order: each model's folds, then the ensemble's, then the baselines'
    report.rows.extend(rows)
    order = {m: i for i, m in enumerate([*members, ENSEMBLE])}
    report.rows.sort(
        key=lambda r: (order.get(r.model, len(order)), r.model if r.model not in order else "", r.fold)
    )


def format_summary(report: WalkForwardReport) -> str:
    """One line per model: mean out-of-sample AUC, log-loss, Brier, after-fee PnL (bps per trade)."""
    lines = [f"{'model':<12} {'AUC':>6} {'logloss':>8} {'Brier':>7} {'bps/trade':>9} {'trades':>7}"]
    for m in report.models():
        s = report.summary()[m]
        trades = sum(r.trades for r in report.rows if r.model == m)
        lines.append(
            f"{m:<12} {s['auc']:>6.3f} {s['logloss']:>8.4f} {s['brier']:>7.4f} "
            f"{s['pnl_per_trade'] * 1e4:>9.2f} {trades:>7}"
        )
    return "\n".join(lines)


@dataclass
class TrainingResult:
    report: WalkForwardReport
    table: str  # per-fold table
    summary_table: str  # per-model means
    saved: dict[str, ModelMeta]  # model → new version's meta
    promoted: dict[str, bool]  # model → became champion
    models: dict[str, DirectionModel]  # the full-span models (in memory)
    dataset: Dataset
    bars: AlignedKlines
    seconds: float
    notes: list[str] = field(default_factory=list)

    def auc(self) -> dict[str, float]:
        return {m: round(s["auc"], 4) for m, s in self.report.summary().items()}


def _should_promote(
    registry: ModelRegistry, name: str, auc: float, features: Sequence[str], label: Mapping[str, Any]
) -> tuple[bool, str]:
    if registry.champion(name) is None:
        return True, "no champion yet"
    try:
        cur = registry.meta(name)
    except ModelLoadError as e:
        return True, f"current champion unreadable ({e})"
    if tuple(cur.features) != tuple(features) or dict(cur.label) != dict(label):
        return True, "champion was trained on another feature list / label"
    cur_auc = cur.metrics.get("wf_auc")
    if not isinstance(cur_auc, int | float) or not np.isfinite(cur_auc):
        return True, "champion has no walk-forward AUC"
    if np.isfinite(auc) and auc > cur_auc:
        return True, f"AUC {auc:.4f} beats champion {cur.version} ({cur_auc:.4f})"
    return False, f"AUC {auc:.4f} does not beat champion {cur.version} ({cur_auc:.4f})"


def train_and_validate(
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    timeframe: str = "1h",
    label_spec: LabelSpec | None = None,
    models: Sequence[str] = ALL_MODELS,
    *,
    folds: int = 3,
    seed: int = 0,
    registry_root: Path | str | None = None,
    progress: ProgressFn | None = _stderr,
    last_n: int | None = 12_000,
    bars: AlignedKlines | None = None,
    data_dir: Path | None = None,
    feature_config: FeatureConfig | None = None,
    torch_budget: TorchBudget | None = None,
    wf_config: WalkForwardConfig | None = None,
    save: bool = True,
    check_leakage: bool = True,
) -> TrainingResult:
    """Walk-forward validate `models` (+ the ensemble, next to the baselines), fit them on the full span,
    register them and promote champions. `bars` overrides loading (tests, benchmarks)."""
    t0 = time.monotonic()
    log = progress or (lambda _m: None)
    spec = label_spec or LabelSpec()
    unknown = [m for m in models if m not in ALL_MODELS]
    if unknown or not models:
        raise ValueError(f"unknown or no models {unknown}; known: {ALL_MODELS}")
    if bars is None:
        bars = load_aligned(tuple(symbols), timeframe, data_dir, last_n=last_n)
    fcfg = feature_config
    if fcfg is None and "BTCUSDT" not in bars.symbols:
        fcfg = FeatureConfig(btc_symbol=None)
    log(
        f"[training] {len(bars.symbols)} symbols {','.join(bars.symbols)} {bars.timeframe}: "
        f"{bars.n_bars} bars "
        f"({bars.n_bars * len(bars.symbols)} symbol-bars); label {spec.kind} horizon {spec.horizon}"
    )
    ds = build_dataset(bars, spec, fcfg, returns_len=RETURNS_LEN)
    # rows need a full window of past returns for the forecasters (the first ~RETURNS_LEN bars lack one);
    # every model trains and is scored on the same rows
    ds = ds.subset(np.flatnonzero(np.isfinite(ds.returns).all(axis=1)))
    if len(ds) == 0:
        raise ValueError("no training rows (too few bars for the feature warm-up and label horizon)")
    log(
        f"[training] {len(ds)} rows x {len(ds.feature_names)} features, up-rate {ds.y.mean():.3f} "
        f"({time.monotonic() - t0:.1f}s)"
    )
    factories = {m: model_factory(m, spec, torch_budget) for m in models}
    wf = wf_config or WalkForwardConfig(n_folds=folds)
    report = walk_forward(ds, factories, wf, seed=seed, progress=progress, check_leakage=check_leakage)
    add_ensemble(report, ds, list(models), wf)
    table = report.format_table()
    summary_table = format_summary(report)
    log(f"[training] walk-forward ({wf.n_folds} folds, purge + embargo {wf.embargo or spec.horizon} bars):")
    print(table, flush=True)
    print("\nmean out-of-sample (baselines: always_long, majority, momentum):", flush=True)
    print(summary_table, flush=True)

    summary = report.summary()
    all_rows = ModelInput(ds.x, ds.returns)
    fitted: dict[str, DirectionModel] = {}
    saved: dict[str, ModelMeta] = {}
    promoted: dict[str, bool] = {}
    notes: list[str] = []
    registry = ModelRegistry(registry_root or default_registry_root())
    rows_t = ds.open_time_ms[ds.t]
    span = {
        "symbols": list(bars.symbols),
        "timeframe": bars.timeframe,
        "start_ms": int(rows_t.min()),
        "end_ms": int(rows_t.max()),
        "bars": bars.n_bars,
        "rows": len(ds),
    }
    ens = summary.get(ENSEMBLE, {})
    for name in models:
        t1 = time.monotonic()
        m = factories[name]()
        m.fit(all_rows, ds.y, seed=seed)
        fitted[name] = m
        log(f"[training] {name}: fitted on all {len(ds)} rows ({time.monotonic() - t1:.1f}s)")
        if not save:
            continue
        s = summary[name]
        metrics = {
            "wf_auc": s["auc"],
            "wf_logloss": s["logloss"],
            "wf_brier": s["brier"],
            "wf_pnl_per_trade": s["pnl_per_trade"],
            "wf_folds": wf.n_folds,
            "ensemble_wf_auc": ens.get("auc"),
            "baselines_wf_auc": {b: summary[b]["auc"] for b in ("always_long", "majority", "momentum")},
        }
        ok, why = _should_promote(registry, name, s["auc"], ds.feature_names, spec.to_dict())
        meta = registry.save(
            name,
            m,
            features=ds.feature_names,
            label=spec.to_dict(),
            training_span=span,
            data_sha256=bars.sha256(),
            metrics=metrics,
            extra={"seed": seed, "feature_config": repr(fcfg or FeatureConfig())},
            make_champion=ok,
        )
        saved[name] = meta
        promoted[name] = ok
        note = f"{name} {meta.version}: {'promoted to champion' if ok else 'kept as challenger'} ({why})"
        notes.append(note)
        log(f"[training] {note} -> {registry.root / name / meta.version}")
    return TrainingResult(
        report, table, summary_table, saved, promoted, fitted, ds, bars, time.monotonic() - t0, notes
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m signals.training", description=__doc__.split("\n")[0])
    p.add_argument(
        "--symbols", default=",".join(DEFAULT_SYMBOLS), help="comma-separated (default %(default)s)"
    )
    p.add_argument("--timeframe", default="1h")
    p.add_argument("--last-n", type=int, default=12_000, help="most recent common bars (0 = all)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated subset of %(default)s")
    p.add_argument("--label", choices=("triple_barrier", "fixed_horizon"), default="triple_barrier")
    p.add_argument("--horizon", type=int, default=24, help="label horizon in bars")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-epochs", type=int, default=TorchBudget.epochs)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument(
        "--registry", type=Path, default=None, help="default $QT_HOME/models (QT_HOME default ./.qt)"
    )
    p.add_argument("--no-save", action="store_true", help="validate only; register nothing")
    args = p.parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if any(m in ("nhits", "patchtst") for m in models):
        import torch

        torch.set_num_threads(args.threads)
    res = train_and_validate(
        tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip()),
        args.timeframe,
        LabelSpec(kind=args.label, horizon=args.horizon),
        models,
        folds=args.folds,
        seed=args.seed,
        registry_root=args.registry or default_registry_root(),
        last_n=args.last_n or None,
        torch_budget=TorchBudget(epochs=args.torch_epochs),
        save=not args.no_save,
    )
    for n in res.notes:
        print(n)
    print(f"done in {res.seconds:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

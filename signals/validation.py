"""Walk-forward validation with purging and an embargo; AUC / log-loss / Brier / after-fee PnL per fold,
with baselines (always-long, majority class, momentum) in the same table.

Folds split the bar axis (all symbols of a bar stay together). Test fold k covers bars [a, b); its
training rows are decisions at bars t < a − embargo whose label window (t, end] closes before a
(purging). Never shuffled; training only looks backwards.

A model whose mean out-of-sample AUC exceeds `leakage_auc` (0.60) fails the run with
`SuspectedLeakageError`: on real crypto bars expect 0.50–0.55.

PnL of a signal: position +1 when P(up) > 0.5 + band, −1 when < 0.5 − band, else flat; the trade earns
the label's realised log return (entry at the bar close, exit where the label resolved: barrier or
time limit) minus the taker fee on both sides. Trades overlap, so this is a per-trade edge, not an
equity curve.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from signals.dataset import Dataset
from signals.models.base import DirectionModel, ModelInput

TAKER_FEE = 0.0004  # Binance USD-M taker, per side
BASELINES = ("always_long", "majority", "momentum")


class SuspectedLeakageError(RuntimeError):
    """Out-of-sample AUC is implausibly high for market data: a feature or label probably sees the future."""


# --------------------------------------------------------------------------------------------- metrics


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with average ranks for ties); NaN if one class only."""
    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    ranks = np.empty(p.shape[0])
    # average ranks over tied groups
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sp)) + 1])
    ends = np.concatenate([starts[1:], [sp.shape[0]]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean((p - y) ** 2))


def signal_pnl(
    p: np.ndarray, ret: np.ndarray, *, band: float = 0.0, fee: float = TAKER_FEE
) -> tuple[float, int]:
    """(mean net log return per trade, number of trades) of the long/short/flat signal from P(up)."""
    pos = np.where(p > 0.5 + band, 1.0, np.where(p < 0.5 - band, -1.0, 0.0))
    trades = int(np.count_nonzero(pos))
    if trades == 0:
        return 0.0, 0
    net = pos * ret - 2 * fee * np.abs(pos)
    return float(net[pos != 0].mean()), trades


# ----------------------------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class Fold:
    index: int
    test_start: int  # first test bar
    test_end: int  # one past the last test bar
    train_rows: np.ndarray
    test_rows: np.ndarray


def walk_forward_splits(
    t: np.ndarray,
    end: np.ndarray,
    *,
    n_folds: int = 5,
    embargo: int = 24,
    min_train_frac: float = 0.4,
    max_train_bars: int | None = None,
) -> list[Fold]:
    """Expanding (or rolling with `max_train_bars`) walk-forward folds over rows with decision bar `t`
    and label end bar `end`. Test folds tile the bars after the first `min_train_frac` of the span."""
    t = np.asarray(t, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    if t.shape[0] == 0:
        return []
    lo, hi = int(t.min()), int(t.max()) + 1
    first_test = lo + int((hi - lo) * min_train_frac)
    edges = np.linspace(first_test, hi, n_folds + 1).astype(np.int64)
    folds = []
    for k in range(n_folds):
        a, b = int(edges[k]), int(edges[k + 1])
        train = (t < a - embargo) & (end < a)
        if max_train_bars is not None:
            train &= t >= a - embargo - max_train_bars
        test = (t >= a) & (t < b)
        folds.append(Fold(k, a, b, np.flatnonzero(train), np.flatnonzero(test)))
    return folds


# --------------------------------------------------------------------------------------------- runner


@dataclass(frozen=True)
class WalkForwardConfig:
    n_folds: int = 5
    embargo: int | None = None  # None: the label horizon
    min_train_frac: float = 0.4
    max_train_bars: int | None = None
    leakage_auc: float = 0.60
    band: float = 0.0
    fee: float = TAKER_FEE


@dataclass(frozen=True)
class FoldResult:
    model: str
    fold: int
    n_train: int
    n_test: int
    auc: float
    logloss: float
    brier: float
    pnl_per_trade: float
    trades: int


@dataclass
class WalkForwardReport:
    rows: list[FoldResult] = field(default_factory=list)
    oos_predictions: dict[str, np.ndarray] = field(default_factory=dict)  # model → P(up) per dataset row

    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.rows))

    def mean(self, model: str, metric: str) -> float:
        vals = [getattr(r, metric) for r in self.rows if r.model == model]
        return float(np.nanmean(vals)) if vals else float("nan")

    def summary(self) -> dict[str, dict[str, float]]:
        keys = ("auc", "logloss", "brier", "pnl_per_trade")
        return {m: {k: self.mean(m, k) for k in keys} for m in self.models()}

    def format_table(self) -> str:
        head = f"{'model':<12} {'fold':>4} {'train':>7} {'test':>6} {'AUC':>6} {'logloss':>8} {'Brier':>6} "
        head += f"{'bps/trade':>9} {'trades':>6}"
        lines = [head]
        for r in self.rows:
            lines.append(
                f"{r.model:<12} {r.fold:>4} {r.n_train:>7} {r.n_test:>6} {r.auc:>6.3f} {r.logloss:>8.4f} "
                f"{r.brier:>6.4f} {r.pnl_per_trade * 1e4:>9.2f} {r.trades:>6}"
            )
        for m, s in self.summary().items():
            lines.append(
                f"{m:<12} {'mean':>4} {'':>7} {'':>6} {s['auc']:>6.3f} {s['logloss']:>8.4f} "
                f"{s['brier']:>6.4f} "
                f"{s['pnl_per_trade'] * 1e4:>9.2f}"
            )
        return "\n".join(lines)


def _baseline_probs(name: str, ds: Dataset, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    rate = float(np.clip(ds.y[train].mean(), 0.01, 0.99)) if train.size else 0.5
    n = test.shape[0]
    if name == "always_long":
        # long on every bar; its probability is the training up-rate nudged above ½ so it trades long
        return np.full(n, max(rate, 0.5 + 1e-9))
    if name == "majority":
        return np.full(n, rate if rate != 0.5 else 0.5 + 1e-9)
    if name == "momentum":
        s = np.sign(np.nan_to_num(ds.last_ret[test]))
        return 0.5 + 0.05 * s
    raise ValueError(name)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset_folds(ds: Dataset, cfg: WalkForwardConfig) -> list[Fold]:
    """The purged, embargoed walk-forward folds of a dataset (embargo: the label horizon by default)."""
    embargo = ds.label_spec.horizon if cfg.embargo is None else cfg.embargo
    return walk_forward_splits(
        ds.t,
        ds.end,
        n_folds=cfg.n_folds,
        embargo=embargo,
        min_train_frac=cfg.min_train_frac,
        max_train_bars=cfg.max_train_bars,
    )


def walk_forward(
    ds: Dataset,
    models: Mapping[str, Callable[[], DirectionModel]],
    config: WalkForwardConfig | None = None,
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = _stderr,
    check_leakage: bool = True,
) -> WalkForwardReport:
    """Fit each model on every fold's purged training rows, score the fold, baselines alongside."""
    cfg = config or WalkForwardConfig()
    folds = dataset_folds(ds, cfg)
    report = WalkForwardReport()
    names = [*models, *BASELINES]
    for n in names:
        report.oos_predictions[n] = np.full(len(ds), np.nan)
    t0 = time.monotonic()
    for fold in folds:
        tr, te = fold.train_rows, fold.test_rows
        if tr.size == 0 or te.size == 0:
            continue
        for name in names:
            if name in models:
                m = models[name]()
                m.fit(ModelInput(ds.x[tr], ds.returns[tr]), ds.y[tr], seed=seed)
                p = m.predict_proba(ModelInput(ds.x[te], ds.returns[te]))
            else:
                p = _baseline_probs(name, ds, tr, te)
            report.oos_predictions[name][te] = p
            y = ds.y[te]
            pnl, trades = signal_pnl(p, ds.ret[te], band=cfg.band, fee=cfg.fee)
            r = FoldResult(
                name,
                fold.index,
                int(tr.size),
                int(te.size),
                roc_auc(y, p),
                log_loss(y, p),
                brier(y, p),
                pnl,
                trades,
            )
            report.rows.append(r)
            if progress and name in models:
                progress(
                    f"[walk-forward] fold {fold.index + 1}/{len(folds)} "
                    f"bars {fold.test_start}-{fold.test_end} "
                    f"{name}: train {tr.size} test {te.size} AUC {r.auc:.3f} logloss {r.logloss:.4f} "
                    f"({time.monotonic() - t0:.1f}s)"
                )
    if check_leakage:
        for name in models:
            auc = report.mean(name, "auc")
            if auc > cfg.leakage_auc:
                raise SuspectedLeakageError(
                    f"{name}: mean out-of-sample AUC {auc:.3f} > {cfg.leakage_auc:.2f}; real bars give "
                    f"0.50-0.55 — a feature or the label probably sees the future\n{report.format_table()}"
                )
    return report

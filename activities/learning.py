"""Continuous-learning activities, for the `inference` task queue (workflows/retrain.py calls them).

* `retrain_challenger` trains one model kind on the newest window of bars and scores it out of
  sample on the newest `holdout_bars`, next to the current champion on the same rows. The holdout
  starts after the champion's last training label as well, so neither model has seen a row it is
  judged on (features look back, labels look forward: a row is clean for a model when its decision
  bar comes after the model's last label). The challenger is registered (never made champion here).
* `evaluate_shadow` scores a model's shadow against the champion on the bars that arrived after the
  shadow's own holdout: the fresh evidence that decides whether it is promoted.
* `set_model_stage` moves the registry aliases: champion, shadow (`<root>/<name>/shadow`), retired.
* `publish_shadow_signals` predicts one closed bar with every shadow model and publishes it to
  `quantum:stream:ai.signal_generated` with `shadow=true` (`trading.promotion.is_tradeable` refuses it),
  once per model version, symbol and bar however often it runs.
  The bar-close path calls it with the live bar (read from Redis); the retrain run with the newest.

Training is CPU-bound and synchronous: the worker runs those on a thread pool (`activity_executor`).
Progress (rows, fit, scores) is heartbeated and logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.projections import ProjectionActivities
from signals.bar_store import BarStore
from signals.data import AlignedKlines, DataError, load_aligned, timeframe_ms
from signals.dataset import Dataset, build_dataset
from signals.features import FeatureConfig, compute_features, return_windows
from signals.labels import LabelSpec
from signals.models.base import DirectionModel, ModelInput, ModelLoadError
from signals.registry import ModelRegistry
from signals.training import RETURNS_LEN, TorchBudget, model_factory
from signals.validation import brier, log_loss, roc_auc, signal_pnl
from trading.promotion import ModelScore
from workflows import calls
from workflows.errors import ErrorType
from workflows.messages import (
    KNOWN_MODELS,
    ChallengerReport,
    EvaluateShadowInput,
    RetrainWindow,
    SetStageInput,
    ShadowSignalsInput,
    TrainChallengerInput,
)

SIGNAL_STREAM = "quantum:stream:ai.signal_generated"
SHADOW = "shadow"  # alias file next to `champion` in the registry
SHADOW_CONTEXT_BARS = 1000  # bars loaded to compute the newest bar's features (indicator warm-up)

log = logging.getLogger("qtrader.learning")
ProgressFn = Callable[[str], None]


class BadRetrainInput(ApplicationError):
    def __init__(self, message: str) -> None:
        super().__init__(message, type=ErrorType.BAD_RETRAIN_INPUT, non_retryable=True)


# ------------------------------------------------------------------------------------------ registry


def shadow_version(registry: ModelRegistry, name: str) -> str | None:
    p = registry.root / name / SHADOW
    return p.read_text().strip() or None if p.is_file() else None


def _set_shadow(registry: ModelRegistry, name: str, version: str | None) -> None:
    p = registry.root / name / SHADOW
    if version is None:
        p.unlink(missing_ok=True)
        return
    tmp = p.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(version + "\n")
    tmp.replace(p)


# -------------------------------------------------------------------------------------------- data


def _spec(w: RetrainWindow) -> LabelSpec:
    return LabelSpec(kind=w.label_kind, horizon=w.horizon)


def _feature_config(symbols: tuple[str, ...]) -> FeatureConfig | None:
    return None if "BTCUSDT" in symbols else FeatureConfig(btc_symbol=None)  # as signals/training.py


def _load(w: RetrainWindow, data_dir: Path | None, last_n: int) -> AlignedKlines:
    try:
        # bars closed by `until_ms`: open_time + interval <= until_ms
        end = None if w.until_ms is None else w.until_ms - timeframe_ms(w.timeframe) + 1
        return load_aligned(tuple(w.symbols), w.timeframe, data_dir, end_ms=end, last_n=last_n)
    except (DataError, FileNotFoundError, ValueError) as e:
        raise BadRetrainInput(f"cannot load {w.symbols} {w.timeframe}: {e}") from e


def window_dataset(w: RetrainWindow, data_dir: Path | None) -> tuple[AlignedKlines, Dataset]:
    bars = _load(w, data_dir, w.window_bars)
    ds = build_dataset(bars, _spec(w), _feature_config(bars.symbols), returns_len=RETURNS_LEN)
    # the same rows as signals/training.py: a full window of past returns for the forecasters
    ds = ds.subset(np.flatnonzero(np.isfinite(ds.returns).all(axis=1)))
    if len(ds) == 0:
        raise BadRetrainInput(f"no rows in {bars.n_bars} bars (feature warm-up + label horizon)")
    return bars, ds


def _first_clean_bar(ds: Dataset, trained_until_ms: int | None) -> int:
    """First decision bar a model trained up to `trained_until_ms` (its last row) has not seen: after
    that row's label resolved (`horizon` bars later)."""
    if trained_until_ms is None:
        return 0
    last = int(np.searchsorted(ds.open_time_ms, trained_until_ms, side="right")) - 1
    return max(0, last + ds.label_spec.horizon + 1)


def _score(model: DirectionModel, ds: Dataset, rows: np.ndarray, version: str | None) -> ModelScore:
    p = np.asarray(model.predict_proba(ds.inputs(rows)), dtype=np.float64)
    y = ds.y[rows]
    pnl, _ = signal_pnl(p, ds.ret[rows])
    auc = roc_auc(y, p)
    return ModelScore(
        version=version,
        rows=int(rows.size),
        auc=None if not np.isfinite(auc) else round(auc, 6),
        logloss=round(log_loss(y, p), 6),
        brier=round(brier(y, p), 6),
        pnl_per_trade=round(pnl, 8),
    )


# ------------------------------------------------------------------------------------- activities


class LearningActivities:
    def __init__(
        self,
        registry_root: Path | str,
        data_dir: Path | None = None,
        redis_url: str = "redis://127.0.0.1:6379/0",
        progress: ProgressFn | None = None,
    ) -> None:
        self.registry = ModelRegistry(registry_root)
        self.data_dir = data_dir
        self.redis_url = redis_url
        self.progress = progress

    def activities(self) -> list[Callable[..., object]]:
        """What a worker on the `inference` task queue registers (with a thread-pool activity_executor)."""
        return [
            self.retrain_challenger,
            self.evaluate_shadow,
            self.set_model_stage,
            self.publish_shadow_signals,
        ]

    def _say(self, msg: str) -> None:
        log.info("%s", msg)
        if self.progress:
            self.progress(msg)
        if activity.in_activity():
            activity.heartbeat(msg)

    def _champion(self, name: str, ds: Dataset) -> tuple[DirectionModel | None, ModelScore | None, int]:
        """The champion (None when there is none), a score stub saying why it cannot be scored when it
        cannot be loaded, and its first clean bar."""
        version = self.registry.champion(name)
        if version is None:
            return None, None, 0
        try:
            meta = self.registry.meta(name, version)
            feats = None if meta.kind in ("nhits", "patchtst") else ds.feature_names
            loaded = self.registry.load(name, version, feats)
        except ModelLoadError as e:  # a broken champion cannot defend its title
            return None, ModelScore(version=version, note=str(e)), 0
        if dict(meta.label) != ds.label_spec.to_dict():
            return None, ModelScore(version=version, note=f"champion has another label {meta.label}"), 0
        return loaded.model, None, _first_clean_bar(ds, meta.training_span.get("end_ms"))

    @activity.defn(name=calls.RETRAIN_CHALLENGER.name)
    def retrain_challenger(self, inp: TrainChallengerInput) -> ChallengerReport:
        t0 = time.monotonic()
        name, w = inp.model, inp.window
        if name not in KNOWN_MODELS:
            raise BadRetrainInput(f"unknown model {name!r}; known: {KNOWN_MODELS}")
        bars, ds = window_dataset(w, self.data_dir)
        self._say(
            f"[retrain] {name}: {bars.n_bars} bars x {len(bars.symbols)} symbols "
            f"({bars.n_bars * len(bars.symbols)} symbol-bars) -> {len(ds)} rows"
        )
        champ, champ_stub, clean = self._champion(name, ds)
        n_bars = int(ds.open_time_ms.shape[0])
        start = max(n_bars - w.holdout_bars, clean)  # out of sample for both models
        embargo = ds.label_spec.horizon
        train = np.flatnonzero((ds.t < start - embargo) & (ds.end < start))  # purged + embargoed
        test = np.flatnonzero(ds.t >= start)
        if train.size < 100:
            raise BadRetrainInput(
                f"{name}: only {train.size} training rows before the holdout at bar {start} of {n_bars}; "
                "give a longer window_bars"
            )
        self._say(
            f"[retrain] {name}: fitting on {train.size} rows, holdout {test.size} rows "
            f"(bars {start}-{n_bars}, purge + embargo {embargo} bars)"
        )
        model = model_factory(name, ds.label_spec, TorchBudget(epochs=w.torch_epochs))()
        model.fit(ds.inputs(train), ds.y[train], seed=w.seed)
        self._say(f"[retrain] {name}: fitted in {time.monotonic() - t0:.1f}s")
        rows_t = ds.open_time_ms[ds.t[train]]
        score = _score(model, ds, test, None) if test.size else ModelScore(rows=0, note="no holdout rows")
        champ_score = champ_stub
        if champ is not None:
            champ_score = (
                _score(champ, ds, test, self.registry.champion(name))
                if test.size
                else ModelScore(version=self.registry.champion(name), rows=0)
            )
        holdout = {
            "start_ms": int(ds.open_time_ms[min(start, n_bars - 1)]),
            "end_ms": int(ds.open_time_ms[-1]),
            "rows": int(test.size),
        }
        meta = self.registry.save(
            name,
            model,
            features=ds.feature_names,
            label=ds.label_spec.to_dict(),
            training_span={
                "symbols": list(bars.symbols),
                "timeframe": bars.timeframe,
                "start_ms": int(rows_t.min()),
                "end_ms": int(rows_t.max()),
                "bars": bars.n_bars,
                "rows": int(train.size),
            },
            data_sha256=bars.sha256(),
            metrics={
                # the holdout is one out-of-sample fold: signals/training.py compares champions by wf_auc
                "wf_auc": score.auc,
                "wf_logloss": score.logloss,
                "wf_brier": score.brier,
                "wf_pnl_per_trade": score.pnl_per_trade,
                "wf_folds": 1,
                "evaluation": "holdout",
                "champion_holdout": champ_score.model_dump() if champ_score else None,
            },
            extra={"seed": w.seed, "stage": "challenger", "holdout": holdout},
        )
        score = score.model_copy(update={"version": meta.version})
        self._say(
            f"[retrain] {name} {meta.version}: holdout AUC {score.auc} log-loss {score.logloss} "
            f"(champion {champ_score.version if champ_score else None}: "
            f"AUC {champ_score.auc if champ_score else None})"
        )
        return ChallengerReport(
            model=name,
            challenger=score,
            champion=champ_score,
            train_rows=int(train.size),
            holdout_start_ms=holdout["start_ms"],
            holdout_end_ms=holdout["end_ms"],
            seconds=round(time.monotonic() - t0, 3),
        )

    @activity.defn(name=calls.EVALUATE_SHADOW.name)
    def evaluate_shadow(self, inp: EvaluateShadowInput) -> ChallengerReport | None:
        t0 = time.monotonic()
        name = inp.model
        version = shadow_version(self.registry, name)
        if version is None:
            return None
        _, ds = window_dataset(inp.window, self.data_dir)
        try:
            meta = self.registry.meta(name, version)
            feats = None if meta.kind in ("nhits", "patchtst") else ds.feature_names
            shadow = self.registry.load(name, version, feats).model
        except ModelLoadError as e:
            return ChallengerReport(
                model=name, challenger=ModelScore(version=version, note=str(e)), champion=None
            )
        champ, champ_stub, clean = self._champion(name, ds)
        seen_until = int((meta.extra.get("holdout") or {}).get("end_ms", meta.training_span["end_ms"]))
        start = max(int(np.searchsorted(ds.open_time_ms, seen_until, side="right")), clean)
        test = np.flatnonzero(ds.t >= start)
        self._say(f"[retrain] {name} shadow {version}: {test.size} new rows since it was chosen")
        empty = ModelScore(version=version, rows=0)
        score = _score(shadow, ds, test, version) if test.size else empty
        champ_score = champ_stub
        if champ is not None:
            cv = self.registry.champion(name)
            champ_score = _score(champ, ds, test, cv) if test.size else ModelScore(version=cv, rows=0)
        return ChallengerReport(
            model=name,
            challenger=score,
            champion=champ_score,
            holdout_start_ms=int(ds.open_time_ms[min(start, len(ds.open_time_ms) - 1)]),
            holdout_end_ms=int(ds.open_time_ms[-1]),
            seconds=round(time.monotonic() - t0, 3),
        )

    @activity.defn(name=calls.SET_MODEL_STAGE.name)
    def set_model_stage(self, inp: SetStageInput) -> str:
        name, version = inp.model, inp.version
        if version not in self.registry.versions(name):
            raise BadRetrainInput(f"model {name} has no version {version}")
        current_shadow = shadow_version(self.registry, name)
        if inp.stage == "champion":
            self.registry.set_champion(name, version)
            if current_shadow == version:
                _set_shadow(self.registry, name, None)
        elif inp.stage == "shadow":
            _set_shadow(self.registry, name, version)
        elif current_shadow == version:  # retired
            _set_shadow(self.registry, name, None)
        self._say(f"[retrain] {name} {version}: {inp.stage}")
        return inp.stage

    @activity.defn(name=calls.PUBLISH_SHADOW_SIGNALS.name)
    async def publish_shadow_signals(self, inp: ShadowSignalsInput) -> int:
        """P(up) of every shadow model for one closed bar of each symbol, published with `shadow=true`."""
        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)
        try:
            w = inp.window
            if inp.bar_open_ms is not None:  # live: the bars the market-data service stored
                bars = await BarStore(client).read_aligned(
                    w.symbols, w.timeframe, inp.bar_open_ms, SHADOW_CONTEXT_BARS
                )
            else:
                bars = await asyncio.to_thread(_load, w, self.data_dir, SHADOW_CONTEXT_BARS)
            if bars.n_bars == 0:
                raise ApplicationError(f"no stored bars of {w.symbols} {w.timeframe} at {inp.bar_open_ms}")
            entries = await asyncio.to_thread(self._shadow_entries, inp.models, bars)
            once = ProjectionActivities(client)  # its write-once append: a retry or re-run adds nothing
            for e in entries:
                key = f"shadow:{e['model']}:{e['model_version']}:{e['symbol']}:{e['timeframe']}"
                await once._append_once(f"{key}:{e['bar_open_time_ms']}", SIGNAL_STREAM, e)
        finally:
            await client.aclose()
        self._say(f"[shadow] published {len(entries)} shadow predictions to {SIGNAL_STREAM}")
        return len(entries)

    def _shadow_entries(self, models: list[str], bars: AlignedKlines) -> list[dict[str, str]]:
        frame, _ = compute_features(bars, _feature_config(bars.symbols))
        last = bars.n_bars - 1
        x = frame.values[:, last, :]
        rets = np.stack(
            [
                return_windows(bars.close[s], np.array([last]), RETURNS_LEN)[0]
                for s in range(len(bars.symbols))
            ]
        )
        ok = np.isfinite(x).all(axis=1) & np.isfinite(rets).all(axis=1)
        now_ms = str(int(time.time() * 1000))
        entries: list[dict[str, str]] = []
        for name in models:
            version = shadow_version(self.registry, name)
            if version is None:
                continue
            meta = self.registry.meta(name, version)
            feats = None if meta.kind in ("nhits", "patchtst") else frame.names
            model = self.registry.load(name, version, feats).model
            p = model.predict_proba(ModelInput(x[ok], rets[ok]))
            for sym, p_up in zip(np.array(bars.symbols)[ok], p, strict=True):
                side = "LONG" if p_up > 0.5 else "SHORT" if p_up < 0.5 else "NONE"
                entries.append(
                    {
                        "symbol": str(sym),
                        "side": side,
                        "confidence": repr(float(max(p_up, 1 - p_up))),
                        "p_up": repr(float(p_up)),
                        "model": name,
                        "model_version": version,
                        "shadow": "true",
                        "timeframe": bars.timeframe,
                        "bar_open_time_ms": str(int(bars.open_time_ms[last])),
                        "timestamp": now_ms,
                    }
                )
        return entries


def learning_activities(
    registry_root: Path | str, redis_url: str, data_dir: Path | None = None
) -> list[Callable[..., object]]:
    """The retrain activities for a worker on the `inference` task queue."""
    return LearningActivities(registry_root, data_dir, redis_url).activities()

"""Model-driven signals, walk-forward either way: no bar is decided by a model that learned from it.

- A registry version (`--model NAME[@VERSION]`): it must have been trained on data that ended (labels
  resolved included) before the backtest's first bar; anything else is refused with the dates.
- Retrained per fold (`--walk-forward KIND`): before each fold a fresh model of the kind is fitted with
  the signal layer's own dataset and model constructors on the rows whose labels resolved before the
  fold starts, then decides the fold's bars.

The decision of each bar is the signal layer's (`signals.ensemble.Ensemble` over the one model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from backtest.engine import SignalSet
from signals.data import AlignedKlines, timeframe_ms
from signals.dataset import build_dataset
from signals.ensemble import Ensemble, Side
from signals.features import FeatureConfig, FeatureFrame, compute_features, return_windows
from signals.intents import choose_intent, size_for_label
from signals.labels import LabelSpec
from signals.models.base import DirectionModel, ModelInput
from signals.regime import classify
from signals.registry import CHAMPION, ModelMeta, ModelRegistry
from signals.training import RETURNS_LEN, model_factory
from trading.intents import TradeIntent

FEATURE_FREE = ("nhits", "patchtst")  # forecasters that read return windows, not the feature matrix


@dataclass(frozen=True)
class IntentParams:
    """The signal service's settings that turn a decision into an intent (`SIGNAL_*`, the per-trade cap).
    Sizing uses a constant equity, as the live service does (`SIGNAL_EQUITY_USDT`)."""

    threshold: float = 0.55
    risk_fraction: Decimal = Decimal("0.005")
    leverage: int = 5
    equity: Decimal = Decimal(10_000)
    max_notional: Decimal = Decimal(200)


class WalkForwardError(ValueError):
    """The model saw data from the backtest's range (or its training span is unknown)."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str = CHAMPION

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`NAME` (its champion) or `NAME@VERSION`."""
        name, _, version = text.partition("@")
        if not name:
            raise ValueError(f"--model {text!r}: give NAME or NAME@VERSION (e.g. xgboost@20250101T000000Z)")
        return cls(name, version or CHAMPION)

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


def trained_until_ms(meta: ModelMeta) -> int:
    """The first time the model knows nothing about: its last row's bar plus the label's horizon."""
    span = meta.training_span
    if "end_ms" not in span or "timeframe" not in span:
        raise WalkForwardError(
            f"model {meta.name} version {meta.version}: its training span has no end time; "
            "cannot prove it never saw the backtest's bars"
        )
    horizon = int(meta.label.get("horizon", 0))
    return int(span["end_ms"]) + (horizon + 1) * timeframe_ms(str(span["timeframe"]))


def check_walk_forward(meta: ModelMeta, start_ms: int) -> None:
    until = trained_until_ms(meta)
    if start_ms < until:
        from backtest.report import iso

        raise WalkForwardError(
            f"model {meta.name} version {meta.version} was trained on data up to {iso(until)} UTC, after "
            f"the backtest's start {iso(start_ms)}: use --from {iso(until)[:10]} or later, or a version "
            "trained before the range (walk-forward: a bar only sees a model trained on data before it)"
        )


def _features(bars: AlignedKlines) -> tuple[FeatureConfig, FeatureFrame]:
    cfg = FeatureConfig() if "BTCUSDT" in bars.symbols else FeatureConfig(btc_symbol=None)
    return cfg, compute_features(bars, cfg)[0]


def _decide(
    model: DirectionModel,
    name: str,
    frame: FeatureFrame,
    bars: AlignedKlines,
    lo: int,
    hi: int,
    out: SignalSet,
) -> None:
    """The model's decisions for bars [lo, hi) into `out` (its arrays end with the last bar)."""
    ensemble = Ensemble({name: model})
    base = bars.n_bars - out.side.shape[1]
    for s in range(len(bars.symbols)):
        values = frame.values[s, lo:hi]
        idx = np.arange(lo, hi)
        windows = return_windows(bars.close[s], idx, RETURNS_LEN)
        ok = np.flatnonzero(np.isfinite(values).all(axis=1) & np.isfinite(windows).all(axis=1))
        if ok.size == 0:
            continue
        for k, d in zip(ok, ensemble.decide(ModelInput(values[ok], windows[ok])), strict=True):
            out.side[s, lo + k - base] = 1 if d.side is Side.LONG else -1 if d.side is Side.SHORT else 0
            assert out.kill_score is not None and out.confidence is not None
            out.kill_score[s, lo + k - base] = d.kill_score
            out.confidence[s, lo + k - base] = d.confidence


def _empty(bars: AlignedKlines, first_bar: int, frame: FeatureFrame, name: str, version: str) -> SignalSet:
    n_sym, n = len(bars.symbols), bars.n_bars - first_bar
    rows = frame.values[:, first_bar:]
    regimes = [r.value for r in classify(rows.reshape(-1, rows.shape[-1]), frame.names, bars.timeframe)]
    return SignalSet(
        side=np.zeros((n_sym, n), dtype=np.int8),
        name=f"model {version}",
        kill_score=np.ones((n_sym, n)),
        confidence=np.zeros((n_sym, n)),
        regime=np.asarray(regimes, dtype=object).reshape(n_sym, n),
        model_version=version,
    )


def model_signals(
    registry: ModelRegistry,
    ref: ModelRef,
    bars: AlignedKlines,
    first_bar: int,
    params: IntentParams | None = None,
) -> SignalSet:
    """Decisions for `bars[first_bar:]` (the bars before are the feature warm-up); with `params`, each
    becomes the signal service's intent, sized on the label the version was trained on."""
    meta = registry.meta(ref.name, ref.version)
    check_walk_forward(meta, int(bars.open_time_ms[first_bar]))
    _, frame = _features(bars)
    wanted = None if meta.kind in FEATURE_FREE else frame.names
    model = registry.load(ref.name, meta.version, wanted).model
    out = _empty(bars, first_bar, frame, ref.name, f"{ref.name}@{meta.version}")
    _decide(model, ref.name, frame, bars, first_bar, bars.n_bars, out)
    if params is None:
        return out
    try:
        spec = LabelSpec.from_dict(dict(meta.label))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"model {ref.name} version {meta.version}: unreadable label {meta.label}: {err}"
        ) from None
    return attach_intents(out, bars, frame, spec, params)


def retrained_signals(
    kind: str,
    bars: AlignedKlines,
    first_bar: int,
    *,
    refit_bars: int,
    train_bars: int,
    spec: LabelSpec | None = None,
    seed: int = 0,
    min_rows: int = 500,
    params: IntentParams | None = None,
    progress: Callable[[str], None] | None = None,
) -> SignalSet:
    """Every `refit_bars` from `first_bar` on, a fresh `kind` model is fitted on the rows of the last
    `train_bars` bars whose labels resolved before the fold's first bar, then decides the fold. A fold
    with fewer than `min_rows` training rows gives no signal."""
    spec = spec or LabelSpec()
    make = model_factory(kind, spec)
    cfg, frame = _features(bars)
    ds = build_dataset(bars, spec, cfg, returns_len=RETURNS_LEN)
    ds = ds.subset(np.flatnonzero(np.isfinite(ds.returns).all(axis=1)))
    out = _empty(bars, first_bar, frame, kind, f"walk-forward {kind}")
    for lo in range(first_bar, bars.n_bars, refit_bars):
        hi = min(lo + refit_bars, bars.n_bars)
        rows = np.flatnonzero((ds.end < lo) & (ds.t >= lo - train_bars))  # resolved before the fold
        if rows.size < min_rows:
            continue
        model = make()
        model.fit(ds.inputs(rows), ds.y[rows], seed=seed)
        _decide(model, kind, frame, bars, lo, hi, out)
        if progress is not None:
            progress(
                f"fold {lo - first_bar + 1}-{hi - first_bar} of {bars.n_bars - first_bar}: {rows.size} rows"
            )
    return out if params is None else attach_intents(out, bars, frame, spec, params)


def attach_intents(
    out: SignalSet, bars: AlignedKlines, frame: FeatureFrame, spec: LabelSpec, params: IntentParams
) -> SignalSet:
    """Each signal becomes the intent the signal service would send: volatility-target size, the label's
    stop and take-profit, the threshold (`signals.sizing`, `signals.intents.choose_intent`)."""
    rvol = frame.names.index(next(n for n in frame.names if n.startswith("rvol_")))
    base = bars.n_bars - out.side.shape[1]
    assert out.kill_score is not None and out.confidence is not None and out.regime is not None
    kill, confidence, regime = out.kill_score, out.confidence, out.regime

    def intent(s: int, k: int) -> TradeIntent | None:
        symbol = bars.symbols[s]
        size = size_for_label(
            symbol,
            float(frame.values[s, base + k, rvol]),
            params.equity,
            spec,
            risk_fraction=params.risk_fraction,
            max_notional=params.max_notional,
        )
        return choose_intent(
            symbol=symbol,
            side="LONG" if out.side[s, k] > 0 else "SHORT",
            confidence=float(confidence[s, k]),
            kill_score=float(kill[s, k]),
            regime=str(regime[s, k]),
            threshold=params.threshold,
            size=size,
            k_up=spec.k_up,
            k_down=spec.k_down,
            leverage=params.leverage,
            intent_id=f"backtest-{symbol}-{k}",
        ).intent

    out.intent = intent
    return out

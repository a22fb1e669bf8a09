"""Inference activities (task queue `inference`): the champion ensemble on the closed bars in Redis, and
the decisions published to the seed's streams.

`infer_bar` loads the champion of each model in `SIGNAL_MODELS` from the registry at the first call and
again whenever a champion alias changes; a model that is refused (corrupted or mismatched file) is left
out and every decision names it with the reason (`missing`). Features are computed from the newest
`HISTORY_BARS` stored bars of the universe plus BTC (the same `compute_features` as training).

Each decision with a side asks the meta-strategy chooser (`signals/strategy_chooser.py`, its state in
Redis, refreshed at every call) which strategy to trade in the decision's regime; the intent carries
that strategy's name and exit overrides. When the registry has shadow challengers for the ensemble's
models, the result names them with the bar (`shadow`), so the bar-close workflow publishes their
predictions too.

Streams (`XADD MAXLEN ~ 100000`, each entry written at most once per symbol and bar even when the
activity is retried):

* `quantum:stream:ai.signal_generated` — every decision: `symbol, interval, bar_open_ms, side, p_up,
  confidence, models_agree, kill_score, regime, price, votes` (JSON), `used` (JSON), `missing` (JSON),
  `model_versions` (JSON), `timestamp`;
* `quantum:stream:ai.decision.made` — every decision with what was done: `symbol, bar_open_ms, side,
  confidence, regime, strategy, action` ("open" | "skip"), `reason, notional_usdt, workflow_id, timestamp`;
* `quantum:stream:trade.intent` — each intent that cleared the threshold: `intent_id, workflow_id,
  symbol, side, notional_usdt, leverage, confidence, kill_score, regime, strategy, source, exits`
  (JSON), `payload` (the whole intent as JSON), `timestamp`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from temporalio import activity

from activities.learning import shadow_version
from activities.projections import ProjectionActivities
from signals.bar_store import BarStore
from signals.data import AlignedKlines
from signals.ensemble import Ensemble, load_ensemble
from signals.features import _feature_config, compute_features, feature_symbols, return_windows
from signals.intents import STRATEGY, choose_intent, position_workflow_id, size_for_label
from signals.labels import LabelSpec
from signals.models.base import ModelInput
from signals.regime import regime_of
from signals.registry import ModelRegistry
from signals.strategy_chooser import StrategyChooser
from signals.training import RETURNS_LEN
from trading.config import Settings
from workflows import calls
from workflows.messages import (
    InferenceInput,
    InferenceResult,
    PositionInput,
    RetrainWindow,
    ShadowSignalsInput,
    SymbolDecision,
)

log = logging.getLogger("activities.inference")

SIGNAL_STREAM = "quantum:stream:ai.signal_generated"
DECISION_STREAM = "quantum:stream:ai.decision.made"
INTENT_STREAM = "quantum:stream:trade.intent"
HISTORY_BARS = 400  # features' warm-up (MACD, higher-timeframe RSI) plus the forecasters' 96 returns


class LoadedEnsemble:
    """The ensemble of the current champions, reloaded when an alias moves."""

    def __init__(self, registry: ModelRegistry, names: list[str]) -> None:
        self.registry = registry
        self.names = names
        self.champions: tuple[str | None, ...] | None = None
        self.ensemble: Ensemble | None = None
        self.label = LabelSpec()
        self.features: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def current(self, feature_names: tuple[str, ...]) -> Ensemble:
        with self._lock:
            champions = tuple(self.registry.champion(n) for n in self.names)
            if self.ensemble is None or champions != self.champions or feature_names != self.features:
                self.ensemble = load_ensemble(self.registry, self.names, feature_names)
                self.champions, self.features = champions, feature_names
                self.label = self._label()
                log.info(
                    "ensemble loaded: %s; refused: %s",
                    dict(zip(self.names, champions, strict=True)),
                    self.ensemble.missing,
                )
            return self.ensemble

    def _label(self) -> LabelSpec:
        for n in self.names:
            try:
                return LabelSpec.from_dict(dict(self.registry.meta(n).label))
            except Exception:
                continue
        return LabelSpec()

    def versions(self) -> dict[str, str]:
        return {n: v for n, v in zip(self.names, self.champions or (), strict=False) if v is not None}


class InferenceActivities:
    """`chooser`: the meta-strategy chooser whose state (in Redis) picks each intent's strategy; None
    trades every intent as the fixed `signals.intents.STRATEGY`."""

    def __init__(
        self,
        settings: Settings,
        redis: aioredis.Redis,
        registry_root: Path | None = None,
        chooser: StrategyChooser | None = None,
    ) -> None:
        self.settings = settings
        self.chooser = chooser
        self.redis = redis
        self.store = BarStore(redis)
        self.models = LoadedEnsemble(
            ModelRegistry(registry_root or settings.registry_dir), list(settings.signal_models)
        )
        self._projections = ProjectionActivities(redis)  # its write-once stream append

    async def _symbols(self, requested: list[str] | None) -> list[str]:
        if requested:
            return requested
        universe = await self.store.universe()
        if universe is not None:  # set by the universe job (possibly empty: nothing allowed trades)
            return universe
        allow = [s for s in self.settings.apply_allowlist if s != "*"]
        if allow:
            return allow
        return sorted(await self.store.last_bars(self.settings.signal_timeframe))

    @activity.defn(name=calls.INFER_BAR.name)
    async def infer_bar(self, inp: InferenceInput) -> InferenceResult:
        symbols = sorted(set(await self._symbols(inp.symbols)))
        if not symbols:
            return InferenceResult(interval=inp.interval, bar_open_ms=None, symbols=[], notes=["no universe"])
        fsyms = feature_symbols(symbols)
        last = await self.store.last_bars(inp.interval)
        missing = [s for s in fsyms if s not in last]
        if missing:
            return InferenceResult(
                interval=inp.interval,
                bar_open_ms=None,
                symbols=symbols,
                notes=[f"no closed {inp.interval} bars in Redis for {missing} (is market-data running?)"],
            )
        bar = inp.bar_open_ms if inp.bar_open_ms is not None else min(last[s] for s in fsyms)
        t0 = time.perf_counter()
        bars = await self.store.read_aligned(fsyms, inp.interval, bar, HISTORY_BARS)
        if self.chooser is not None:  # what every chooser process learned so far
            try:
                await self.chooser.refresh()
            except Exception as exc:  # a stale choice beats no decision
                log.warning("strategy chooser state unreadable (%r); using the last one", exc)
        result = await asyncio.to_thread(self._decide, symbols, bars, inp.interval, bar)
        shadows = [n for n in self.models.names if shadow_version(self.models.registry, n)]
        if shadows and result.decisions:
            window = RetrainWindow(symbols=list(fsyms), timeframe=inp.interval)
            shadow = ShadowSignalsInput(models=shadows, window=window, bar_open_ms=bar)
            result = result.model_copy(update={"shadow": shadow})
        if activity.in_activity():  # Prometheus, through the worker's runtime
            meter = activity.metric_meter()
            meter.create_histogram_float(
                "inference_seconds", "Bars read, features, ensemble, sizing for one bar close", "s"
            ).record(time.perf_counter() - t0)
            decisions = meter.create_counter("inference_decisions", "Ensemble decisions by action")
            for d in result.decisions:
                decisions.add(1, {"action": d.action})
        return result

    def _decide(self, symbols: list[str], bars: AlignedKlines, interval: str, bar: int) -> InferenceResult:
        need = RETURNS_LEN + 100
        if bars.n_bars < need:
            return InferenceResult(
                interval=interval,
                bar_open_ms=bar,
                symbols=symbols,
                notes=[f"only {bars.n_bars} contiguous bars up to {bar}; inference needs {need}"],
            )
        frame, _ = compute_features(bars, _feature_config(bars.symbols))
        rows = [bars.index(s) for s in symbols]
        x = frame.values[rows, -1, :]
        last = np.array([bars.n_bars - 1])
        rets = np.concatenate([return_windows(bars.close[i], last, RETURNS_LEN) for i in rows])
        ensemble = self.models.current(frame.names)
        label = self.models.label
        decisions = ensemble.decide(ModelInput(features=x, returns=rets))
        s = self.settings
        equity = s.signal_equity_usdt or s.paper_start_balance_usdt
        rvol_i = frame.names.index(next(n for n in frame.names if n.startswith("rvol_")))
        notes: list[str] = []
        if ensemble.missing:
            notes.append("models left out: " + "; ".join(f"{k}: {v}" for k, v in ensemble.missing.items()))
        out = []
        for k, (sym, d) in enumerate(zip(symbols, decisions, strict=True)):
            regime = regime_of(x[k], frame.names, interval).value
            size = size_for_label(
                sym,
                float(x[k, rvol_i]),
                equity,
                label,
                risk_fraction=s.signal_risk_fraction,
                max_notional=s.gov_max_notional_per_trade_usdt,
            )
            wf_id = position_workflow_id(sym, interval, bar)
            strategy = None  # the chooser's pick (only a decision with a side is traded)
            if self.chooser is not None and d.side.value in ("LONG", "SHORT"):
                strategy = self.chooser.choose(regime)
            choice = choose_intent(
                symbol=sym,
                side=d.side.value,
                confidence=d.confidence,
                kill_score=d.kill_score,
                regime=regime,
                threshold=s.signal_confidence_threshold,
                size=size,
                k_up=label.k_up,
                k_down=label.k_down,
                leverage=s.signal_leverage,
                intent_id=wf_id.removeprefix("position-"),
                strategy=strategy.strategy if strategy is not None else STRATEGY,
                strategy_exits=strategy.exits if strategy is not None else None,
            )
            out.append(
                SymbolDecision(
                    symbol=sym,
                    side=d.side.value,
                    p_up=round(d.p_up, 6),
                    confidence=round(d.confidence, 6),
                    models_agree=d.models_agree,
                    kill_score=round(d.kill_score, 6),
                    regime=regime,
                    price=float(bars.close[bars.index(sym), -1]),
                    votes={m: round(v, 6) for m, v in d.votes.items()},
                    used=list(d.used),
                    missing=dict(d.missing),
                    notional_usdt=size.notional_usdt,
                    strategy=strategy.strategy if strategy is not None else None,
                    action="open" if choice.intent else "skip",
                    reason=choice.reason
                    + (f"; strategy {strategy.strategy} ({strategy.reason()})" if strategy else ""),
                    workflow_id=wf_id if choice.intent else None,
                    intent=PositionInput(**choice.intent.model_dump()) if choice.intent else None,
                )
            )
        return InferenceResult(
            interval=interval,
            bar_open_ms=bar,
            symbols=symbols,
            model_versions=self.models.versions(),
            decisions=out,
            notes=notes,
        )

    @activity.defn(name=calls.PUBLISH_DECISIONS.name)
    async def publish_decisions(self, result: InferenceResult) -> None:
        now = str(int(time.time() * 1000))
        versions = json.dumps(result.model_versions, sort_keys=True)
        for d in result.decisions:
            key = f"{d.symbol}:{result.interval}:{result.bar_open_ms}"
            common: dict[str, Any] = {
                "symbol": d.symbol,
                "interval": result.interval,
                "bar_open_ms": str(result.bar_open_ms),
            }
            await self._projections._append_once(
                f"signal:{key}",
                SIGNAL_STREAM,
                {
                    **common,
                    "side": d.side,
                    "p_up": str(d.p_up),
                    "confidence": str(d.confidence),
                    "models_agree": str(d.models_agree),
                    "kill_score": str(d.kill_score),
                    "regime": d.regime,
                    "price": repr(d.price),
                    "votes": json.dumps(d.votes, sort_keys=True),
                    "used": json.dumps(d.used),
                    "missing": json.dumps(d.missing, sort_keys=True),
                    "model_versions": versions,
                    "timestamp": now,
                },
            )
            await self._projections._append_once(
                f"decision:{key}",
                DECISION_STREAM,
                {
                    **common,
                    "side": d.side,
                    "confidence": str(d.confidence),
                    "regime": d.regime,
                    "strategy": d.strategy or "",
                    "action": d.action,
                    "reason": d.reason,
                    "notional_usdt": str(d.notional_usdt),
                    "workflow_id": d.workflow_id or "",
                    "timestamp": now,
                },
            )
            if d.intent is not None:
                i = d.intent
                await self._projections._append_once(
                    f"intent:{key}",
                    INTENT_STREAM,
                    {
                        "intent_id": i.intent_id or "",
                        "workflow_id": d.workflow_id or "",
                        "symbol": i.symbol,
                        "side": i.side.value,
                        "notional_usdt": str(i.notional_usdt),
                        "leverage": str(i.leverage),
                        "confidence": str(i.confidence),
                        "kill_score": str(i.kill_score),
                        "regime": i.regime,
                        "strategy": i.strategy,
                        "source": i.source.value,
                        "exits": i.exits.model_dump_json(exclude_none=True) if i.exits else "{}",
                        "payload": i.model_dump_json(exclude_none=True, exclude={"options", "carry"}),
                        "timestamp": now,
                    },
                )

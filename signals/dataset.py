"""Training rows from aligned bars: features, return windows, labels and each label's time span.

Rows are (symbol, bar) pairs where every feature is finite and the label is defined, ordered by bar
then symbol, so a walk-forward split by bar index keeps all symbols of a bar on the same side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signals.data import AlignedKlines
from signals.features import FeatureConfig, FeatureFrame, compute_features, return_windows
from signals.labels import Labels, LabelSpec, make_labels
from signals.models.base import ModelInput


@dataclass(frozen=True)
class Dataset:
    feature_names: tuple[str, ...]
    label_spec: LabelSpec
    x: np.ndarray  # [n, F]
    returns: np.ndarray  # [n, L]
    y: np.ndarray  # [n] in {0, 1}
    t: np.ndarray  # [n] bar index of the row (the decision bar)
    end: np.ndarray  # [n] bar index where the label resolved (purging)
    symbol: np.ndarray  # [n] symbol index
    ret: np.ndarray  # [n] log return from t to end (the label's realised move)
    last_ret: np.ndarray  # [n] 1-bar log return at t (momentum baseline)
    open_time_ms: np.ndarray  # [bars]
    symbols: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def inputs(self, rows: np.ndarray | slice | None = None) -> ModelInput:
        r = slice(None) if rows is None else rows
        return ModelInput(features=self.x[r], returns=self.returns[r])

    def subset(self, rows: np.ndarray) -> Dataset:
        return Dataset(
            self.feature_names,
            self.label_spec,
            self.x[rows],
            self.returns[rows],
            self.y[rows],
            self.t[rows],
            self.end[rows],
            self.symbol[rows],
            self.ret[rows],
            self.last_ret[rows],
            self.open_time_ms,
            self.symbols,
        )


def assemble(frame: FeatureFrame, labels: Labels, close: np.ndarray, returns_len: int) -> Dataset:
    ok = frame.valid & labels.defined  # [S, T]
    t_idx, s_idx = np.nonzero(ok.T)  # bar-major order
    x = frame.values[s_idx, t_idx]
    rets = np.empty((t_idx.shape[0], returns_len))
    last = np.empty(t_idx.shape[0])
    for s in range(close.shape[0]):
        m = s_idx == s
        rets[m] = return_windows(close[s], t_idx[m], returns_len)
        last[m] = rets[m, -1]
    return Dataset(
        feature_names=frame.names,
        label_spec=labels.spec,
        x=x,
        returns=rets,
        y=labels.y[s_idx, t_idx],
        t=t_idx.astype(np.int64),
        end=labels.end[s_idx, t_idx],
        symbol=s_idx.astype(np.int64),
        ret=labels.ret[s_idx, t_idx],
        last_ret=last,
        open_time_ms=frame.open_time_ms,
        symbols=frame.symbols,
    )


def build_dataset(
    bars: AlignedKlines,
    label_spec: LabelSpec | None = None,
    feature_config: FeatureConfig | None = None,
    returns_len: int = 96,
) -> Dataset:
    frame, _ = compute_features(bars, feature_config)
    labels = make_labels(bars.high, bars.low, bars.close, label_spec or LabelSpec())
    return assemble(frame, labels, bars.close, returns_len)

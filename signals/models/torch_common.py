"""Shared machinery of the torch forecasters (N-HiTS, PatchTST).

- `deterministic(seed)`: seeds torch and turns on `torch.use_deterministic_algorithms` for the block,
  restoring the previous setting afterwards (so other code in the process is not affected).
- `RevIN`: reversible instance normalisation (Kim et al., ICLR 2022), one series per row.
- `TorchForecaster`: the forecaster API shared by both models — `fit_forecast(windows)` on windows of
  `context + horizon` values (channel-independent: one row = one series), `forecast(context) -> [n, H]`,
  `save` / `load` as `.safetensors` + JSON hyper-parameters.
- `TorchDirectionModel`: the `DirectionModel` adapter (see `base.py`). It reads `ModelInput.returns`
  (past log returns, oldest first), trains the forecaster self-supervised on the past only (the first
  `context` returns of the row's last `context + horizon` returns predict the last `horizon`), then maps
  the forecast to P(up) with a calibrated sigmoid:

      z = sum(forecast of the next `steps` returns) / sigma_res,   P(up) = sigmoid(a * z + b)

  where `steps` (default: the forecast horizon) should match the label horizon, `sigma_res` is the std
  of the residual of that cumulative forecast on the training windows, and (a, b) is a two-parameter
  logistic regression of the labels on z (float64 Newton, small ridge). The forecaster never sees the
  labels; only (a, b) do. Because the rows of a training set overlap in time, the forecaster has seen
  some of the returns behind a row's label as targets of later rows, so the in-sample z is mildly
  optimistic; with two parameters this mostly shrinks toward a = 0 out of sample, and the walk-forward
  validation scores the model out of sample anyway.

Bit-identical predictions for the same data + seed hold on CPU with the same torch version and the same
number of intra-op threads (a different thread count may change float summation order).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from signals.models.base import ModelInput, ModelLoadError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model.json"
FORMAT_VERSION = 1
PREDICT_CHUNK = 8192

LogFn = Callable[[str], None]


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def deterministic(seed: int | None = None) -> Iterator[None]:
    """Seed torch (if `seed` is given) and require deterministic algorithms inside the block."""
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


class RevIN(nn.Module):
    """Reversible instance normalisation over the time axis of [B, L] inputs (one series per row)."""

    def __init__(self, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(1))
            self.bias = nn.Parameter(torch.zeros(1))

    def norm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=-1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps).detach()
        y = (x - mean) / std
        if self.affine:
            y = y * self.weight + self.bias
        return y, mean, std

    def denorm(self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        if self.affine:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * std + mean


@dataclass
class TrainConfig:
    """Training budget and optimiser settings (not saved with the model: they do not change inference)."""

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    windows_per_epoch: int | None = None  # sample this many training windows per epoch (None = all)
    time_budget_s: float | None = None  # stop after the epoch that crosses this wall-clock budget
    patience: int | None = None  # early stop on validation MSE (needs validation windows)
    grad_clip: float | None = 1.0
    onecycle: bool = True  # OneCycle LR schedule (as in the PatchTST reference code), else constant
    val_batch_size: int = 2048


@dataclass
class FitReport:
    epochs_run: int
    seconds: float
    train_loss: list[float]
    val_mse: list[float]
    best_epoch: int | None


class TorchForecaster:
    """A channel-independent point forecaster: [n, context] -> [n, horizon].

    Subclasses set `kind`, `Hparams` (a dataclass with at least `context` and `horizon`) and
    implement `build()` -> nn.Module mapping [B, context] -> [B, horizon].
    """

    kind: ClassVar[str] = ""
    Hparams: ClassVar[type]

    def __init__(self, hparams: Any | None = None, **overrides: Any) -> None:
        if hparams is None:
            hparams = self.Hparams(**overrides)
        elif overrides:
            hparams = self.Hparams(**{**asdict(hparams), **overrides})
        self.hparams = hparams
        self.net: nn.Module | None = None

    # --- construction -------------------------------------------------------------------------------
    @property
    def context(self) -> int:
        return int(self.hparams.context)

    @property
    def horizon(self) -> int:
        return int(self.hparams.horizon)

    def build(self) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def n_params(self) -> int:
        assert self.net is not None
        return sum(p.numel() for p in self.net.parameters())

    # --- training -----------------------------------------------------------------------------------
    def fit_forecast(
        self,
        windows: np.ndarray,
        *,
        val_windows: np.ndarray | None = None,
        config: TrainConfig | None = None,
        seed: int = 0,
        log: LogFn | None = None,
        name: str | None = None,
    ) -> FitReport:
        """Train on `windows` [N, context + horizon] (first `context` values are the input, the rest the
        target), minimising MSE. With `val_windows` the best epoch by validation MSE is kept."""
        cfg = config or TrainConfig()
        width = self.context + self.horizon
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != width:
            raise ValueError(f"windows must be [N, {width}] (context + horizon), got {windows.shape}")
        if not np.isfinite(windows).all():
            raise ValueError("training windows contain NaN or inf")
        tag = name or self.kind
        t0 = time.perf_counter()
        report = FitReport(epochs_run=0, seconds=0.0, train_loss=[], val_mse=[], best_epoch=None)
        with deterministic(seed):
            self.net = self.build()
            net = self.net
            data = torch.from_numpy(windows)
            n = data.shape[0]
            per_epoch = n if cfg.windows_per_epoch is None else min(n, cfg.windows_per_epoch)
            steps_per_epoch = max(1, math.ceil(per_epoch / cfg.batch_size))
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            sched = None
            if cfg.onecycle:
                sched = torch.optim.lr_scheduler.OneCycleLR(
                    opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.3
                )
            gen = torch.Generator().manual_seed(seed)
            best_val = math.inf
            best_state: dict[str, torch.Tensor] | None = None
            bad_epochs = 0
            for epoch in range(cfg.epochs):
                net.train()
                order = torch.randperm(n, generator=gen)[:per_epoch]
                total, count = 0.0, 0
                for start in range(0, per_epoch, cfg.batch_size):
                    batch = data[order[start : start + cfg.batch_size]]
                    x, y = batch[:, : self.context], batch[:, self.context :]
                    loss = torch.mean((net(x) - y) ** 2)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip:
                        nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                    opt.step()
                    if sched is not None:
                        sched.step()
                    total += float(loss.detach()) * batch.shape[0]
                    count += batch.shape[0]
                    if cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s:
                        break  # the budget also bounds a slow epoch (shared cores); validate and stop
                report.train_loss.append(total / max(count, 1))
                report.epochs_run = epoch + 1
                msg = f"[{tag}] epoch {epoch + 1}/{cfg.epochs} loss {report.train_loss[-1]:.4f}"
                if val_windows is not None:
                    vm = self.mse(val_windows, batch_size=cfg.val_batch_size)
                    report.val_mse.append(vm)
                    msg += f" val_mse {vm:.4f}"
                    if vm < best_val:
                        best_val, bad_epochs, report.best_epoch = vm, 0, epoch + 1
                        best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                    else:
                        bad_epochs += 1
                elapsed = time.perf_counter() - t0
                if log is not None:
                    log(f"{msg} ({elapsed:.1f}s)")
                if cfg.patience is not None and val_windows is not None and bad_epochs >= cfg.patience:
                    break
                if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
                    if log is not None and epoch + 1 < cfg.epochs:
                        log(f"[{tag}] time budget {cfg.time_budget_s:.0f}s reached in epoch {epoch + 1}")
                    break
            if best_state is not None:
                net.load_state_dict(best_state)
            net.eval()
        report.seconds = time.perf_counter() - t0
        return report

    # --- inference ----------------------------------------------------------------------------------
    def forecast(self, context: np.ndarray, *, batch_size: int = PREDICT_CHUNK) -> np.ndarray:
        """[n, >= context] past values (oldest first; the last `context` are used) -> [n, horizon]."""
        if self.net is None:
            raise RuntimeError(f"{self.kind} forecaster is not fitted")
        x = np.asarray(context, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] < self.context:
            raise ValueError(f"context must be [n, >= {self.context}], got {x.shape}")
        x = np.ascontiguousarray(x[:, -self.context :])
        if not np.isfinite(x).all():
            raise ValueError("context contains NaN or inf")
        net = self.net
        net.eval()
        out = np.empty((x.shape[0], self.horizon), dtype=np.float32)
        with torch.inference_mode():
            xt = torch.from_numpy(x)
            for start in range(0, x.shape[0], batch_size):
                out[start : start + batch_size] = net(xt[start : start + batch_size]).numpy()
        return out

    def mse(self, windows: np.ndarray, *, batch_size: int = PREDICT_CHUNK) -> float:
        """Mean squared forecast error over windows [N, context + horizon]."""
        w = np.asarray(windows, dtype=np.float32)
        err = 0.0
        for start in range(0, w.shape[0], batch_size):
            chunk = w[start : start + batch_size]
            pred = self.forecast(chunk[:, : self.context], batch_size=batch_size)
            err += float(np.sum((pred.astype(np.float64) - chunk[:, self.context :]) ** 2))
        return err / (w.shape[0] * self.horizon)

    # --- persistence --------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        assert self.net is not None
        return {k: v.detach().contiguous().clone() for k, v in self.net.state_dict().items()}

    def save(self, folder: Path, *, extra: dict[str, Any] | None = None) -> None:
        if self.net is None:
            raise RuntimeError(f"{self.kind} forecaster is not fitted")
        save_torch(
            Path(folder),
            kind=self.kind,
            hparams=asdict(self.hparams),
            tensors=self.state_tensors(),
            extra=extra or {},
        )

    @classmethod
    def from_saved(cls, hparams: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TorchForecaster:
        names = {f.name for f in fields(cls.Hparams)}
        unknown = set(hparams) - names
        missing = names - set(hparams)
        if unknown or missing:
            raise ModelLoadError(
                f"{cls.kind}: hyper-parameters do not match this code (unknown {sorted(unknown)}, "
                f"missing {sorted(missing)})"
            )
        try:
            self = cls(cls.Hparams(**hparams))
            with deterministic(0):
                self.net = self.build()
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{cls.kind}: invalid hyper-parameters {hparams}: {exc}") from exc
        expected = self.net.state_dict()
        if set(expected) != set(tensors):
            raise ModelLoadError(
                f"{cls.kind}: weight names do not match the hyper-parameters "
                f"(missing {sorted(set(expected) - set(tensors))[:5]}, "
                f"unexpected {sorted(set(tensors) - set(expected))[:5]})"
            )
        for key, value in expected.items():
            if tuple(value.shape) != tuple(tensors[key].shape) or value.dtype != tensors[key].dtype:
                raise ModelLoadError(
                    f"{cls.kind}: weight {key!r} is {tuple(tensors[key].shape)} {tensors[key].dtype}, "
                    f"the hyper-parameters need {tuple(value.shape)} {value.dtype}"
                )
        self.net.load_state_dict(tensors, strict=True)
        self.net.eval()
        return self

    @classmethod
    def load(cls, folder: Path) -> TorchForecaster:
        meta, tensors = load_torch(Path(folder), kind=cls.kind)
        return cls.from_saved(meta["hparams"], tensors)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_torch(
    folder: Path,
    *,
    kind: str,
    hparams: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    extra: dict[str, Any],
) -> None:
    """Write `model.safetensors` and `model.json` (kind, hyper-parameters, sha256 of the weights,
    library versions, plus `extra`)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    save_file(tensors, str(weights), metadata={"kind": kind, "format": str(FORMAT_VERSION)})
    meta = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "hparams": hparams,
        "weights": WEIGHTS_FILE,
        "weights_sha256": _sha256(weights),
        "torch": torch.__version__,
        **extra,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_torch(folder: Path, *, kind: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read and check what `save_torch` wrote; any problem raises ModelLoadError with the reason."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (cfg_path, weights):
        if not path.is_file():
            raise ModelLoadError(f"{kind}: missing model file {path}")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{kind}: {cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("hparams"), dict):
        raise ModelLoadError(f"{kind}: {cfg_path} has no hyper-parameters object")
    if meta.get("kind") != kind:
        raise ModelLoadError(f"{kind}: {folder} holds a {meta.get('kind')!r} model, not {kind!r}")
    if meta.get("format") != FORMAT_VERSION:
        raise ModelLoadError(f"{kind}: file format {meta.get('format')!r}, this code reads {FORMAT_VERSION}")
    saved_major = str(meta.get("torch", "")).split(".")[0]
    if saved_major != torch.__version__.split(".")[0]:
        raise ModelLoadError(f"{kind}: saved with torch {meta.get('torch')!r}, running {torch.__version__}")
    digest = _sha256(weights)
    if digest != meta.get("weights_sha256"):
        raise ModelLoadError(
            f"{kind}: {weights} is corrupted or was replaced (sha256 {digest[:12]}…, "
            f"expected {str(meta.get('weights_sha256'))[:12]}…)"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{kind}: cannot read {weights}: {exc}") from exc
    return meta, tensors


# --- DirectionModel adapter ---------------------------------------------------------------------------


def _fit_logistic(z: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iters: int = 50) -> tuple[float, float]:
    """P(y=1) = sigmoid(a z + b) by Newton's method in float64 (deterministic)."""
    X = np.stack([z, np.ones_like(z)], axis=1)
    w = np.zeros(2)
    pen = np.array([ridge, 0.0]) * len(z)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -30, 30)))
        grad = X.T @ (p - y) + pen * w
        hess = (X * (p * (1 - p))[:, None]).T @ X + np.diag(pen) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), float(w[1])


class TorchDirectionModel:
    """`DirectionModel` over a `TorchForecaster` (see the module docstring for the mapping to P(up))."""

    kind: ClassVar[str] = ""
    Forecaster: ClassVar[type[TorchForecaster]]
    default_train: ClassVar[TrainConfig] = TrainConfig(epochs=8, batch_size=256, lr=1e-3)

    def __init__(
        self,
        *,
        train: TrainConfig | None = None,
        log: LogFn | None = None,
        steps: int | None = None,
        **hparams: Any,
    ) -> None:
        """`steps`: how many leading forecast steps are summed into the direction score (set it to the
        label horizon when that is shorter than the forecast horizon); default the whole horizon."""
        self.forecaster = self.Forecaster(**hparams)
        self.steps = self.forecaster.horizon if steps is None else int(steps)
        if not 1 <= self.steps <= self.forecaster.horizon:
            raise ValueError(f"{self.kind}: steps must be in [1, horizon={self.forecaster.horizon}]")
        self.train = train or self.default_train
        self.log = log
        self.scale = 1.0  # returns are divided by this (train-set std) before the forecaster
        self.sigma_res = 1.0  # std of the cumulative-forecast residual (scaled units)
        self.a, self.b = 0.0, 0.0
        self.fitted = False

    @property
    def min_returns(self) -> int:
        """Columns of `ModelInput.returns` needed to predict (fit needs `context + horizon`)."""
        return self.forecaster.context

    def _returns(self, inputs: ModelInput, need: int) -> np.ndarray:
        r = np.asarray(inputs.returns, dtype=np.float64)
        if r.ndim != 2 or r.shape[1] < need:
            raise ValueError(f"{self.kind}: returns must be [n, >= {need}] past log returns, got {r.shape}")
        r = r[:, -need:]
        if not np.isfinite(r).all():
            raise ValueError(f"{self.kind}: returns contain NaN or inf")
        return r

    def fit(self, inputs: ModelInput, labels: np.ndarray, *, seed: int = 0) -> None:
        f = self.forecaster
        y = np.asarray(labels, dtype=np.float64).reshape(-1)
        r = self._returns(inputs, f.context + f.horizon)
        if y.shape[0] != r.shape[0]:
            raise ValueError(f"{self.kind}: {r.shape[0]} rows of returns but {y.shape[0]} labels")
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"{self.kind}: labels must be 0/1")
        self.scale = float(np.std(r)) or 1.0
        windows = (r / self.scale).astype(np.float32)
        f.fit_forecast(windows, config=self.train, seed=seed, log=self.log, name=self.kind)
        inner = f.forecast(windows[:, : f.context]).astype(np.float64)[:, : self.steps].sum(axis=1)
        realised = windows[:, f.context : f.context + self.steps].astype(np.float64).sum(axis=1)
        self.sigma_res = float(np.std(realised - inner)) or 1.0
        z = self._z(r[:, -f.context :])
        self.a, self.b = _fit_logistic(z, y)
        self.fitted = True

    def _z(self, r_ctx: np.ndarray) -> np.ndarray:
        fc = self.forecaster.forecast((r_ctx / self.scale).astype(np.float32))
        return fc.astype(np.float64)[:, : self.steps].sum(axis=1) / self.sigma_res

    def forecast_returns(self, inputs: ModelInput) -> np.ndarray:
        """The forecast of the next `horizon` log returns per row, [n, horizon] (float64)."""
        r = self._returns(inputs, self.forecaster.context)
        return self.forecaster.forecast((r / self.scale).astype(np.float32)).astype(np.float64) * self.scale

    def predict_proba(self, inputs: ModelInput) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError(f"{self.kind}: model is not fitted")
        z = self._z(self._returns(inputs, self.forecaster.context))
        return 1.0 / (1.0 + np.exp(-np.clip(self.a * z + self.b, -30.0, 30.0)))

    def save(self, folder: Path) -> None:
        if not self.fitted:
            raise RuntimeError(f"{self.kind}: model is not fitted")
        calib = {
            "scale": self.scale,
            "sigma_res": self.sigma_res,
            "a": self.a,
            "b": self.b,
            "steps": self.steps,
        }
        self.forecaster.save(Path(folder), extra={"direction": calib})

    @classmethod
    def load(cls, folder: Path) -> TorchDirectionModel:
        meta, tensors = load_torch(Path(folder), kind=cls.kind)
        calib = meta.get("direction")
        keys = ("scale", "sigma_res", "a", "b")
        if not isinstance(calib, dict) or not all(isinstance(calib.get(k), int | float) for k in keys):
            raise ModelLoadError(
                f"{cls.kind}: {folder} lacks the direction calibration (scale, sigma_res, a, b)"
            )
        if not all(math.isfinite(calib[k]) for k in keys) or calib["scale"] <= 0 or calib["sigma_res"] <= 0:
            raise ModelLoadError(f"{cls.kind}: invalid direction calibration {calib}")
        self = cls.__new__(cls)
        self.forecaster = cls.Forecaster.from_saved(meta["hparams"], tensors)
        self.train = cls.default_train
        self.log = None
        steps = calib.get("steps")
        if not isinstance(steps, int) or not 1 <= steps <= self.forecaster.horizon:
            raise ModelLoadError(f"{cls.kind}: direction steps {steps!r} not in [1, horizon]")
        self.steps = steps
        self.scale, self.sigma_res = float(calib["scale"]), float(calib["sigma_res"])
        self.a, self.b = float(calib["a"]), float(calib["b"])
        self.fitted = True
        return self

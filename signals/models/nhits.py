"""N-HiTS (Challu et al., "N-HiTS: Neural Hierarchical Interpolation for Time Series Forecasting",
AAAI 2023), compact torch version.

Stacks of MLP blocks. Block s max-pools its input with kernel `pool[s]` (multi-rate input sampling),
an MLP produces a full-resolution backcast and `ceil(H / downsample[s])` forecast knots, which are
linearly interpolated to the horizon (hierarchical interpolation). Blocks work on the residual of the
previous backcasts (doubly residual stacking, as N-BEATS) and their forecasts add up, starting from the
last observed value (the naive level, as in Nixtla's implementation). Optional RevIN on the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from signals.models.torch_common import RevIN, TorchDirectionModel, TorchForecaster, TrainConfig


@dataclass
class NHiTSHparams:
    context: int = 64
    horizon: int = 8
    pools: list[int] = field(default_factory=lambda: [4, 2, 1])  # one block per entry
    downsample: list[int] = field(default_factory=lambda: [4, 2, 1])
    hidden: int = 128
    mlp_layers: int = 2
    dropout: float = 0.0
    revin: bool = True

    def __post_init__(self) -> None:
        if len(self.pools) != len(self.downsample) or not self.pools:
            raise ValueError("pools and downsample need the same non-zero length")
        if min(self.pools) < 1 or min(self.downsample) < 1 or self.context < 1 or self.horizon < 1:
            raise ValueError("context, horizon, pools and downsample must be >= 1")


class NHiTSBlock(nn.Module):
    def __init__(
        self, context: int, horizon: int, pool: int, downsample: int, hidden: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        self.pool = pool
        self.horizon = horizon
        self.n_knots = max(1, math.ceil(horizon / downsample))
        in_len = math.ceil(context / pool)
        mlp: list[nn.Module] = []
        width = in_len
        for _ in range(layers):
            mlp += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                mlp.append(nn.Dropout(dropout))
            width = hidden
        self.mlp = nn.Sequential(*mlp)
        self.backcast = nn.Linear(hidden, context)
        self.knots = nn.Linear(hidden, self.n_knots)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x
        if self.pool > 1:
            h = F.max_pool1d(h.unsqueeze(1), self.pool, stride=self.pool, ceil_mode=True).squeeze(1)
        h = self.mlp(h)
        knots = self.knots(h)
        if self.n_knots == self.horizon:
            forecast = knots
        else:
            forecast = F.interpolate(
                knots.unsqueeze(1), size=self.horizon, mode="linear", align_corners=False
            ).squeeze(1)
        return self.backcast(h), forecast


class NHiTSNet(nn.Module):
    def __init__(self, hp: NHiTSHparams) -> None:
        super().__init__()
        self.revin = RevIN() if hp.revin else None
        self.blocks = nn.ModuleList(
            NHiTSBlock(hp.context, hp.horizon, p, d, hp.hidden, hp.mlp_layers, hp.dropout)
            for p, d in zip(hp.pools, hp.downsample, strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.revin is not None:
            x, mean, std = self.revin.norm(x)
        residual = x
        forecast = x[:, -1:].expand(-1, self.blocks[0].horizon)
        for block in self.blocks:
            backcast, f = block(residual)
            residual = residual - backcast
            forecast = forecast + f
        if self.revin is not None:
            forecast = self.revin.denorm(forecast, mean, std)
        return forecast


class NHiTSForecaster(TorchForecaster):
    kind: ClassVar[str] = "nhits"
    Hparams: ClassVar[type] = NHiTSHparams

    def build(self) -> nn.Module:
        return NHiTSNet(self.hparams)


class NHiTSDirectionModel(TorchDirectionModel):
    """DirectionModel "nhits": forecasts the next `horizon` log returns from the last `context`."""

    kind: ClassVar[str] = "nhits"
    Forecaster: ClassVar[type[TorchForecaster]] = NHiTSForecaster
    default_train: ClassVar[TrainConfig] = TrainConfig(epochs=8, batch_size=256, lr=1e-3)

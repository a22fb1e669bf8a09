"""PatchTST (Nie et al., "A Time Series is Worth 64 Words: Long-term Forecasting with Transformers",
ICLR 2023), compact torch version.

Channel independence (one row = one series), RevIN, patching (the series is padded at the end by
repeating its last value `stride` times, then cut into patches of `patch_len` every `stride`), a linear
patch embedding plus a learnable positional embedding, a vanilla transformer encoder with BatchNorm
(post-norm, as in the paper's code) and a flatten + linear head to the horizon. Not included: the
reference code's residual attention (attention scores carried between layers) and self-supervised
pre-training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from signals.models.torch_common import RevIN, TorchDirectionModel, TorchForecaster, TrainConfig


@dataclass
class PatchTSTHparams:
    context: int = 64
    horizon: int = 8
    patch_len: int = 8
    stride: int = 4
    d_model: int = 32
    n_heads: int = 4
    d_ff: int = 64
    layers: int = 2
    dropout: float = 0.1
    head_dropout: float = 0.0
    revin: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be a multiple of n_heads")
        if self.patch_len < 1 or self.stride < 1 or self.context < self.patch_len:
            raise ValueError("need 1 <= patch_len <= context and stride >= 1")

    @property
    def n_patches(self) -> int:
        return (self.context - self.patch_len) // self.stride + 2  # +1 from the end padding


class _BatchNorm(nn.Module):
    """BatchNorm1d over the feature axis of [B, N, D]."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop_attn = nn.Dropout(dropout)
        self.norm_attn = _BatchNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.drop_ff = nn.Dropout(dropout)
        self.norm_ff = _BatchNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = self.norm_attn(x + self.drop_attn(self.proj(att)))
        return self.norm_ff(x + self.drop_ff(self.ff(x)))


class PatchTSTNet(nn.Module):
    def __init__(self, hp: PatchTSTHparams) -> None:
        super().__init__()
        self.hp = hp
        self.revin = RevIN() if hp.revin else None
        self.embed = nn.Linear(hp.patch_len, hp.d_model)
        self.pos = nn.Parameter(torch.empty(hp.n_patches, hp.d_model).uniform_(-0.02, 0.02))
        self.drop = nn.Dropout(hp.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(hp.d_model, hp.n_heads, hp.d_ff, hp.dropout) for _ in range(hp.layers)
        )
        self.head_drop = nn.Dropout(hp.head_dropout)
        self.head = nn.Linear(hp.n_patches * hp.d_model, hp.horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hp = self.hp
        if self.revin is not None:
            x, mean, std = self.revin.norm(x)
        x = torch.cat([x, x[:, -1:].expand(-1, hp.stride)], dim=1)
        patches = x.unfold(1, hp.patch_len, hp.stride)  # [B, N, P]
        z = self.drop(self.embed(patches) + self.pos)
        for layer in self.layers:
            z = layer(z)
        y = self.head(self.head_drop(z.flatten(1)))
        if self.revin is not None:
            y = self.revin.denorm(y, mean, std)
        return y


class PatchTSTForecaster(TorchForecaster):
    kind: ClassVar[str] = "patchtst"
    Hparams: ClassVar[type] = PatchTSTHparams

    def build(self) -> nn.Module:
        return PatchTSTNet(self.hparams)


class PatchTSTDirectionModel(TorchDirectionModel):
    """DirectionModel "patchtst": forecasts the next `horizon` log returns from the last `context`."""

    kind: ClassVar[str] = "patchtst"
    Forecaster: ClassVar[type[TorchForecaster]] = PatchTSTForecaster
    default_train: ClassVar[TrainConfig] = TrainConfig(epochs=6, batch_size=256, lr=1e-3)

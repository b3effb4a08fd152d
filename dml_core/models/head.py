"""Embedding head: pooling, a linear map to `embedding_dim`, L2 normalisation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GlobalPool(nn.Module):
    """`avg` = GAP; `avg_max` = GAP + GMP, the pooling of Proxy-Anchor's and SEE's reference code."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        if mode not in ("avg", "avg_max"):
            raise ValueError(f"model.pooling: unknown pooling {mode!r}; choose avg or avg_max")
        self.mode = mode

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(fmap, 1)
        if self.mode == "avg_max":
            pooled = pooled + F.adaptive_max_pool2d(fmap, 1)
        return pooled.flatten(1)


class EmbeddingHead(nn.Module):
    """[LayerNorm without affine] + linear projection of pooled features, then L2 normalisation.

    `norm=True` is SEE's reference head (LayerNorm(elementwise_affine=False) before the linear
    map); `init` picks the linear weight's initialisation, the bias starts at 0.
    """

    def __init__(self, in_features: int, embedding_dim: int, norm: bool = False, init: str = "kaiming_normal") -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_features, elementwise_affine=False) if norm else nn.Identity()
        self.linear = nn.Linear(in_features, embedding_dim)
        if init == "kaiming_normal":
            # Proxy-Anchor's reference init; keeps early embeddings spread rather than collapsed.
            nn.init.kaiming_normal_(self.linear.weight, mode="fan_out")
        elif init == "orthogonal":
            nn.init.orthogonal_(self.linear.weight)
        elif init == "xavier_uniform":
            # MXNet Xavier(magnitude=2, uniform, avg): bound sqrt(2 * 2 / (fan_in + fan_out)),
            # torch's xavier bound is gain * sqrt(6 / (fan_in + fan_out)).
            nn.init.xavier_uniform_(self.linear.weight, gain=(2 / 3) ** 0.5)
        else:
            raise ValueError(f"model.head_init: unknown initialisation {init!r}")
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(self.norm(features)), dim=1)

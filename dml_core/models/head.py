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
    """Linear projection of pooled features, then L2 normalisation onto the unit sphere."""

    def __init__(self, in_features: int, embedding_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, embedding_dim)
        # Proxy-Anchor's reference init; keeps early embeddings spread rather than collapsed.
        nn.init.kaiming_normal_(self.linear.weight, mode="fan_out")
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(features), dim=1)

"""Batches shaped like the P x K sampler's: K contiguous rows per class, unit-norm rows."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from dml_core.params.losses import LOSSES

# From the registry, so a new loss is tested with no edit here.
PAIR_LOSSES = [n for n in LOSSES.names() if LOSSES.get(n).family == "pair"]
PROXY_LOSSES = [n for n in LOSSES.names() if LOSSES.get(n).family == "proxy"]
NUM_CLASSES = 10


def make_batch(p: int = 5, k: int = 4, d: int = 16, seed: int = 0, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(p * k, d, generator=g, dtype=dtype), dim=1)
    labels = torch.randperm(NUM_CLASSES, generator=g)[:p].repeat_interleave(k)
    return emb, labels


@pytest.fixture
def pk_batch() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    return make_batch

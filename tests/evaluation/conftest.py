"""Shared synthetic embeddings for the evaluation tests."""
from __future__ import annotations

from typing import Callable

import faiss
import numpy as np
import pytest


def _blobs(n: int, n_classes: int, d: int = 16, spread: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors scattered around one random centre per class (labels drawn at random, so
    some classes may hold a single point); `spread` sets the noise, i.e. how hard retrieval is."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    x = (rng.standard_normal((n_classes, d))[labels] + spread * rng.standard_normal((n, d))).astype(np.float32)
    faiss.normalize_L2(x)
    return x, labels


@pytest.fixture
def blobs() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    return _blobs

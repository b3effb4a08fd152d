"""What the evaluation accepts as embeddings and labels, and the one error it raises for bad ones.

Every public entry point of `dml_core.evaluation` funnels its arrays through these two functions,
so torch tensors (any device, any float dtype, with or without grad) and numpy arrays behave
alike and a shape or dtype mistake is reported once, in one line, naming the argument.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class EvaluationError(ValueError):
    """Bad input to the evaluation; the message is one line naming the argument."""


def _to_numpy(x: Any) -> np.ndarray:
    # Imported lazily: the numpy-only path (faiss + sklearn) must not pay for importing torch.
    if type(x).__module__.startswith("torch"):
        x = x.detach()
        if x.is_floating_point():
            x = x.float()  # fp16 / bf16 from mixed precision: faiss wants float32
        return x.cpu().numpy()
    return np.asarray(x)


def as_embeddings(x: Any, name: str) -> np.ndarray:
    """Return `x` as a C-contiguous float32 (n, d) array, n >= 1, all values finite.

    No copy is made when `x` already is one, so callers must not modify the result in place.
    """
    arr = _to_numpy(x)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise EvaluationError(f"{name}: expected a non-empty (n, d) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise EvaluationError(f"{name}: expected real numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise EvaluationError(
            f"{name}: row {int(np.argmin(finite))} holds NaN or inf "
            f"({int((~finite).sum())} bad rows); the model has probably diverged"
        )
    return arr


def as_labels(y: Any, name: str, n: int) -> np.ndarray:
    """Return `y` as a 1-D int64 array of length `n` (integer class ids, any range)."""
    arr = _to_numpy(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise EvaluationError(f"{name}: expected shape ({n},) to match the embeddings, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise EvaluationError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)

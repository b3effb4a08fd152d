"""Zero-shot evaluation of embeddings (docs/algorithms.md section 3).

- `knn.py`: exact, chunked faiss kNN with self-exclusion by index (CPU, or GPU when available).
- `retrieval.py`: Recall@K, MAP@R, R-precision from one search.
- `clustering.py`: NMI and pairwise F1 of k-means with k = number of classes.
- `protocol.py`: `evaluate`, the whole protocol in one call; `embed.py`: `embed_dataset`.
"""
from typing import Any

from .inputs import EvaluationError
from .protocol import evaluate

__all__ = ["EvaluationError", "embed_dataset", "evaluate"]


def __getattr__(name: str) -> Any:
    # `embed_dataset` is the only part that needs torch, whose import alone costs ~700 MB of
    # resident memory; evaluating numpy embeddings (notebooks, benchmarks) should not pay that.
    if name == "embed_dataset":
        from .embed import embed_dataset

        return embed_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

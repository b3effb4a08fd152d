"""Zero-shot evaluation of embeddings (docs/algorithms.md section 3).

- `knn.py`: exact, chunked kNN with self-exclusion by index: faiss or `torch_backend.py` (CUDA).
- `retrieval.py`: Recall@K, MAP@R, R-precision from one search.
- `clustering.py`: NMI and pairwise F1 of k-means with k = number of classes.
- `protocol.py`: `evaluate`, the whole protocol in one call; `embed.py`: `embed_dataset`.
- `names.py`: the metric names `evaluate` returns for a configuration (`metric_names`).
"""
from typing import Any

from .inputs import EvaluationError
from .names import metric_names

__all__ = ["EvaluationError", "embed_dataset", "evaluate", "metric_names"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: `embed_dataset` needs torch (~700 MB resident), `evaluate` faiss;
    # checking a config's metric names (`names.py`) or evaluating numpy embeddings should not pay.
    if name == "embed_dataset":
        from .embed import embed_dataset

        return embed_dataset
    if name == "evaluate":
        from .protocol import evaluate

        return evaluate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

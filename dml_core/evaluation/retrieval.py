"""Retrieval metrics from one exact kNN search: Recall@K, MAP@R and R-precision.

Definitions (docs/algorithms.md section 3). For a query q with class y_q, let R be the number of
gallery items of class y_q (q itself excluded when the gallery is the query set), and rel(i) = 1
if the i-th nearest neighbour has class y_q.

- Recall@K (Oh Song et al., CVPR 2016; the DML convention, which is "hit rate", not IR recall):
  1 if any of the K nearest neighbours has class y_q, else 0.
- R-precision (Musgrave et al., "A Metric Learning Reality Check", ECCV 2020):
  (1/R) sum_{i<=R} rel(i).
- MAP@R (same paper): (1/R) sum_{i<=R} P(i) rel(i), with P(i) the precision among the first i.

Each is averaged over queries with R >= 1. A query whose class has no other item (R = 0) has no
correct answer, so all three are undefined for it and it is left out of every average -- the
behaviour of pytorch-metric-learning's AccuracyCalculator ("lone query labels"), which the tests
cross-check against. (The standard DML test sets -- CUB, Cars, SOP, In-Shop -- have none.)

Cost. One search with k = max(max K, max R) neighbours serves all three metrics; k is capped at
the number of rows that can be neighbours (a K beyond it means "the whole gallery"). No other cap
is applied, because a smaller k would silently truncate MAP@R for the largest classes. The search
is brute force, O(N_q * N_g * d) multiply-adds -- the dominant cost -- plus O(N_q * N_g * log k)
for faiss' top-k heaps, which only matters for large k (SOP's R@1000 asks for k = 1000).
Memory is one query chunk's (rows x k) results, not N_q x k: metrics are summed chunk by chunk.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .inputs import EvaluationError
from .knn import Backend, Metric, knn_chunks
from .names import RETRIEVAL, recall_name


def check_ks(ks: int | Sequence[int]) -> tuple[int, ...]:
    """Validate a Recall@K list (or one K): positive integers; returned sorted, deduplicated."""
    values = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in values):
        raise EvaluationError(f"k: expected a non-empty list of positive integers, got {ks!r}")
    return tuple(sorted({int(v) for v in values}))


def same_class_counts(
    query_labels: np.ndarray, gallery_labels: np.ndarray, exclude_self: bool
) -> np.ndarray:
    """R per query: gallery items sharing its class, minus itself when the gallery is the queries."""
    classes, inverse = np.unique(np.concatenate([query_labels, gallery_labels]), return_inverse=True)
    per_class = np.bincount(inverse[len(query_labels) :], minlength=len(classes))
    return per_class[inverse[: len(query_labels)]] - int(exclude_self)


def score_neighbours(hits: np.ndarray, r: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-query metric values from the (n, k) neighbour hit matrix and R (all R >= 1).

    `hits[q, i]` says whether the (i+1)-th nearest neighbour of query q has q's class. Needs
    k >= max(R); K > k is read as "all k neighbours".
    """
    n, k = hits.shape
    if n == 0:
        return {name: np.zeros(0) for name in [*(recall_name(kk) for kk in ks), *RETRIEVAL]}
    if r.min() < 1 or r.max() > k:
        raise EvaluationError(f"r: every R must be in [1, {k}] (the neighbours searched)")
    found = hits.any(axis=1)
    first_hit = np.where(found, hits.argmax(axis=1), k)  # 0-based rank of the first hit
    out = {recall_name(kk): (first_hit < kk).astype(np.float64) for kk in ks}

    # Only the first max(R) columns can count towards MAP@R / R-precision: with SOP's K = 1000
    # and R <= 11 this keeps the work O(n * 11) instead of O(n * 1000).
    width = int(r.max())
    ranks = np.arange(1, width + 1)
    rel = hits[:, :width] & (ranks <= r[:, None])
    n_rel = np.cumsum(rel, axis=1)  # number of hits among the first i
    out["map_at_r"] = (n_rel / ranks * rel).sum(axis=1) / r
    out["r_precision"] = n_rel[:, -1] / r
    return out


def retrieval_metrics(
    queries: np.ndarray,
    query_labels: np.ndarray,
    gallery: Optional[np.ndarray] = None,
    gallery_labels: Optional[np.ndarray] = None,
    *,
    ks: Sequence[int] = (1, 2, 4, 8),
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    use_gpu: Optional[bool] = None,
    backend: Backend = "faiss",
    device: Any = None,
) -> dict[str, float]:
    """Recall@K for each K in `ks`, MAP@R and R-precision, means over queries with R >= 1.

    ``gallery=None``: each query is searched among all the other queries (leave-one-out).
    Arrays are validated float32 embeddings and int64 labels (see `inputs.py`).
    """
    ks = check_ks(ks)
    if (gallery is None) != (gallery_labels is None):
        raise EvaluationError("gallery_labels: gallery and gallery_labels must be given together")
    exclude_self = gallery is None
    if exclude_self:
        gallery_labels = query_labels
    r = same_class_counts(query_labels, gallery_labels, exclude_self)
    valid = r >= 1
    if not valid.any():
        raise EvaluationError(
            "labels: no query has a same-class item among its possible neighbours, "
            "so retrieval metrics are undefined"
        )
    n_candidates = len(gallery_labels) - int(exclude_self)
    k = min(max(ks[-1], int(r.max())), n_candidates)

    sums: dict[str, float] = {}
    for start, _, ids in knn_chunks(queries, gallery, k, metric=metric, chunk_size=chunk_size, use_gpu=use_gpu,
                                   backend=backend, device=device):
        rows = slice(start, start + len(ids))
        keep = valid[rows]
        hits = gallery_labels[ids[keep]] == query_labels[rows][keep, None]
        for name, values in score_neighbours(hits, r[rows][keep], ks).items():
            sums[name] = sums.get(name, 0.0) + float(values.sum())
    n_valid = int(valid.sum())
    return {name: total / n_valid for name, total in sums.items()}

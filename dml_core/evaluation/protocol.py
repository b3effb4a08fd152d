"""`evaluate`: the zero-shot evaluation protocol of docs/algorithms.md section 3 in one call."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from .inputs import EvaluationError, as_embeddings, as_labels
from .knn import Backend, Metric, device_of, resolve_backend, resolve_use_gpu
from .retrieval import check_ks, retrieval_metrics


def evaluate(
    embeddings: Any,
    labels: Any,
    gallery: Any = None,
    gallery_labels: Any = None,
    *,
    k: int | Sequence[int] = (1, 2, 4, 8),
    clustering: bool = True,
    kmeans_iters: int = 20,
    seed: int = 0,
    use_gpu: Optional[bool] = None,
    metric: Metric = "cosine",
    chunk_size: Optional[int] = None,
    backend: Backend = "auto",
    device: Any = None,
) -> dict[str, float]:
    """Retrieval and clustering metrics of test embeddings, as a flat ``{name: float}`` dict.

    Keys: ``recall_at_{K}`` for each K in `k`, ``map_at_r``, ``r_precision``, and with
    `clustering` also ``nmi`` and ``f1`` (no '@' anywhere: MLflow rejects it in metric names).

    - Without a gallery (CUB, Cars, SOP) every embedding queries all the others. With one
      (In-Shop) the queries search the gallery only and nothing is excluded -- unless `gallery`
      holds exactly the queries again (same values and labels), which is treated as no gallery.
    - Retrieval: `retrieval.py` (queries whose class has no other item are left out); clustering:
      `clustering.py` on all distinct test embeddings (queries + gallery), k = their class count.
    - `metric`: "cosine" (default; rows L2-normalised, inner product) or "l2" (raw squared
      Euclidean); see `knn.py`. `use_gpu`: None = a GPU if faiss has one. `chunk_size`: query
      rows per search (default: sized so one chunk's working set stays near 256 MiB).
    - `backend`: "faiss", "torch" (exact chunked matmul + top-k on `device`) or "auto" = torch
      when `device` is CUDA, else faiss. `device` defaults to the embeddings' own when they are
      a torch tensor (so CUDA embeddings are evaluated on their GPU, no faiss GPU build needed).
      `use_gpu` concerns the faiss backend only. Both backends give the same metrics up to the
      order of exact ties (tests/evaluation/test_backends.py).
    - Inputs: torch tensors (any device/dtype) or numpy arrays; labels are integer class ids.
    """
    ks = check_ks(k)
    if device is None:
        device = device_of(embeddings)
    backend = resolve_backend(backend, device)
    if isinstance(kmeans_iters, bool) or not isinstance(kmeans_iters, int) or kmeans_iters < 1:
        raise EvaluationError(f"kmeans_iters: must be a positive integer, got {kmeans_iters!r}")
    if (gallery is None) != (gallery_labels is None):
        raise EvaluationError("gallery_labels: gallery and gallery_labels must be given together")
    x = as_embeddings(embeddings, "embeddings")
    y = as_labels(labels, "labels", len(x))
    g = gy = None
    if gallery is not None:
        g = as_embeddings(gallery, "gallery")
        gy = as_labels(gallery_labels, "gallery_labels", len(g))
        if g.shape[1] != x.shape[1]:
            raise EvaluationError(f"gallery: dimension {g.shape[1]} differs from the embeddings' {x.shape[1]}")
        if g.shape == x.shape and np.array_equal(gy, y) and np.array_equal(g, x):
            g = gy = None  # the queries passed twice: a query must not retrieve itself
    if g is None and len(x) < 2:
        raise EvaluationError("embeddings: need at least 2 rows to search each among the others")
    use_gpu = resolve_use_gpu(use_gpu) if backend == "faiss" else False
    on = dict(backend=backend, device=device)

    metrics = retrieval_metrics(x, y, g, gy, ks=ks, metric=metric, chunk_size=chunk_size, use_gpu=use_gpu, **on)
    if clustering:
        # Imported here: its scikit-learn (and scipy) cost an evaluation without clustering ~1 s
        # and ~60 MiB on first use, for nothing.
        from .clustering import clustering_metrics

        all_x = x if g is None else np.concatenate([x, g])
        all_y = y if gy is None else np.concatenate([y, gy])
        metrics.update(clustering_metrics(all_x, all_y, niter=kmeans_iters, seed=seed, metric=metric, use_gpu=use_gpu,
                                           **on))
    return metrics

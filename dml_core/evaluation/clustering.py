"""Clustering metrics: NMI and pairwise F1 of a k-means partition against the classes.

Protocol (Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding", CVPR
2016; docs/algorithms.md section 3): run k-means on the test embeddings with k = number of test
classes, then compare clusters with classes by

- NMI: normalised mutual information, scikit-learn's `normalized_mutual_info_score` (arithmetic
  mean normalisation, as pytorch-metric-learning reports it);
- F1: over all unordered sample pairs, precision = share of same-cluster pairs that are same-class,
  recall = share of same-class pairs that are same-cluster, F1 their harmonic mean.

The pair counts come from the class x cluster contingency table (sum of C(n_ij, 2) etc.), so F1
costs O(N + non-zero cells) rather than the O(N^2) of enumerating pairs.

K-means is faiss' Lloyd k-means (random initial centroids drawn with `seed`, at most `niter`
iterations, exhaustive nearest-centroid assignment): the same algorithm and defaults as
pytorch-metric-learning uses, so with seed 1234 both give the same partition. Random
initialisation means even perfectly separated classes need not reach NMI = 1 (two starting points
in one class never separate); that is inherent to this standard protocol, and kept for
comparability. Cost: one iteration is an N x k x d nearest-centroid search, and faiss stops as
soon as an iteration leaves the objective unchanged, so `niter` is an upper bound. It is
negligible for CUB and Cars (k ~ 100) and the expensive part of evaluating SOP (N = 60,502, k =
11,316): measured by `benchmarks/bench_eval.py` at N = 60,000, k = 11,924, d = 512 on a 2-core
CPU, ~11 CPU-seconds (~6 s wall) per iteration, so up to ~2 minutes for 20 iterations. What is
done about it:
- on a CUDA device the torch backend (`torch_backend.kmeans_assign`) runs the same algorithm --
  faiss' subsample, initial centroids and empty-cluster splits replayed exactly -- without a faiss
  GPU build (tests: identical partitions to faiss on CPU); a faiss GPU build is used where it
  loads (`use_gpu`). ~0.7 TFLOP per SOP iteration, well under a second on a current GPU (an
  estimate until `benchmarks/gpu_check.py` has run on one);
- nothing is approximated: SOP has ~5 points per class, so faiss' subsampling
  (`max_points_per_centroid`, default 256) never triggers on these datasets, and an approximate
  assignment step would make NMI incomparable with published numbers;
- the lever is `niter` (config `eval.kmeans_iters`), cost linear in it; on a CPU, SOP runs may
  lower it or set `eval.clustering: false` and compute NMI/F1 only for the final model.
"""
from __future__ import annotations

from typing import Any

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix

from .knn import CHUNK_BYTES, Backend, Metric, prepare, resolve_backend


def kmeans_assign(x: np.ndarray, n_clusters: int, *, niter: int, seed: int, use_gpu: bool = False,
                  backend: Backend = "faiss", device: Any = None) -> np.ndarray:
    """Cluster the rows of `x` (float32 (n, d)) into `n_clusters` with faiss' k-means (run by
    faiss, or replayed by the torch backend on `device`); int64 cluster ids."""
    if resolve_backend(backend, device) == "torch":
        from . import torch_backend

        return torch_backend.kmeans_assign(x, n_clusters, niter=niter, seed=seed,
                                           device=torch_backend.resolve_device(device), budget_bytes=CHUNK_BYTES)
    kmeans = faiss.Kmeans(
        x.shape[1],
        n_clusters,
        niter=niter,
        seed=seed,
        gpu=use_gpu,
        # The evaluation protocol clusters the test set into as many clusters as it has classes,
        # so few points per centroid is by design; this only silences faiss' stderr warning.
        min_points_per_centroid=1,
    )
    kmeans.train(x)
    _, assignment = kmeans.index.search(x, 1)
    return assignment.ravel().astype(np.int64)


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs within groups of the given sizes: sum of C(n, 2)."""
    counts = np.asarray(counts, dtype=np.int64).ravel()
    return int((counts * (counts - 1) // 2).sum())


def pairwise_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Pairwise F1 of a partition against class labels (0.0 when there are no positive pairs)."""
    table = contingency_matrix(labels, clusters, sparse=True)  # classes x clusters, CSR
    same_both = _pairs(table.data)  # pairs sharing class and cluster
    same_cluster = _pairs(table.sum(axis=0))
    same_class = _pairs(table.sum(axis=1))
    if same_both == 0:
        return 0.0
    precision, recall = same_both / same_cluster, same_both / same_class
    return float(2 * precision * recall / (precision + recall))


def clustering_metrics(
    x: np.ndarray,
    labels: np.ndarray,
    *,
    niter: int = 20,
    seed: int = 0,
    metric: Metric = "cosine",
    use_gpu: bool = False,
    backend: Backend = "faiss",
    device: Any = None,
) -> dict[str, float]:
    """``{"nmi", "f1"}`` of k-means (k = number of classes in `labels`) on `x`.

    With ``metric="cosine"`` the unit-normalised rows are clustered, i.e. the same geometry the
    retrieval metrics rank in; ``"l2"`` clusters the raw rows. `backend`/`device`: see `knn.py`.
    """
    n_classes = len(np.unique(labels))
    clusters = kmeans_assign(prepare(x, metric), n_classes, niter=niter, seed=seed, use_gpu=use_gpu,
                             backend=backend, device=device)
    return {
        "nmi": float(normalized_mutual_info_score(labels, clusters)),
        "f1": pairwise_f1(labels, clusters),
    }

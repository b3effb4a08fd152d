"""NMI / pairwise F1: hand-worked F1, F1 against brute-force pair counting, k-means sanity."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from dml_core.evaluation.clustering import clustering_metrics, kmeans_assign, pairwise_f1


def brute_force_f1(labels: np.ndarray, clusters: np.ndarray) -> float:
    """F1 by enumerating all N(N-1)/2 pairs -- the O(N^2) definition."""
    tp = fp = fn = 0
    for i, j in combinations(range(len(labels)), 2):
        same_class, same_cluster = labels[i] == labels[j], clusters[i] == clusters[j]
        tp += same_class and same_cluster
        fp += same_cluster and not same_class
        fn += same_class and not same_cluster
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall)


def test_pairwise_f1_by_hand():
    # classes  A A A B B, clusters 0 0 1 1 1
    # same-class pairs C(3,2)+C(2,2) = 4; same-cluster pairs C(2,2)+C(3,2) = 4;
    # both: cells (A,0)=2 -> 1 pair, (A,1)=1 -> 0, (B,1)=2 -> 1 pair: 2.
    # precision 2/4, recall 2/4, F1 = 0.5
    assert pairwise_f1(np.array([0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 1])) == pytest.approx(0.5)
    # classes A A B B, clusters 0 0 0 0: precision 2/6, recall 2/2 -> F1 = 2 (1/3)(1) / (4/3) = 0.5
    assert pairwise_f1(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0])) == pytest.approx(0.5)
    # all singletons: no same-cluster pair at all -> defined as 0
    assert pairwise_f1(np.array([0, 0, 1]), np.array([0, 1, 2])) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_pairwise_f1_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 120))
    labels = rng.integers(0, rng.integers(2, 12), n) * 10 - 3  # arbitrary, non-contiguous ids
    clusters = np.where(rng.random(n) < 0.6, labels, rng.integers(0, 8, n))  # partly agreeing
    assert pairwise_f1(labels, clusters) == pytest.approx(brute_force_f1(labels, clusters), rel=1e-12)


def test_clusters_follow_the_classes(blobs):
    # Well-separated classes give a partition that agrees with them far better than with a random
    # relabelling of the same points. (Not NMI = 1: faiss' k-means starts from random points, and
    # two starts in one class never separate under Lloyd iterations -- true of every evaluation
    # built on faiss k-means, pytorch-metric-learning's included.)
    x, y = blobs(300, 6, d=32, spread=0.05, seed=4)
    shuffled = np.random.default_rng(0).permutation(y)
    real = clustering_metrics(x, y, niter=20, seed=0)
    chance = clustering_metrics(x, shuffled, niter=20, seed=0)
    assert real["nmi"] > 0.7 and real["f1"] > 0.5
    assert chance["nmi"] < 0.1 and chance["f1"] < 0.3


def test_kmeans_is_seeded(blobs):
    x, y = blobs(400, 40, spread=1.0, seed=5)
    a = kmeans_assign(x, 40, niter=5, seed=1)
    np.testing.assert_array_equal(a, kmeans_assign(x, 40, niter=5, seed=1))
    assert a.dtype == np.int64 and a.shape == (400,) and 0 <= a.min() and a.max() < 40
    noisy = clustering_metrics(x, y, niter=5, seed=1)
    assert 0.2 < noisy["nmi"] < 1.0 and 0.0 < noisy["f1"] < 1.0

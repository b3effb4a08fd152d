"""Cross-check against pytorch-metric-learning's AccuracyCalculator on the same embeddings.

PML's precision_at_1 is our recall_at_1 (one neighbour: hit or not); both leave queries of
one-member classes out. NMI: PML runs faiss k-means with faiss' default seed 1234 and 20
iterations, so `evaluate(seed=1234, kmeans_iters=20)` must give the very same partition and NMI.
Exact kNN ties can be broken differently by IndexFlatL2 (PML's default) and IndexFlatIP, so the
"l2" comparison uses PML's default and the "cosine" one gives PML an inner-product index.
"""
from __future__ import annotations

import faiss
import pytest
import torch

pml_accuracy = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
pml_inference = pytest.importorskip("pytorch_metric_learning.utils.inference")

from dml_core.evaluation import evaluate  # noqa: E402

SHARED = {
    "recall_at_1": "precision_at_1",
    "map_at_r": "mean_average_precision_at_r",
    "r_precision": "r_precision",
}


def pml_calculator(metric: str, with_nmi: bool) -> "pml_accuracy.AccuracyCalculator":
    knn = pml_inference.FaissKNN(index_init_fn=faiss.IndexFlatIP if metric == "cosine" else None)
    include = tuple(SHARED.values()) + (("NMI",) if with_nmi else ())
    return pml_accuracy.AccuracyCalculator(include=include, k="max_bin_count", device=torch.device("cpu"), knn_func=knn)


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_leave_one_out_matches_pml(blobs, metric):
    # ~1,200 points in ~240 classes, some of them single points (lone queries).
    x, y = blobs(1200, 240, d=32, spread=1.3, seed=7)
    ours = evaluate(x, y, k=(1,), metric=metric, seed=1234, kmeans_iters=20)
    theirs = pml_calculator(metric, with_nmi=True).get_accuracy(x, y)
    for our_key, their_key in SHARED.items():
        assert ours[our_key] == pytest.approx(theirs[their_key], abs=1e-12), our_key
    assert ours["nmi"] == pytest.approx(theirs["NMI"], abs=1e-12)
    assert 0.1 < ours["recall_at_1"] < 0.9  # neither trivial nor hopeless


def test_query_gallery_matches_pml(blobs):
    q, qy = blobs(500, 150, d=32, spread=1.3, seed=8)
    g, gy = blobs(700, 150, d=32, spread=1.3, seed=8)  # same centres, other points
    gy = gy.copy()
    gy[gy == 3] = 4  # class 3 now has no gallery item: its queries are left out by both
    ours = evaluate(q, qy, g, gy, k=(1,), metric="l2", clustering=False)
    theirs = pml_calculator("l2", with_nmi=False).get_accuracy(q, qy, g, gy)
    for our_key, their_key in SHARED.items():
        assert ours[our_key] == pytest.approx(theirs[their_key], abs=1e-12), our_key

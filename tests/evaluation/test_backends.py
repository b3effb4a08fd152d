"""The torch evaluation backend (the CUDA path) against faiss, both run on CPU here in float32."""
from __future__ import annotations

import typing

import numpy as np
import pytest
import torch

from dml_core.config import EvalConfig
from dml_core.evaluation import EvaluationError, evaluate
from dml_core.evaluation.clustering import clustering_metrics, kmeans_assign
from dml_core.evaluation.knn import BACKENDS, default_chunk_size, knn, resolve_backend
from dml_core.evaluation.retrieval import retrieval_metrics
from dml_core.evaluation import torch_backend

CPU = torch.device("cpu")


def both(x, y, g=None, gy=None, **kw):
    faiss_m = evaluate(x, y, g, gy, backend="faiss", **kw)
    torch_m = evaluate(x, y, g, gy, backend="torch", device="cpu", **kw)
    return faiss_m, torch_m


def assert_same(a: dict, b: dict, tol: float = 1e-9) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert abs(a[name] - b[name]) <= tol, (name, a[name], b[name])


def test_backend_names_are_the_config_field_choices():
    assert typing.get_args(EvalConfig.model_fields["knn_backend"].annotation) == BACKENDS


def test_auto_is_torch_exactly_on_cuda():
    assert resolve_backend("auto", None) == "faiss"
    assert resolve_backend("auto", "cpu") == "faiss"
    assert resolve_backend("auto", torch.device("cuda", 0)) == "torch"
    assert resolve_backend("faiss", "cuda:0") == "faiss"
    assert resolve_backend("torch", None) == "torch"
    with pytest.raises(EvaluationError, match="backend"):
        resolve_backend("cuvs", None)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("spread", [0.3, 3.0])  # clustered / nearly random
def test_same_metrics_as_faiss_leave_one_out(blobs, metric, spread):
    x, y = blobs(1500, 40, d=24, spread=spread, seed=1)
    if metric == "l2":
        x = x * np.random.default_rng(0).uniform(0.5, 2.0, (len(x), 1)).astype(np.float32)
    f, t = both(x, y, k=(1, 2, 4, 8, 16), metric=metric)
    assert_same(f, t)


def test_same_metrics_on_gaussian_noise():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1200, 64)).astype(np.float32)
    y = rng.integers(0, 30, len(x))
    assert_same(*both(x, y, k=(1, 10, 100), clustering=False))


def test_same_metrics_in_query_gallery_mode(blobs):
    x, y = blobs(1800, 30, d=16, spread=0.8, seed=2)
    q, qy, g, gy = x[:600], y[:600], x[600:], y[600:]
    f, t = both(q, qy, g, gy, k=(1, 5, 20))
    assert_same(f, t)


def test_duplicates_count_and_self_is_excluded_by_index():
    # Every row appears 4 times, and one point appears 12 times (more copies than k + 1), so the
    # query itself can fall outside its own k + 1 results in either backend's tie order.
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    labels = rng.integers(0, 10, 50)
    x = np.concatenate([np.repeat(base, 4, axis=0), np.repeat(base[:1], 8, axis=0)])
    y = np.concatenate([np.repeat(labels, 4), np.repeat(labels[:1], 8)])
    for metric in ("cosine", "l2"):
        _, ids = knn(x, None, 3, metric=metric, backend="torch", device=CPU)
        assert not (ids == np.arange(len(x))[:, None]).any()
        for row in range(4, 200, 4):  # a row's 3 other copies are its 3 nearest neighbours
            assert set(ids[row]) == {row + 1, row + 2, row + 3}
        copies = set(range(4)) | set(range(200, 208))  # base[0], 12 times
        for row in copies:
            assert set(ids[row]) <= copies - {row}
        f, t = both(x, y, k=(1, 2, 4), metric=metric, clustering=False)
        assert_same(f, t)
        assert f["recall_at_1"] == 1.0  # a duplicate of the same class is a hit


@pytest.mark.parametrize("chunk_size", [1, 7, 256, None])
def test_chunking_does_not_change_neighbours(blobs, chunk_size):
    x, _ = blobs(300, 10, d=12, spread=1.0, seed=4)
    ref_scores, ref_ids = knn(x, None, 9, backend="faiss")
    scores, ids = knn(x, None, 9, backend="torch", device=CPU, chunk_size=chunk_size)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (ids == ref_ids).mean() > 0.99  # only exact ties may be ordered differently


def test_torch_chunk_bounds_the_score_block():
    # The torch chunk holds a (rows x gallery) float32 block: its default respects the budget,
    # and is never larger than the faiss chunk for the same k.
    budget = 256 * 2**20
    for n_gallery, k in [(60_000, 1000), (1_000_000, 4), (10, 2)]:
        rows = torch_backend.chunk_rows(n_gallery, k, budget, 48)
        assert rows >= 1 and (rows == 1 or rows * (4 * n_gallery + 48 * (k + 1)) <= budget)
        assert rows <= default_chunk_size(k)


def test_retrieval_on_a_torch_tensor_stays_on_its_device(blobs, monkeypatch):
    # CPU tensors with backend="auto" stay on faiss; an explicit torch backend uses torch.
    x, y = blobs(400, 12, seed=6)
    calls = []
    real = torch_backend.search_chunks
    monkeypatch.setattr(torch_backend, "search_chunks", lambda *a, **kw: calls.append(kw["device"]) or real(*a, **kw))
    a = retrieval_metrics(x, y, backend="auto", device="cpu")
    assert calls == []
    b = retrieval_metrics(x, y, backend="torch", device="cpu")
    assert calls == [CPU]
    assert_same(a, b)


def test_torch_kmeans_replays_faiss_kmeans(blobs):
    # Same subsample, initial centroids and empty-cluster splits: identical partitions, including
    # many clusters with few points (empty clusters get split) and n > 256 k (faiss subsamples).
    for n, k, spread, seed in [(1500, 40, 0.3, 0), (2400, 500, 0.5, 1), (12000, 30, 1.0, 2)]:
        x, y = blobs(n, k, d=16, spread=spread, seed=seed)
        ref = kmeans_assign(x, k, niter=20, seed=seed)
        got = kmeans_assign(x, k, niter=20, seed=seed, backend="torch", device=CPU)
        # Same partition up to relabelling: the cluster ids coincide since centroids do.
        assert (ref == got).mean() > 0.99, (n, k)


def test_torch_clustering_metrics_match_faiss(blobs):
    x, y = blobs(2000, 50, d=32, spread=0.4, seed=7)
    f = clustering_metrics(x, y, niter=20, seed=3)
    t = clustering_metrics(x, y, niter=20, seed=3, backend="torch", device=CPU)
    assert f["nmi"] > 0.8
    assert abs(f["nmi"] - t["nmi"]) < 1e-3 and abs(f["f1"] - t["f1"]) < 1e-3


def test_faiss_rand_perm_is_a_permutation():
    perm = torch_backend.faiss_rand_perm(1000, 42)
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, np.arange(1000))
    assert np.array_equal(perm, torch_backend.faiss_rand_perm(1000, 42))


def test_evaluate_picks_the_device_of_a_tensor(blobs, monkeypatch):
    x, y = blobs(300, 10, seed=8)
    seen = []
    real = torch_backend.resolve_device
    monkeypatch.setattr(torch_backend, "resolve_device", lambda d: seen.append(d) or real(d))
    evaluate(torch.from_numpy(x), torch.from_numpy(y), backend="torch", clustering=True)
    assert seen and all(str(d) == "cpu" for d in seen)

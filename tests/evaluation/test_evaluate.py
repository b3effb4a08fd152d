"""`evaluate`: keys, input types, modes and one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dml_core.evaluation import EvaluationError, evaluate
from dml_core.evaluation.retrieval import retrieval_metrics


def test_keys_are_flat_and_mlflow_safe(blobs):
    x, y = blobs(200, 20)
    out = evaluate(x, y, k=(1, 10, 2))
    assert list(out) == ["recall_at_1", "recall_at_2", "recall_at_10", "map_at_r", "r_precision", "nmi", "f1"]
    assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in out.values())
    retrieval_only = {"recall_at_1", "recall_at_2", "recall_at_4", "recall_at_8", "map_at_r", "r_precision"}
    assert set(evaluate(x, y, clustering=False)) == retrieval_only


def test_torch_and_numpy_inputs_agree(blobs):
    x, y = blobs(150, 15)
    from_numpy = evaluate(x, y, kmeans_iters=5)
    t = torch.from_numpy(x).requires_grad_()
    assert evaluate(t, torch.from_numpy(y), kmeans_iters=5) == from_numpy
    assert evaluate(t.double(), y.astype(np.int32), kmeans_iters=5) == pytest.approx(from_numpy)


def test_recall_by_hand_with_cosine():
    # Unit directions at angles 0, 10, 100, 110 degrees; classes A A B B: each point's nearest
    # neighbour (10 degrees away) shares its class -> Recall@1 = 1, and R = 1 for all, so
    # MAP@R = R-precision = 1 too. Scaling the rows must not change anything under "cosine".
    angles = np.radians([0, 10, 100, 110])
    x = np.stack([np.cos(angles), np.sin(angles)], axis=1) * np.array([[1], [5], [0.2], [3]])
    out = evaluate(x, np.array([0, 0, 1, 1]), k=(1,), clustering=False)
    assert out == {"recall_at_1": 1.0, "map_at_r": 1.0, "r_precision": 1.0}


def test_query_gallery_mode_and_repeated_arrays(blobs):
    q, qy = blobs(120, 12, seed=1)
    g, gy = blobs(90, 12, seed=1)  # same class centres (same seed), different points
    out = evaluate(q, qy, g, gy, clustering=False)
    assert out == retrieval_metrics(q, qy, g, gy)
    # Passing the queries again as the gallery means leave-one-out, not "everyone finds itself".
    assert evaluate(q, qy, q.copy(), qy.copy(), clustering=False) == evaluate(q, qy, clustering=False)
    assert evaluate(q, qy, clustering=False)["recall_at_1"] < 1.0


def test_chunk_size_does_not_change_results(blobs):
    x, y = blobs(250, 40, spread=1.2)
    assert evaluate(x, y, chunk_size=7, kmeans_iters=3) == pytest.approx(evaluate(x, y, kmeans_iters=3), rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embeddings": np.zeros(5)}, r"^embeddings: expected a non-empty \(n, d\) array"),
        ({"embeddings": np.full((4, 2), np.nan)}, r"^embeddings: row 0 holds NaN"),
        ({"labels": np.zeros(3, int)}, r"^labels: expected shape \(4,\)"),
        ({"labels": np.zeros(4)}, r"^labels: expected integer class ids"),
        ({"gallery": np.zeros((2, 2))}, r"^gallery_labels: gallery and gallery_labels must be given together"),
        ({"gallery": np.ones((2, 3)), "gallery_labels": np.zeros(2, int)}, r"^gallery: dimension 3"),
        ({"k": [0, 1]}, r"^k: expected"),
        ({"kmeans_iters": 0}, r"^kmeans_iters: must be a positive integer"),
        ({"metric": "dot"}, r"^metric: unknown"),
    ],
)
def test_bad_input_is_a_one_line_value_error(kwargs, message):
    args = {"embeddings": np.eye(4, 2), "labels": np.array([0, 0, 1, 1])} | kwargs
    with pytest.raises(EvaluationError, match=message) as info:
        evaluate(**args)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


@pytest.mark.parametrize("ks, clustering", [((1, 2, 4, 8), True), ((1, 10), False)])
def test_evaluate_returns_exactly_the_declared_metric_names(ks, clustering):
    from dml_core.evaluation import metric_names

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8)).astype(np.float32), np.repeat(np.arange(10), 4)
    assert tuple(evaluate(x, y, k=ks, clustering=clustering, kmeans_iters=2)) == metric_names(ks, clustering)


def test_retrieval_only_evaluation_loads_no_scikit_learn():
    # scikit-learn (with scipy) is what clustering needs: ~1 s and ~180 MiB on first import, which
    # an evaluation without clustering -- SOP-sized sweeps, bench_eval's "ours" -- must not pay.
    # A fresh interpreter: this test process has long imported it.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, numpy as np\n"
        "from dml_core.evaluation import evaluate\n"
        "x = np.random.default_rng(0).standard_normal((40, 8), dtype=np.float32)\n"
        "out = evaluate(x, np.arange(40) % 4, clustering=False)\n"
        "assert set(out) >= {'map_at_r', 'r_precision'}, out\n"
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"

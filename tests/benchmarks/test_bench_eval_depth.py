"""`bench_eval`'s bare arm searches with the k that `evaluate` asks faiss for: the same
max(max K, largest class - 1) + 1 for the query itself, so "ours / bare" compares equal work."""
from __future__ import annotations

import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_eval import make_data, search_depth  # noqa: E402

from dml_core.evaluation import evaluate  # noqa: E402


@pytest.mark.parametrize(("n", "ks", "class_ratio"), [(600, [1, 2, 4, 8], 5), (300, [1, 10, 100], 5),
                                                      (200, [1, 2], 40), (50, [1, 1000], 5)])
def test_bare_arm_searches_the_k_evaluate_searches(monkeypatch, n: int, ks: list[int], class_ratio: int) -> None:
    x, y = make_data(n, 16, class_ratio, 2.5, seed=1)
    asked: list[int] = []
    search = faiss.IndexFlatIP.search

    def spy(self, queries, k, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        asked.append(k)
        return search(self, queries, k, *args, **kwargs)

    monkeypatch.setattr(faiss.IndexFlatIP, "search", spy)
    evaluate(x, y, k=ks, clustering=False, use_gpu=False, backend="faiss")
    assert asked and set(asked) == {search_depth(y, ks) + 1}


def test_evaluate_searches_the_callers_array_itself(monkeypatch) -> None:
    # The bare arm hands faiss the loaded array; so must evaluate (unit float32 C-contiguous rows
    # are neither converted, nor normalised again, nor sliced into copies), or it pays a copy.
    x, y = make_data(400, 16, 5, 2.5, seed=2)
    searched: list[np.ndarray] = []
    search = faiss.IndexFlatIP.search

    def spy(self, queries, k, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        searched.append(queries)
        return search(self, queries, k, *args, **kwargs)

    monkeypatch.setattr(faiss.IndexFlatIP, "search", spy)
    evaluate(x, y, clustering=False, use_gpu=False, backend="faiss")
    assert len(searched) == 1 and np.shares_memory(searched[0], x) and searched[0].shape == x.shape


def test_evaluate_runs_faiss_with_the_bare_arms_threads() -> None:
    # torch (its own OpenMP runtime and set_num_threads) must not come in with numpy embeddings,
    # nor may anything change faiss's OpenMP thread count: the bare arm runs with faiss's default.
    import subprocess

    bare = "import faiss; print(faiss.omp_get_max_threads(), 'torch' in __import__('sys').modules)"
    ours = ("import sys, numpy as np, faiss\n"
            "from dml_core.evaluation import evaluate\n"
            "x = np.random.default_rng(0).standard_normal((60, 8), dtype=np.float32)\n"
            "evaluate(x, np.arange(60) % 6, clustering=False)\n"
            "print(faiss.omp_get_max_threads(), 'torch' in sys.modules)\n")
    repo = Path(__file__).resolve().parents[2]
    lines = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=repo,
                            check=True).stdout.split() for code in (bare, ours)]
    assert lines[0] == lines[1] and lines[1][1] == "False", lines

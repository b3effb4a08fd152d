"""Exact kNN: self-exclusion by index, query/gallery mode, chunking, metrics, errors."""
from __future__ import annotations

import numpy as np
import pytest

from dml_core.evaluation.inputs import EvaluationError
from dml_core.evaluation.knn import _drop_self, gpu_available, knn, prepare, resolve_use_gpu


def col(*values: float) -> np.ndarray:
    """1-D points as an (n, 1) float32 array: distances on a line are easy to work by hand."""
    return np.array(values, dtype=np.float32)[:, None]


def test_neighbours_on_a_line_exclude_self():
    # points 0, 1, 3, 7: row 1 (at 1) has 0 at distance 1, 3 at distance 2, 7 at distance 6.
    _, ids = knn(col(0, 1, 3, 7), None, 3, metric="l2")
    assert ids.tolist() == [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 0]]


def test_exact_duplicates_are_neighbours_but_self_is_not():
    # Rows 0 and 1 are the same point; each must find the other at distance 0 and never itself.
    x = col(5, 5, 0, 9)
    scores, ids = knn(x, None, 2, metric="l2")
    assert ids[0].tolist() == [1, 3] and ids[1].tolist() == [0, 3]
    assert scores[0, 0] == 0.0 and scores[1, 0] == 0.0


def test_more_duplicates_than_k_still_drop_exactly_self():
    # Five copies of one point, k = 2: faiss may rank other copies above the query itself,
    # so the query can be missing from its k + 1 results; every row must still hold k other rows.
    x = col(1, 1, 1, 1, 1, 4)
    for chunk_size in (1, 2, None):
        _, ids = knn(x, None, 2, metric="l2", chunk_size=chunk_size)
        assert ids.shape == (6, 2)
        for row in range(5):
            assert row not in ids[row] and set(ids[row]) <= {0, 1, 2, 3, 4}
        assert 5 not in ids[5]


def test_drop_self_falls_back_to_the_last_result():
    # Query rows 3 and 4 (start=3): row 3 found itself at rank 2, row 4 is absent from its results.
    ids = np.array([[0, 3, 1], [0, 1, 2]])
    scores = np.array([[0.0, 0.0, 0.5], [0.0, 0.0, 0.0]], dtype=np.float32)
    kept_scores, kept_ids = _drop_self(scores, ids, start=3)
    assert kept_ids.tolist() == [[0, 1], [0, 1]]
    assert kept_scores.tolist() == [[0.0, 0.5], [0.0, 0.0]]


def test_query_gallery_mode_excludes_nothing():
    # The query at 0 is identical to gallery row 0: in query/gallery mode that is a true match.
    _, ids = knn(col(0, 4.1), col(0, 2, 5), 2, metric="l2")
    assert ids.tolist() == [[0, 1], [2, 1]]


def test_tiny_chunks_give_identical_results(blobs):
    x, _ = blobs(300, 40, d=8, seed=1)
    gallery, _ = blobs(120, 40, d=8, seed=2)
    for g in (None, gallery):
        ref_scores, ref_ids = knn(x, g, 7)
        for chunk_size in (1, 7, 64):
            scores, ids = knn(x, g, 7, chunk_size=chunk_size)
            np.testing.assert_array_equal(ids, ref_ids)
            np.testing.assert_array_equal(scores, ref_scores)


def test_cosine_normalises_without_touching_the_input():
    # Raw L2 from row 0 = (1, 0): |(0.9, 0.3) - (1, 0)| = 0.32 < |(3, 0.5) - (1, 0)| = 2.06, so row 2.
    # Cosine: (3, 0.5) is 9.5 degrees from (1, 0), (0.9, 0.3) is 18.4 degrees, so row 1.
    x = np.array([[1, 0], [3, 0.5], [0.9, 0.3]], dtype=np.float32)
    before = x.copy()
    assert knn(x, None, 1, metric="l2")[1][0, 0] == 2
    assert knn(x, None, 1, metric="cosine")[1][0, 0] == 1
    np.testing.assert_array_equal(x, before)


def test_unit_rows_are_used_as_they_are(blobs):
    x, _ = blobs(50, 5)
    assert prepare(x, "cosine") is x  # no copy, no re-rounding of already unit vectors
    scaled = 2 * x
    np.testing.assert_allclose(np.linalg.norm(prepare(scaled, "cosine"), axis=1), 1, atol=1e-6)


def test_bad_arguments_raise_one_line_errors():
    x = col(0, 1, 2)
    with pytest.raises(EvaluationError, match=r"^k: must be in \[1, 2\]"):
        knn(x, None, 3)
    with pytest.raises(EvaluationError, match="^metric: unknown 'dot'"):
        knn(x, None, 1, metric="dot")
    with pytest.raises(EvaluationError, match="^gallery: dimension 2"):
        knn(x, np.zeros((4, 2), np.float32), 1)
    with pytest.raises(EvaluationError, match="^chunk_size"):
        knn(x, None, 1, chunk_size=0)


@pytest.mark.skipif(gpu_available(), reason="checks the CPU-only guard")
def test_gpu_request_without_gpu_is_a_clear_error():
    assert resolve_use_gpu(None) is False
    with pytest.raises(EvaluationError, match="^use_gpu: True but faiss sees no GPU"):
        resolve_use_gpu(True)

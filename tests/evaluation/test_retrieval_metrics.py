"""Recall@K, MAP@R and R-precision on hand-worked examples."""
from __future__ import annotations

import numpy as np
import pytest

from dml_core.evaluation.inputs import EvaluationError
from dml_core.evaluation.retrieval import check_ks, retrieval_metrics, same_class_counts, score_neighbours


def col(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)[:, None]


def test_score_neighbours_by_hand():
    hits = np.array(
        [
            [1, 0, 1, 1, 0],  # R=3: rel 1,0,1 -> AP = (1/1 + 2/3) / 3 = 5/9; R-prec 2/3
            [0, 1, 1, 0, 0],  # R=2: rel 0,1   -> AP = (1/2) / 2 = 1/4;      R-prec 1/2
            [0, 0, 0, 0, 1],  # R=1: rel 0     -> AP = 0, R-prec 0; first hit at rank 5
        ],
        dtype=bool,
    )
    out = score_neighbours(hits, np.array([3, 2, 1]), ks=(1, 2, 4, 5))
    np.testing.assert_allclose(out["map_at_r"], [5 / 9, 1 / 4, 0])
    np.testing.assert_allclose(out["r_precision"], [2 / 3, 1 / 2, 0])
    assert out["recall_at_1"].tolist() == [1, 0, 0]
    assert out["recall_at_2"].tolist() == [1, 1, 0]
    assert out["recall_at_4"].tolist() == [1, 1, 0]
    assert out["recall_at_5"].tolist() == [1, 1, 1]


def test_hits_beyond_r_do_not_count_for_map_at_r():
    # R=1 and the only hit is at rank 2: Recall@2 counts it, MAP@R and R-precision do not.
    out = score_neighbours(np.array([[0, 1]], dtype=bool), np.array([1]), ks=(2,))
    assert (out["recall_at_2"][0], out["map_at_r"][0], out["r_precision"][0]) == (1, 0, 0)


def test_same_class_counts():
    y = np.array([7, 7, 7, 3, 3, 9])
    assert same_class_counts(y, y, exclude_self=True).tolist() == [2, 2, 2, 1, 1, 0]
    # query/gallery: count gallery items only; a class absent from the gallery gives R = 0
    assert same_class_counts(np.array([3, 7, 5]), y, exclude_self=False).tolist() == [2, 3, 0]


def test_leave_one_out_by_hand():
    # Points on a line (metric l2), classes A = {0, 1, 3}, B = {2, 4}, C = {5}:
    #   p0=0 A, p1=1 A, p2=1.4 B, p3=3 A, p4=3.2 B, p5=10 C
    # Neighbour classes in order (self excluded), R, first-R relevance, AP@R, R-prec, first hit:
    #   p0: A B A B C   R=2  1,0  (1/1)/2 = 0.5      1/2   rank 1
    #   p1: B A A B C   R=2  0,1  (1/2)/2 = 0.25     1/2   rank 2
    #   p2: A A A B C   R=1  0    0                  0     rank 4
    #   p3: B B A A C   R=2  0,0  0                  0     rank 3
    #   p4: A B A A C   R=1  0    0                  0     rank 2
    #   p5: R=0 (lone class C): excluded from every mean, so 5 queries count.
    # Recall@1 = 1/5, @2 = 3/5, @4 = 5/5; MAP@R = 0.75/5 = 0.15; R-precision = 1/5 = 0.2.
    x = col(0, 1, 1.4, 3, 3.2, 10)
    y = np.array([0, 0, 1, 0, 1, 2])
    out = retrieval_metrics(x, y, ks=(1, 2, 4), metric="l2")
    assert out == pytest.approx(
        {"recall_at_1": 0.2, "recall_at_2": 0.6, "recall_at_4": 1.0, "map_at_r": 0.15, "r_precision": 0.2}
    )


def test_query_gallery_by_hand():
    # Gallery: 0 A, 2 B, 5 A, 6 B (so R = 2 for both classes). Queries:
    #   q0=1.9 A: B A A B   rel 0,1  AP (1/2)/2 = 0.25  R-prec 1/2  first hit rank 2
    #   q1=5.6 B: B A B A   rel 1,0  AP 1/2             R-prec 1/2  rank 1
    #   q2=0   A: A B A B   rel 1,0  AP 1/2             R-prec 1/2  rank 1  (identical gallery
    #             item at distance 0 is a true match here: nothing is excluded in this mode)
    # Recall@1 = 2/3, Recall@2 = 1, MAP@R = 1.25/3, R-precision = 1/2.
    out = retrieval_metrics(
        col(1.9, 5.6, 0), np.array([0, 1, 0]), col(0, 2, 5, 6), np.array([0, 1, 0, 1]), ks=(1, 2), metric="l2"
    )
    assert out == pytest.approx({"recall_at_1": 2 / 3, "recall_at_2": 1.0, "map_at_r": 1.25 / 3, "r_precision": 0.5})


def test_search_depth_covers_the_largest_class():
    # One class of 6 far from two pairs: R = 5 > max K = 1, so k must grow to 5 for MAP@R to be
    # exact. All same-class items come first, so MAP@R = R-precision = 1 for every query.
    x = col(0, 0.1, 0.2, 0.3, 0.4, 0.5, 50, 50.1, 90, 90.1)
    y = np.array([0] * 6 + [1, 1, 2, 2])
    out = retrieval_metrics(x, y, ks=(1,), metric="l2")
    assert out == {"recall_at_1": 1.0, "map_at_r": 1.0, "r_precision": 1.0}


def test_chunked_equals_unchunked(blobs):
    x, y = blobs(400, 60, spread=1.2, seed=3)
    whole = retrieval_metrics(x, y, ks=(1, 2, 4, 8))
    for chunk_size in (1, 13):
        assert retrieval_metrics(x, y, ks=(1, 2, 4, 8), chunk_size=chunk_size) == pytest.approx(whole, rel=1e-12)
    assert 0.05 < whole["map_at_r"] < 0.95  # a non-degenerate case


def test_all_lone_queries_is_an_error():
    with pytest.raises(EvaluationError, match="^labels: no query has a same-class item"):
        retrieval_metrics(col(0, 1, 2), np.array([0, 1, 2]), ks=(1,))


def test_check_ks():
    assert check_ks([8, 1, 4, 1]) == (1, 4, 8)
    assert check_ks(10) == (10,)
    for bad in ([], [0], [1.5], ["1"], [True]):
        with pytest.raises(EvaluationError, match="^k: expected"):
            check_ks(bad)

"""Embedding Expansion: generation and hard negative pair mining (docs/algorithms.md section 1)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dml_core.expansion import BatchLayoutError, generate_synthetic, hard_negative_pair_mining
from dml_core.losses import build_loss
from dml_core.losses.pairs import hardest_positive_negative, label_masks, pairwise_distance, pairwise_matrix

# Worked example: class 0 = (1,0), (0,1); class 1 = (.7071,.7071), (-1,0); margin 0.2.
WORKED = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2**-0.5, 2**-0.5], [-1.0, 0.0]], dtype=torch.float64)
WORKED_LABELS = torch.tensor([0, 0, 1, 1])


def pk_batch(p: int, k: int, d: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(p * k, d, generator=g, dtype=dtype), dim=1)
    return emb, torch.randperm(3 * p, generator=g)[:p].repeat_interleave(k)


def brute_force_mining(emb, labels, n, l2_norm, metric):
    """The definition, spelled out: materialise [E; S^1..S^n], min/max over A_i x A_j."""
    rows, _ = generate_synthetic(emb, labels, n, l2_norm)
    full = pairwise_matrix(rows, metric)
    b = emb.shape[0]
    own = torch.arange(b)[:, None] + b * torch.arange(n + 1)[None, :]  # rows of A_i: e_i, s_i^1..n
    sub = full[own[:, None, :, None], own[None, :, None, :]].flatten(2)  # (B, B, (n+1)^2)
    best = sub.amin(-1) if metric == "distance" else sub.amax(-1)
    plain = pairwise_matrix(emb, metric)
    return torch.where(labels[:, None] != labels[None, :], best, plain)


def test_generate_synthetic_worked_example():
    rows, labels = generate_synthetic(WORKED[:2], WORKED_LABELS[:2], 2, l2_norm=True)
    expected = torch.tensor([[1, 0], [0, 1], [0.8944, 0.4472], [0.4472, 0.8944], [0.4472, 0.8944], [0.8944, 0.4472]])
    torch.testing.assert_close(rows, expected.double(), atol=1e-4, rtol=0)
    assert labels.tolist() == [0, 0, 0, 0, 0, 0]
    rows, _ = generate_synthetic(WORKED[:2], WORKED_LABELS[:2], 2, l2_norm=False)
    torch.testing.assert_close(rows[2:4], torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]], dtype=torch.float64))


def test_generate_synthetic_layout_and_symmetry():
    emb, labels = pk_batch(3, 4, 5, seed=0)
    n = 3
    rows, tiled = generate_synthetic(emb, labels, n, l2_norm=True)
    b = emb.shape[0]
    assert rows.shape == ((n + 1) * b, 5) and torch.equal(tiled, labels.repeat(n + 1))
    assert torch.equal(rows[:b], emb)
    s = rows[b:].view(n, b, 5)
    partner = torch.arange(b) ^ 1
    for k in range(1, n + 1):  # s_i^k == s_partner^(n+1-k): each interior point appears twice
        torch.testing.assert_close(s[k - 1], s[n - k][partner])
    torch.testing.assert_close(s.norm(dim=-1), torch.ones(n, b, dtype=torch.float64))


@pytest.mark.parametrize("labels", [[0, 0, 0, 1, 1, 1], [0, 0, 1, 2, 2, 1], [0, 0, 1]])
def test_odd_k_is_rejected_with_the_config_field(labels):
    labels = torch.tensor(labels)
    emb = F.normalize(torch.randn(len(labels), 4), dim=1)
    for call in (
        lambda: generate_synthetic(emb, labels, 2),
        lambda: hard_negative_pair_mining(emb, labels, pairwise_distance(emb), n_inner_pts=2),
        lambda: build_loss("triplet", expansion={"name": "ee"})(emb, labels),
    ):
        with pytest.raises(BatchLayoutError, match=r"K must be even \(data\.batch\.samples_per_class\)"):
            call()


@pytest.mark.parametrize(
    "n, d_an, per_anchor",
    [
        (0, [0.7654, 0.7654, 0.7654, 1.4142], [0.8488, 0.8488, 1.2824, 0.6335]),
        (2, [0.1785] * 4, [1.4357, 1.4357, 1.8693, 1.8693]),
    ],
)
def test_hphn_worked_example(n, d_an, per_anchor):
    eff = hard_negative_pair_mining(WORKED, WORKED_LABELS, pairwise_distance(WORKED), n_inner_pts=n)
    d_ap, got_an, valid = hardest_positive_negative(eff, *label_masks(WORKED_LABELS))
    assert valid.all()
    torch.testing.assert_close(d_ap, torch.tensor([1.4142, 1.4142, 1.8478, 1.8478], dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(got_an, torch.tensor(d_an, dtype=torch.float64), atol=1e-4, rtol=0)
    loss = build_loss("hphn_triplet", margin=0.2, expansion={"name": "ee", "n_inner_pts": n})
    torch.testing.assert_close(
        loss.per_anchor(eff, *label_masks(WORKED_LABELS)), torch.tensor(per_anchor, dtype=torch.float64), atol=1e-4, rtol=0
    )
    torch.testing.assert_close(loss(WORKED, WORKED_LABELS), torch.tensor(per_anchor, dtype=torch.float64).mean(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("metric", ["distance", "similarity"])
@pytest.mark.parametrize("l2_norm", [True, False])
@pytest.mark.parametrize("n, k, seed", [(1, 2, 0), (2, 2, 1), (3, 4, 2), (6, 2, 3), (5, 6, 4)])
def test_mining_equals_the_explicit_definition(metric, l2_norm, n, k, seed):
    emb, labels = pk_batch(12 // k + 2, k, 6, seed)
    if not l2_norm:  # un-normalised embeddings make distance and similarity rankings differ
        emb = emb * torch.linspace(0.5, 2.0, emb.shape[0], dtype=emb.dtype)[:, None]
    plain = pairwise_matrix(emb, metric)
    got = hard_negative_pair_mining(emb, labels, plain, n_inner_pts=n, l2_norm=l2_norm, metric=metric)
    expected = brute_force_mining(emb, labels, n, l2_norm, metric)
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)
    pos, neg = label_masks(labels)
    assert torch.equal(got[~neg], plain[~neg])  # positives and diagonal untouched, bit for bit
    harder = got[neg] <= plain[neg] if metric == "distance" else got[neg] >= plain[neg]
    assert harder.all()
    assert (got[neg] != plain[neg]).any()  # synthetic points did win somewhere


@pytest.mark.parametrize("metric", ["distance", "similarity"])
def test_mining_gradient_equals_the_explicit_definition(metric):
    emb, labels = pk_batch(5, 2, 6, seed=7)
    weights = torch.rand(10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = []
    for fn in (
        lambda e: hard_negative_pair_mining(e, labels, pairwise_matrix(e, metric), n_inner_pts=3, metric=metric),
        lambda e: brute_force_mining(e, labels, 3, True, metric),
    ):
        e = emb.clone().requires_grad_()
        (fn(e) * weights).sum().backward()
        grads.append(e.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-9, rtol=1e-7)


def test_n_zero_returns_the_matrix_unchanged():
    emb, labels = pk_batch(4, 2, 8, seed=3, dtype=torch.float32)
    matrix = pairwise_distance(emb)
    assert hard_negative_pair_mining(emb, labels, matrix, n_inner_pts=0) is matrix

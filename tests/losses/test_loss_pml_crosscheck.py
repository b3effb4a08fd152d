"""Each loss against pytorch-metric-learning (PML) where the definitions agree.

Values and gradients are compared in float64. Where PML's loss differs from ours the test
says how, and asserts the difference is exactly that.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dml_core.losses import build_loss

pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
from pytorch_metric_learning import miners, reducers  # noqa: E402

from conftest import NUM_CLASSES, make_batch  # noqa: E402

# (our loss, our params, PML loss factory, PML miner factory or None)
PAIR_CASES = [
    ("contrastive", {"pos_margin": 0.1, "neg_margin": 0.9},
     lambda: pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=0.9), None),
    ("triplet", {"margin": 0.3, "mining": "batch_all"},
     lambda: pml_losses.TripletMarginLoss(margin=0.3), None),
    ("triplet", {"margin": 0.3, "mining": "batch_hard"},
     lambda: pml_losses.TripletMarginLoss(margin=0.3), miners.BatchHardMiner),
    ("triplet", {"margin": 0.3, "mining": "semi_hard"},
     lambda: pml_losses.TripletMarginLoss(margin=0.3),
     lambda: miners.TripletMarginMiner(margin=0.3, type_of_triplets="semihard")),
    # HPHN = batch-hard triplet averaged over all anchors (PML's default averages non-zero ones).
    ("hphn_triplet", {"margin": 0.2},
     lambda: pml_losses.TripletMarginLoss(margin=0.2, reducer=reducers.MeanReducer()), miners.BatchHardMiner),
    ("hphn_triplet", {"margin": 0.2, "soft_margin": True},
     lambda: pml_losses.TripletMarginLoss(margin=0.2, smooth_loss=True, reducer=reducers.MeanReducer()),
     miners.BatchHardMiner),
    ("lifted_structure", {"neg_margin": 1.0, "pos_margin": 0.1},
     lambda: pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.1), None),
    ("multi_similarity", {},
     lambda: pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5),
     lambda: miners.MultiSimilarityMiner(epsilon=0.1)),
]


def value_and_grad(fn, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and its gradient w.r.t. the pre-normalisation embeddings.

    PML normalises inside its distances; ours take the model's unit-norm output as is. The
    gradients agree once both go through the model's L2 normalisation, as in training.
    """
    e = emb.clone().requires_grad_()
    value = fn(F.normalize(e, dim=1))
    value.backward()
    return value.detach(), e.grad


def pml_call(loss, miner):
    def call(e, labels):
        return loss(e, labels, miner(e, labels)) if miner is not None else loss(e, labels)
    return call


@pytest.mark.parametrize("name, params, pml_loss, pml_miner", PAIR_CASES, ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("seed", [0, 1])
def test_pair_loss_matches_pml(name, params, pml_loss, pml_miner, seed):
    emb, labels = make_batch(p=5, k=4, d=8, seed=seed)
    ours = build_loss(name, **params)
    theirs = pml_call(pml_loss(), pml_miner() if pml_miner else None)
    v_ours, g_ours = value_and_grad(lambda e: ours(e, labels), emb)
    v_pml, g_pml = value_and_grad(lambda e: theirs(e, labels), emb)
    assert v_ours > 0  # a non-trivial batch: the comparison is not 0 == 0
    torch.testing.assert_close(v_ours, v_pml, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_ours, g_pml, rtol=1e-7, atol=1e-10)


def test_lifted_structure_is_songs_loss_not_the_generalised_one():
    # PML has two: LiftedStructureLoss is Song et al.'s (per positive pair, negatives of both
    # ends, squared hinge; matched above). GeneralizedLiftedStructureLoss is Hermans et al.'s
    # per-anchor logsumexp over positives and negatives -- a different function.
    emb, labels = make_batch(p=5, k=4, d=8, seed=3)
    ours = build_loss("lifted_structure", neg_margin=1.0, pos_margin=0.0)(emb, labels)
    song = pml_losses.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)(emb, labels)
    generalised = pml_losses.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0)(emb, labels)
    torch.testing.assert_close(ours, song)
    assert abs(float(ours - generalised)) > 1e-3


def test_npair_matches_pml_with_two_samples_per_class():
    emb, labels = make_batch(p=6, k=2, d=8, seed=0)
    v_ours, g_ours = value_and_grad(lambda e: build_loss("npair")(e, labels), emb)
    v_pml, g_pml = value_and_grad(lambda e: pml_losses.NPairsLoss()(e, labels), emb)
    torch.testing.assert_close(v_ours, v_pml, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_ours, g_pml, rtol=1e-7, atol=1e-10)


def test_npair_with_k4_uses_every_pair_where_pml_keeps_one_per_class():
    # PML's NPairsLoss keeps the first positive pair of each class (rows 0 and 1 of a block).
    # Ours makes every (2m, 2m+1) an (anchor, positive) pair, so on a K = 4 batch PML equals
    # our loss on the sub-batch of each class's first two rows, and ours differs from it.
    emb, labels = make_batch(p=5, k=4, d=8, seed=1)
    first_pairs = torch.arange(emb.shape[0]).view(5, 4)[:, :2].flatten()
    pml = pml_losses.NPairsLoss()(emb, labels)
    torch.testing.assert_close(build_loss("npair")(emb[first_pairs], labels[first_pairs]), pml)
    assert abs(float(build_loss("npair")(emb, labels) - pml)) > 1e-4


@pytest.mark.parametrize(
    "name, params, pml_factory",
    [
        ("proxy_anchor", {"alpha": 32.0, "delta": 0.1},
         lambda d: pml_losses.ProxyAnchorLoss(NUM_CLASSES, d, margin=0.1, alpha=32)),
        ("proxy_nca", {"softmax_scale": 3.0},
         lambda d: pml_losses.ProxyNCALoss(NUM_CLASSES, d, softmax_scale=3.0)),
    ],
)
def test_proxy_loss_matches_pml(name, params, pml_factory):
    emb, labels = make_batch(p=5, k=4, d=8, seed=2)
    ours = build_loss(name, num_classes=NUM_CLASSES, embedding_dim=8, **params).double()
    theirs = pml_factory(8).double()
    with torch.no_grad():
        theirs.proxies.copy_(ours.proxies)
    v_ours, g_ours = value_and_grad(lambda e: ours(e, labels), emb)
    v_pml, g_pml = value_and_grad(lambda e: theirs(e, labels), emb)
    torch.testing.assert_close(v_ours, v_pml, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g_ours, g_pml, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ours.proxies.grad, theirs.proxies.grad, rtol=1e-7, atol=1e-10)

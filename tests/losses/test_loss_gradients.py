"""Every loss, with and without expansion, gives a finite value and finite gradients --
also on degenerate batches (identical embeddings, a single class)."""
from __future__ import annotations

import pytest
import torch

from dml_core.losses import build_loss

from conftest import NUM_CLASSES, PAIR_LOSSES, PROXY_LOSSES, make_batch

# SEE thresholds of type 0 at -1: every sample expands, so the synthetic term is exercised.
SEE_ALL = {"name": "see", "n_expan": 4, "threshold_type": 0, "threshold_max": -1.0, "threshold_min": -1.0}
EXPANSIONS = {
    "none": None,
    "ee": {"name": "ee", "n_inner_pts": 3},
    "see": SEE_ALL,
    "see-no-detach": {**SEE_ALL, "detach": False},
}


def batches() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    emb, labels = make_batch(p=4, k=4, d=16, seed=0, dtype=torch.float32)
    return {
        "random": (emb, labels),
        "identical": (emb[:1].expand_as(emb).clone(), labels),
        "one-class": (emb, torch.full_like(labels, 3)),
    }


CASES = [
    (loss, exp, batch)
    for loss in PAIR_LOSSES + PROXY_LOSSES
    for exp in EXPANSIONS
    for batch in ("random", "identical", "one-class")
    if not (exp == "ee" and loss in PROXY_LOSSES)
]


@pytest.mark.parametrize("name, expansion, batch", CASES)
def test_value_and_gradients_are_finite(name, expansion, batch):
    emb, labels = batches()[batch]
    loss = build_loss(name, num_classes=NUM_CLASSES, embedding_dim=16, expansion=EXPANSIONS[expansion])
    e = emb.clone().requires_grad_()
    value = loss(e, labels)
    value.backward()
    assert torch.isfinite(value)
    assert e.grad is not None and torch.isfinite(e.grad).all()
    for p in loss.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    if batch == "random":
        assert value > 0 and e.grad.abs().sum() > 0  # the random batch is not a trivial case

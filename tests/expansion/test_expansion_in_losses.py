"""How the losses consume EE and SEE: exactness at n = 0, the lambda-weighted SEE term,
detaching, the epoch schedule and SEE around batch centroids for pair losses."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dml_core.expansion.strategy as strategy
from dml_core.expansion import class_centroids, expand_around_centers, see_threshold
from dml_core.losses import build_loss
from dml_core.params.losses import LOSSES

# From the registry, so a new loss is tested with no edit here.
PAIR_LOSSES = [n for n in LOSSES.names() if LOSSES.get(n).family == "pair"]
PROXY_LOSSES = [n for n in LOSSES.names() if LOSSES.get(n).family == "proxy"]
C = 10


def batch(p=5, k=4, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(p * k, d, generator=g), dim=1)
    return emb, torch.randperm(C, generator=g)[:p].repeat_interleave(k)


def value_and_grad(loss, emb, labels, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    e = emb.clone().requires_grad_()
    value = loss(e, labels)
    value.backward()
    return value.detach(), e.grad


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_ee_with_zero_inner_points_is_exactly_the_plain_loss(name):
    emb, labels = batch()
    plain = value_and_grad(build_loss(name), emb, labels)
    ee = value_and_grad(build_loss(name, expansion={"name": "ee", "n_inner_pts": 0}), emb, labels)
    assert torch.equal(plain[0], ee[0]) and torch.equal(plain[1], ee[1])


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_ee_makes_negatives_harder(name):
    emb, labels = batch(seed=1)
    plain = build_loss(name)(emb, labels)
    expanded = build_loss(name, expansion={"name": "ee", "n_inner_pts": 4})(emb, labels)
    if name in ("contrastive", "triplet"):
        # Averages over the non-zero terms: harder negatives add terms, so no order is implied.
        assert expanded != plain
    else:
        # Monotone in every negative similarity / distance: harder negatives raise the loss.
        assert expanded > plain


def test_see_with_nothing_expanded_or_lam_zero_is_the_plain_loss():
    emb, labels = batch()
    plain = build_loss("proxy_anchor", num_classes=C, embedding_dim=16)
    state = plain.state_dict()
    expected = plain(emb, labels)
    for extra in ({"threshold_type": 0, "threshold_max": 2.0, "threshold_min": 2.0}, {"lam": 0.0}):
        see = build_loss("proxy_anchor", num_classes=C, embedding_dim=16, expansion={"name": "see", **extra})
        see.load_state_dict(state)
        assert torch.equal(see(emb, labels), expected)


@pytest.mark.parametrize("name", PROXY_LOSSES)
def test_see_adds_lam_times_the_loss_of_the_synthetic_points(name):
    emb, labels = batch()
    cfg = {"name": "see", "n_expan": 6, "lam": 0.3}
    loss = build_loss(name, num_classes=C, embedding_dim=16, expansion=cfg)
    loss.set_epoch(80, 100)
    torch.manual_seed(11)
    value = loss(emb, labels)
    # The same computation by hand, from the public expansion functions and the same RNG state.
    torch.manual_seed(11)
    centers = F.normalize(loss.proxies, dim=-1)[labels]
    points, point_labels = expand_around_centers(emb, centers, labels, 6, see_threshold(80, 100), 1)
    assert points.shape[0] == 6 * round(see_threshold(80, 100) * len(labels)) > 0
    torch.testing.assert_close(value, loss.proxy_loss(emb, labels) + 0.3 * loss.proxy_loss(points, point_labels))


@pytest.mark.parametrize("name", PROXY_LOSSES)
def test_see_detach_trains_only_the_proxies_with_the_synthetic_term(name):
    emb, labels = batch()
    all_expand = {"name": "see", "threshold_type": 0, "threshold_max": -1.0, "threshold_min": -1.0}
    plain = build_loss(name, num_classes=C, embedding_dim=16)
    grads = {}
    for key, exp in (("plain", None), ("detach", all_expand), ("attached", {**all_expand, "detach": False})):
        loss = build_loss(name, num_classes=C, embedding_dim=16, expansion=exp)
        loss.load_state_dict(plain.state_dict())
        _, g_emb = value_and_grad(loss, emb, labels, seed=0)
        grads[key] = (g_emb, loss.proxies.grad)
    torch.testing.assert_close(grads["detach"][0], grads["plain"][0])  # embeddings: plain gradient
    assert not torch.allclose(grads["detach"][1], grads["plain"][1])  # proxies: synthetic term too
    assert not torch.allclose(grads["attached"][0], grads["plain"][0])  # detach=False reaches z


def test_set_epoch_drives_the_number_of_expanded_samples(monkeypatch):
    emb, labels = batch(p=10, k=2)  # B = 20
    seen = []

    def spy(*args, **kwargs):
        points, point_labels = expand_around_centers(*args, **kwargs)
        seen.append(points.shape[0])
        return points, point_labels

    monkeypatch.setattr(strategy, "expand_around_centers", spy)
    loss = build_loss("proxy_anchor", num_classes=C, embedding_dim=16, expansion={"name": "see", "n_expan": 8})
    for epoch in (0, 50, 99):
        loss.set_epoch(epoch, 100)
        loss(emb, labels)
    # type 1: round(t * 20) samples x 8 points, t = .04, .22, .3999
    assert seen == [8 * 1, 8 * 4, 8 * 8]


@pytest.mark.parametrize("name", PAIR_LOSSES)
def test_see_for_pair_losses_runs_the_loss_on_the_enlarged_batch(name):
    emb, labels = batch()
    cfg = {"name": "see", "n_expan": 4, "threshold_type": 0, "threshold_max": 0.3, "threshold_min": 0.3}
    torch.manual_seed(5)
    value = build_loss(name, expansion=cfg)(emb, labels)
    torch.manual_seed(5)
    points, point_labels = expand_around_centers(emb, class_centroids(emb, labels), labels, 4, 0.3, 0)
    assert 0 < points.shape[0] < 4 * len(labels)  # some but not all samples expanded
    expected = build_loss(name)(torch.cat([emb, points]), torch.cat([labels, point_labels]))
    torch.testing.assert_close(value, expected)
    assert not torch.allclose(value, build_loss(name)(emb, labels))


def test_see_center_auto_means_proxy_for_proxy_losses_and_centroid_for_pair_losses():
    def center(loss):
        return loss.expansion.params.resolved_center(loss.family)

    assert center(build_loss("proxy_nca", num_classes=C, embedding_dim=16, expansion={"name": "see"})) == "proxy"
    assert center(build_loss("triplet", expansion={"name": "see"})) == "centroid"
    assert center(build_loss("proxy_nca", num_classes=C, embedding_dim=16,
                             expansion={"name": "see", "center": "centroid"})) == "centroid"

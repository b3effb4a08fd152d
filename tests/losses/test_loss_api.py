"""build_loss: the registry, the contract with the trainer, parameter and expansion errors."""
from __future__ import annotations

import pytest
import torch

from dml_core.params.expansions import ExpansionConfig
from dml_core.losses import LOSSES, BaseMetricLoss, build_loss, loss_params

from conftest import NUM_CLASSES, PAIR_LOSSES, PROXY_LOSSES


@pytest.mark.parametrize("name", LOSSES.names())
def test_each_loss_class_has_its_parameters_family_and_name(name):
    assert LOSSES.builder(name).family == LOSSES.get(name).family  # the registry checks it on import
    assert build_loss(name, num_classes=NUM_CLASSES, embedding_dim=16).name == name


def test_a_loss_class_of_the_other_family_is_refused():
    from dml_core.losses.base import PairBasedLoss
    from dml_core.params.losses import LossConfig, check_family
    from dml_core.registry import Kind

    kind = Kind("loss", section="loss", discriminator="name", check=check_family)

    class Wrong(PairBasedLoss):
        pass

    @kind.register("wrong", builder=Wrong)
    class WrongParams(LossConfig):
        family = "proxy"

    with pytest.raises(TypeError, match="Wrong is pair-based but WrongParams.family is 'proxy'"):
        kind.builder("wrong")


def test_build_loss_as_the_trainer_calls_it(pk_batch):
    emb, labels = pk_batch(dtype=torch.float32)
    for name in PAIR_LOSSES + PROXY_LOSSES:
        loss = build_loss(name, num_classes=NUM_CLASSES, embedding_dim=16, expansion=ExpansionConfig.of())
        assert isinstance(loss, BaseMetricLoss)
        loss.set_epoch(0, 10)
        value = loss(emb, labels)
        assert value.dim() == 0 and torch.isfinite(value)


def test_proxy_losses_own_their_proxies():
    loss = build_loss("proxy_anchor", num_classes=7, embedding_dim=12)
    params = dict(loss.named_parameters())
    assert list(params) == ["proxies"] and params["proxies"].shape == (7, 12)
    assert list(build_loss("triplet", num_classes=7, embedding_dim=12).parameters()) == []


def test_proxy_losses_need_sizes_and_valid_labels():
    with pytest.raises(ValueError, match="needs num_classes and embedding_dim"):
        build_loss("proxy_nca")
    loss = build_loss("proxy_nca", num_classes=3, embedding_dim=4)
    with pytest.raises(ValueError, match=r"labels must lie in 0\.\.2"):
        loss(torch.randn(2, 4), torch.tensor([0, 3]))


def test_expansion_none_or_name_none_is_the_plain_loss(pk_batch):
    emb, labels = pk_batch()
    values = [build_loss("multi_similarity", expansion=e)(emb, labels) for e in (None, {"name": "none"}, {})]
    assert values[0] == values[1] == values[2]


@pytest.mark.parametrize(
    "name, params, expansion, message",
    [
        ("tripplet", {}, None, r"^loss\.name: unknown loss 'tripplet' \(did you mean 'triplet'\?\)"),
        ("triplet", {"margni": 0.1}, None, r"^loss\.margni: not a parameter of loss triplet \(did you mean 'margin'\?\)$"),
        ("proxy_nca", {}, {"name": "ee"}, r"^expansion\.name: 'ee' needs a pair-based loss; proxy_nca is proxy-based$"),
        ("proxy_anchor", {}, {"name": "ee", "n_inner_pts": 4}, r"^expansion\.name: 'ee' needs a pair-based loss"),
        ("triplet", {}, {"name": "see", "center": "proxy"}, r"^expansion\.center: 'proxy' needs a proxy-based loss; triplet is pair-based"),
        ("npair", {}, {"name": "see", "n_expan": 3}, r"^expansion\.n_expan: npair with SEE needs an even"),
        ("triplet", {"mining": "hardest"}, None, r"^loss\.mining: Input should be 'batch_all', 'batch_hard' or 'semi_hard'"),
        ("triplet", {"margin": -0.1}, None, r"^loss\.margin: Input should be greater than or equal to 0"),
        ("multi_similarity", {"alpha": "two"}, None, r"^loss\.alpha: Input should be a valid number"),
        ("proxy_anchor", {"alpha": 0}, None, r"^loss\.alpha: Input should be greater than 0"),
        ("proxy_anchor", {"num_classes": 5}, None, r"^loss\.num_classes: not a loss parameter"),
        ("contrastive", {"expansion": {}}, None, r"^loss\.expansion: not a loss parameter; it comes from the expansion: block$"),
        ("triplet", {}, {"name": "eee"}, r"^expansion\.name: unknown expansion 'eee' \(did you mean 'ee'\?\); choose from \['ee', 'none', 'see'\]$"),
        ("triplet", {}, {"name": "ee", "n_inner": 2}, r"^expansion\.n_inner: not a parameter of expansion ee \(did you mean 'n_inner_pts'\?\)$"),
        ("proxy_anchor", {}, {"name": "see", "n_inner_pts": 8}, r"^expansion\.n_inner_pts: SEE's synthetic points per sample are expansion\.n_expan"),
    ],
)
def test_build_loss_errors_are_one_line_and_name_the_field(name, params, expansion, message):
    with pytest.raises(ValueError, match=message) as info:
        if {"num_classes", "expansion"} & set(params):  # the sizes and expansion are build_loss's own
            loss_params(name, **params)
        build_loss(name, num_classes=NUM_CLASSES, embedding_dim=64, expansion=expansion, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name, params, expansion",
    [
        ("triplet", {"margin": 0.1, "mining": "semi_hard"}, {"name": "ee", "n_inner_pts": 8}),
        ("proxy_anchor", {"alpha": 16}, {"name": "see", "n_expan": 16}),
        ("multi_similarity", {}, {"name": "see", "center": "auto"}),
        ("proxy_nca", {}, {"name": "see", "center": "centroid"}),
        ("npair", {}, {"name": "see", "n_expan": 4}),
        ("hphn_triplet", {"soft_margin": True}, None),
        ("hphn_triplet", {"margin": "1e-5"}, None),  # YAML reads 1e-5 as a string
    ],
)
def test_build_loss_accepts_valid_blocks(name, params, expansion):
    assert isinstance(build_loss(name, num_classes=NUM_CLASSES, embedding_dim=64, expansion=expansion, **params), BaseMetricLoss)


def test_see_needs_embedding_dim_of_n_plus_two():
    with pytest.raises(ValueError, match=r"^model\.embedding_dim: SEE with n_expan=16 needs embedding_dim >= 18 \(got 8\)$"):
        build_loss("proxy_anchor", num_classes=3, embedding_dim=8, expansion={"name": "see", "n_expan": 16})


def test_bad_input_shapes_are_reported(pk_batch):
    emb, labels = pk_batch()
    with pytest.raises(ValueError, match=r"triplet: expected embeddings \(B, D\) and labels \(B,\)"):
        build_loss("triplet")(emb, labels[:-1])


def test_npair_needs_row_pairs(pk_batch):
    emb, labels = pk_batch(p=3, k=3)
    with pytest.raises(ValueError, match=r"npair pairs rows \(2m, 2m\+1\) of one class, so K must be even"):
        build_loss("npair")(emb, labels)


def test_low_precision_embeddings_are_computed_in_float32(pk_batch):
    emb, labels = pk_batch(dtype=torch.float32)
    loss = build_loss("proxy_anchor", num_classes=NUM_CLASSES, embedding_dim=16)
    value = loss(emb.bfloat16(), labels)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, loss(emb.bfloat16().float(), labels))


@pytest.mark.parametrize("mining", ["batch_all", "semi_hard"])
def test_triplet_cube_blocks_do_not_change_the_value(pk_batch, monkeypatch, mining):
    import dml_core.losses.triplet as triplet

    emb, labels = pk_batch(p=6, k=4, d=8)
    whole = build_loss("triplet", mining=mining)(emb, labels)
    monkeypatch.setattr(triplet, "_CUBE_BUDGET", 24 * 24 * 5)  # blocks of 5 anchors
    torch.testing.assert_close(build_loss("triplet", mining=mining)(emb, labels), whole)
    assert whole > 0

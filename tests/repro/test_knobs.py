"""The recipe knobs one by one (docs/algorithms.md section 4): each does what its name says."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

from dml_core.config import ConfigError, SchedulerConfig, config_from_dict
from dml_core.data.transforms import RandomTranslation, build_transforms
from dml_core.expansion.ee import generate_synthetic, hard_negative_pair_mining
from dml_core.losses import build_loss
from dml_core.models.head import EmbeddingHead
from dml_core.params.datasets import CUB200Data
from dml_core.training.optim import LRSchedule, lr_factor


def test_random_translation_is_a_square_resize_or_a_crop_of_the_1125_resize():
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    small = v2.functional.resize(img, [16, 16], antialias=True)
    big = v2.functional.resize(img, [18, 18], antialias=True)  # round(16 * 1.125)
    crops = {(t, l): big[:, t:t + 16, l:l + 16] for t in range(3) for l in range(3)}
    seen = set()
    for _ in range(60):
        out = RandomTranslation(16)(img)
        if torch.equal(out, small):
            seen.add("resize")
        else:
            hits = [k for k, c in crops.items() if torch.equal(out, c)]
            assert hits, "neither the square resize nor a crop of the 1.125 resize"
            seen.add(hits[0])
    assert "resize" in seen and len(seen) > 3  # both branches, several offsets


def test_resize_square_keeps_no_aspect_and_crops_nothing():
    cfg = CUB200Data(image_size=12, test_transform="resize_square", interpolation="bicubic")
    img = torch.randint(0, 256, (3, 20, 40), dtype=torch.uint8)
    out = build_transforms(cfg, train=False, num_channels=3, pretrained=False, out_channels=3)(img)
    expected = v2.functional.resize(img, [12, 12], InterpolationMode.BICUBIC, antialias=True).float() / 255
    assert torch.allclose(out, (expected - 0.5) / 0.5, atol=1e-6)


def test_layernorm_linear_head_and_its_inits():
    torch.manual_seed(0)
    head = EmbeddingHead(24, 8, norm=True, init="orthogonal")
    assert isinstance(head.norm, torch.nn.LayerNorm) and not list(head.norm.parameters())
    w = head.linear.weight
    assert torch.allclose(w @ w.T, torch.eye(8), atol=1e-5)
    x = torch.randn(5, 24) * 7 + 3
    assert torch.allclose(head(x), F.normalize(F.layer_norm(x, (24,)) @ w.T, dim=1), atol=1e-6)
    xavier = EmbeddingHead(300, 200, init="xavier_uniform").linear.weight.detach()
    bound = math.sqrt(2 * 2 / (300 + 200))  # MXNet Xavier(magnitude=2, uniform, avg)
    assert float(xavier.abs().max()) <= bound and float(xavier.abs().max()) > 0.95 * bound


def test_freeze_patch_embed_freezes_only_the_patch_embedding():
    pytest.importorskip("timm")
    from dml_core.config import ModelConfig  # noqa: F401  (registers timm)
    from dml_core.models import build_model
    from dml_core.params.timm import TimmModel

    cfg = TimmModel(backbone="timm/deit_tiny_patch16_224", pretrained=False, freeze_patch_embed=True)
    model = build_model(cfg, 3).backbone.model
    assert not any(p.requires_grad for p in model.patch_embed.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("patch_embed"))


@pytest.mark.parametrize("metric", ["distance", "similarity"])
@pytest.mark.parametrize("scope", ["anchor", "pair"])
def test_ee_mining_scope_against_brute_force(metric, scope):
    torch.manual_seed(1)
    b, d, n = 8, 5, 3
    e, y = F.normalize(torch.randn(b, d), dim=1), torch.arange(b) // 4
    m = torch.cdist(e, e) if metric == "distance" else e @ e.T
    out = hard_negative_pair_mining(e, y, m, n_inner_pts=n, metric=metric, scope=scope)
    pts = generate_synthetic(e, y, n)[0].view(n + 1, b, d)
    ref = m.clone()
    for i in range(b):
        for j in range(b):
            if y[i] != y[j]:
                a_i = [pts[k, i] for k in range(n + 1)] + ([e[i ^ 1]] if scope == "pair" else [])
                a_j = [pts[k, j] for k in range(n + 1)] + ([e[j ^ 1]] if scope == "pair" else [])
                a_i, a_j = torch.stack(a_i), torch.stack(a_j)
                ref[i, j] = torch.cdist(a_i, a_j).min() if metric == "distance" else (a_i @ a_j.T).max()
    assert torch.allclose(out, ref, atol=1e-5)
    if scope == "pair":  # the partner matters: the two scopes differ on this batch
        other = hard_negative_pair_mining(e, y, m, n_inner_pts=n, metric=metric, scope="anchor")
        assert not torch.allclose(out, other)


def test_reduction_sum_is_the_sum_over_anchors_and_only_where_there_are_anchors():
    torch.manual_seed(2)
    e, y = F.normalize(torch.randn(8, 6), dim=1), torch.arange(8) // 2
    for name in ("hphn_triplet", "multi_similarity", "npair"):
        mean, total = build_loss(name)(e, y), build_loss(name, reduction="sum")(e, y)
        assert torch.allclose(total, 4 * mean if name == "npair" else 8 * mean), name
    with pytest.raises(ValueError, match="reduction"):
        build_loss("proxy_anchor", reduction="sum", num_classes=4, embedding_dim=6)


def test_schedules():
    const = SchedulerConfig(name="none")
    assert const.name == "constant" and lr_factor(const, 50, 100) == 1.0
    ms = SchedulerConfig(name="multistep", milestones=[2, 4], gamma=0.5, milestone_delay_iters=1)
    assert [lr_factor(ms, e, 10, i) for e, i in [(1, 9), (2, 0), (2, 1), (4, 0), (4, 1)]] == [1, 1, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError):
        SchedulerConfig(name="multistep", milestones=[4, 2])


def test_backbone_frozen_epochs_and_mxnet_eps_per_step():
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam([{"name": "backbone", "params": [net.weight], "lr": 0.1},
                            {"name": "head", "params": [net.bias], "lr": 0.2}], eps=1e-8)
    sched = LRSchedule(SchedulerConfig(backbone_frozen_epochs=1), opt, total_epochs=3, iterations_per_epoch=4,
                       mxnet_eps=1e-8)
    assert sched.lrs(3) == [0.0, 0.2] and sched.lrs(4) == [0.1, 0.2]
    sched.apply(0)
    assert opt.param_groups[0]["eps"] == pytest.approx(1e-8 / math.sqrt(1 - 0.999))


def test_knob_values_are_checked_at_load():
    with pytest.raises(ConfigError, match="optimizer.eps_mode"):
        config_from_dict({"optimizer": {"eps_mode": "keras"}})
    with pytest.raises(ConfigError, match="train.grad_clamp"):
        config_from_dict({"train": {"grad_clamp": -1}})


def test_the_feature_cache_key_sees_the_test_geometry_and_resampling():
    from dml_core.training.features import cache_key

    base = {"data": {"name": "digits"}, "model": {"freeze_backbone": True}}
    keys = {cache_key(config_from_dict({**base, "data": {"name": "digits", **extra}}))
            for extra in ({}, {"test_transform": "resize_square"}, {"interpolation": "bicubic"})}
    assert len(keys) == 3


def test_eval_from_epoch_skips_the_warm_up_evaluations():
    from dml_core.training import fit

    cfg = config_from_dict({
        "data": {"name": "digits", "image_size": 8, "num_workers": 0, "batch": {"classes_per_batch": 3, "samples_per_class": 2}},
        "model": {"conv_blocks": 1, "conv_width": 8, "embedding_dim": 8},
        "train": {"epochs": 4, "iterations_per_epoch": 1, "num_threads": 1, "eval_from_epoch": 3, "checkpoint": False},
        "eval": {"clustering": False},
    })
    assert [h["epoch"] for h in fit(cfg).history] == [3, 4]

"""SEE + Proxy-Anchor on CUB, DeiT-S (experiments/repro_see_pa_cub200_deit.yaml) and ResNet-50
(repro_see_pa_cub200.yaml: the reference trainer's ResNet-50 branch), each against the
reference's training step (`torch_see`, two DDP ranks emulated): same stand-in backbone, init,
proxies and batches; 4 epochs of 2 iterations -- epoch 0 with the backbone's lr at 0 (the
warm-up), the SEE threshold schedule of a 4-epoch run (points from epoch 2 on), the elementwise
clamp clamping.

Each knob the recipe needs is then switched back, one at a time, and the comparison must fail."""
from __future__ import annotations

import pytest

from stepcheck import assert_equivalent, compare, initial_params, make_batches, recipe_config, run_project
from torch_see import train_reference

YAML = "repro_see_pa_cub200_deit.yaml"
P, K, EPOCHS, ITERS = 4, 2, 4, 2
# The stand-in's own data size sets the iterations; the reference's lr formula is evaluated at
# its real batch (90 per GPU x 2 GPUs / 180 = x1).
STAND_IN = {"data.batch.classes_per_batch": P, "data.batch.samples_per_class": K, "train.epochs": EPOCHS,
            "train.iterations_per_epoch": ITERS}
REF = dict(lr=1e-5, batch_size_per_gpu=90, world_size=2, weight_decay=1e-2, eps=1e-4, warmup_epochs=1, clamp=10.0,
           proxy_lr_scale=1e4, n_expan=8, lam=0.2, max_t=0.4, min_t=0.0)


def _run(yaml: str = YAML, ref: dict | None = None, **knob):
    # Head weights x 0.05: gradients beyond the clamp's 10 in the first steps.
    init, project, trainer = run_project(recipe_config(yaml, **{**STAND_IN, **knob}), make_batches(EPOCHS, ITERS, P, K),
                                         head_scale=0.05)
    reference = train_reference(init, make_batches(EPOCHS, ITERS, P, K), epochs=EPOCHS, **{**REF, **(ref or {})})
    return init, project, reference


def test_the_recipe_trains_as_the_reference_step():
    init, project, reference = _run()
    assert_equivalent(project, reference, init)
    assert reference.extra["clamped"] > 0, "the clamp never clamped: the test would not see it"
    assert reference.extra["expanded"] > 0, "SEE never expanded: the test would not see it"
    assert [s["backbone"] for s in reference.lrs] == [0, 0] + [1e-5] * 6  # warm-up, then constant


@pytest.mark.parametrize("knob", [
    {"train.grad_clamp": None},
    {"train.grad_clamp": None, "train.grad_clip": 1.0},      # norm clipping, the old mapping
    {"scheduler.backbone_frozen_epochs": 0},
    {"scheduler.name": "cosine"},
    {"scheduler.warmup_epochs": 1},                          # a ramp instead of lr 0 for the backbone
    {"model.head": "linear"},
    {"optimizer.eps": 1e-8},
    {"optimizer.weight_decay_on_loss": False},
    {"train.model_grad_scale": 1.0},
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_switching_a_knob_back_breaks_equivalence(knob):
    init, project, reference = _run(**knob)
    assert compare(project, reference, initial_params(init)), f"{knob} went unnoticed"


# --------------------------------------------------------------------------- ResNet-50 recipe

RESNET_YAML = "repro_see_pa_cub200.yaml"
# The reference trainer's ResNet-50 branch: frozen BN (its modules in eval mode), GAP + GMP;
# the YAML's learning rates (its header: Proxy-Anchor's 1e-4, proxies x 100).
RESNET_REF = dict(lr=1e-4, proxy_lr_scale=1e2, bn_train=False, gap_plus_gmp=True)


def test_the_resnet50_recipe_trains_as_the_reference_step():
    init, project, reference = _run(RESNET_YAML, RESNET_REF)
    assert_equivalent(project, reference, init)
    assert reference.extra["clamped"] > 0 and reference.extra["expanded"] > 0


@pytest.mark.parametrize("knob", [
    {"train.grad_clamp": None},
    {"scheduler.backbone_frozen_epochs": 0},
    {"scheduler.name": "cosine"},
    {"model.head": "linear"},
    {"optimizer.eps": 1e-8},
    {"optimizer.weight_decay_on_loss": False},
    {"train.model_grad_scale": 1.0},
    {"model.freeze_bn": False},
    {"model.pooling": "avg"},
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_resnet50_switching_a_knob_back_breaks_equivalence(knob):
    init, project, reference = _run(RESNET_YAML, RESNET_REF, **knob)
    assert compare(project, reference, initial_params(init)), f"{knob} went unnoticed"

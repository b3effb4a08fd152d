"""EE + HPHN-triplet on Cars196 (experiments/repro_ee_hphn_cars196.yaml) against the MXNet
reference step (`mxnet_ee`): same stand-in backbone, init and batches; 3 "epochs" of the
reference's classes x K // B iterations, the lr halved at epoch 1 and 2 (the YAML's
400/800/... scaled down), i.e. through two decay milestones, each taking effect one update into
its epoch as MXNet's MultiFactorScheduler does.

Each knob the recipe needs is then switched back, one at a time, and the comparison must fail:
the test can tell every one of them apart."""
from __future__ import annotations

import pytest

from mxnet_ee import hphn_triplet, train_reference
from stepcheck import assert_equivalent, compare, initial_params, make_batches, recipe_config, run_project

YAML = "repro_ee_hphn_cars196.yaml"
P, K, EPOCHS = 2, 4, 3  # digits' 5 train classes x 4 // 8 = 2 iterations per epoch
MILESTONES = [1, 2]
# The reference's settings (main.py defaults + README command), scaled down only where marked.
REF = dict(lr=1e-4, wd=5e-4, decay_factor=0.5, eps=1e-8)
ITERS = 5 * K // (P * K)  # EE's epoch: classes x instances per class, last partial batch dropped


def _project(**knob):
    cfg = recipe_config(YAML, **{"data.batch.classes_per_batch": P, "data.batch.samples_per_class": K,
                                 "train.epochs": EPOCHS, "scheduler.milestones": MILESTONES, **knob})
    return run_project(cfg, make_batches(EPOCHS, ITERS, P, K))


def _reference(init):
    return train_reference(init, make_batches(EPOCHS, ITERS, P, K),
                           loss_vector=lambda e, y: hphn_triplet(e, y, n_inner_pts=2, margin=1e-5),
                           decay_epochs=MILESTONES, **REF)


def test_the_recipe_trains_as_the_reference_step():
    init, project, trainer = _project()
    assert trainer.iterations == ITERS
    reference = _reference(init)
    assert_equivalent(project, reference, init)
    # The schedule really decays inside the run, one update into epochs 1 and 2.
    lrs = [s["head"] for s in reference.lrs]
    assert lrs == pytest.approx([1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 2.5e-5])


@pytest.mark.parametrize("knob", [
    {"loss.reduction": "mean"},                 # the gradient of the mean, not the sum
    {"scheduler.name": "constant"},             # no decay
    {"scheduler.milestone_delay_iters": 0},     # decay from the milestone epoch's first update
    {"optimizer.name": "adamw"},                # decoupled instead of MXNet's coupled decay
    {"optimizer.eps": 1e-4},
    {"optimizer.eps_mode": "torch"},            # eps after the bias correction: 3e-7 at step 1
    {"expansion.mining_scope": "pair"},
    {"train.epoch_length": "images"},           # 901 // 8 = 112 iterations per epoch, not 5 x 4 // 8
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_switching_a_knob_back_breaks_equivalence(knob):
    init, project, trainer = _project(**knob)
    reference = _reference(init)
    # The epoch length shows in the trainer's batches per epoch (here the batches are fed).
    assert compare(project, reference, initial_params(init)) or trainer.iterations != ITERS, f"{knob} went unnoticed"

"""MS + EE on CUB (experiments/repro_ee_ms_cub200.yaml): the EE reference's MXNet step with the
MS loss and the paper's pair-set mining (`mxnet_ee.multi_similarity_ee`, explicit synthetic
points and brute force), against the trainer; through two decay milestones. Each knob switched
back must break the equivalence."""
from __future__ import annotations

import pytest

from mxnet_ee import multi_similarity_ee, train_reference
from stepcheck import assert_equivalent, compare, initial_params, make_batches, recipe_config, run_project

YAML = "repro_ee_ms_cub200.yaml"
P, K, EPOCHS = 2, 4, 3
ITERS = 5 * K // (P * K)
MILESTONES = [1, 2]
REF = dict(lr=1e-4, wd=5e-4, decay_factor=0.5, eps=1e-8)


def _ms(emb, y):
    return multi_similarity_ee(emb, y, n_inner_pts=2, scope="pair", alpha=2.0, beta=50.0, base=0.5, epsilon=0.1)


def _run(**knob):
    cfg = recipe_config(YAML, **{"data.batch.classes_per_batch": P, "data.batch.samples_per_class": K,
                                 "train.epochs": EPOCHS, "scheduler.milestones": MILESTONES, **knob})
    init, project, trainer = run_project(cfg, make_batches(EPOCHS, ITERS, P, K))
    reference = train_reference(init, make_batches(EPOCHS, ITERS, P, K), loss_vector=_ms, decay_epochs=MILESTONES, **REF)
    return init, project, reference, trainer


def test_the_recipe_trains_as_the_reference_step():
    init, project, reference, trainer = _run()
    assert trainer.iterations == ITERS
    assert_equivalent(project, reference, init)


@pytest.mark.parametrize("knob", [
    {"loss.reduction": "mean"},
    {"expansion.mining_scope": "anchor"},
    {"scheduler.name": "constant"},
    {"scheduler.milestone_delay_iters": 0},
    {"optimizer.name": "adamw"},
    {"optimizer.eps_mode": "torch"},
], ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_switching_a_knob_back_breaks_equivalence(knob):
    init, project, reference, _ = _run(**knob)
    assert compare(project, reference, initial_params(init)), f"{knob} went unnoticed"

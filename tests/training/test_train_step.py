"""The trainer's step loop: batched loss read-back (the CUDA setting, exercised here on CPU)."""
import json

import pytest
import torch

from dml_core.config import config_from_dict
from dml_core.training import NonFiniteLossError
from dml_core.training.trainer import Trainer
from test_trainer import TINY as TRAINER_TINY

# test_trainer's experiment, one longer epoch: the CUDA read-back interval spans several steps.
TINY = {**TRAINER_TINY, "train": {**TRAINER_TINY["train"], "epochs": 1, "iterations_per_epoch": 12}}


def trainer(**train) -> Trainer:
    raw = json.loads(json.dumps(TINY))
    raw["optimizer"].update(train.pop("optimizer", {}))
    raw["loss"].update(train.pop("loss", {}))
    raw["train"].update(train)
    return Trainer(config_from_dict(raw))


def test_cpu_reads_every_step():
    assert trainer().loss_check_every == 1


@pytest.mark.parametrize("every", [5, 12, 50])
def test_batched_read_back_gives_the_same_mean_loss_and_weights(every):
    # Built and run one after the other: each constructor re-seeds the global RNGs.
    per_step = trainer()
    reference = per_step.train_epoch(0)
    batched = trainer()
    batched.loss_check_every = every  # the CUDA setting; windows of 5 leave a partial one at the end
    assert batched.train_epoch(0) == pytest.approx(reference, rel=1e-12)
    for a, b in zip(per_step.model.parameters(), batched.model.parameters()):
        assert torch.equal(a, b)


def test_batched_read_back_names_the_first_non_finite_iteration():
    # lr 1e30 blows the weights up within a few steps; both settings must blame the same step.
    def failing(every):
        t = trainer(optimizer={"lr": 1e30, "name": "sgd", "momentum": 0.0}, loss={"name": "contrastive"},
                    iterations_per_epoch=40)
        t.loss_check_every = every
        with pytest.raises(NonFiniteLossError) as info:
            t.train_epoch(0)
        return str(info.value)

    exact = failing(1)
    batched = failing(50)
    assert exact.startswith("non-finite loss") and "at epoch 1, iteration" in exact
    assert batched.startswith(exact) and "checked every" in batched


def test_eval_knn_backend_torch_gives_the_faiss_metrics():
    def metrics(backend):
        raw = json.loads(json.dumps(TINY))
        raw["train"].update(epochs=1, iterations_per_epoch=2)
        raw["eval"]["knn_backend"] = backend
        t = Trainer(config_from_dict(raw))
        t.train_epoch(0)
        return t.evaluate()

    faiss_m, torch_m = metrics("faiss"), metrics("torch")
    assert faiss_m.keys() == torch_m.keys() and "nmi" in faiss_m
    for key in faiss_m:
        # float32 distances summed in another order can swap two near-tied neighbours: that moves
        # MAP@R (an average over every rank up to R) by ~1e-6, never a recall or NMI that far.
        tol = 1e-5 if key in ("map_at_r", "r_precision") else 1e-6
        assert torch_m[key] == pytest.approx(faiss_m[key], abs=tol), key

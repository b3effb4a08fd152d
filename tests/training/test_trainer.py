"""End-to-end runs of the trainer on the embedded digits (seconds each)."""
import json
import math

import pytest
import torch

from dml_core.config import config_from_dict
from dml_core.params.losses import LOSSES
from dml_core.training import NonFiniteLossError, fit

TINY = {
    "name": "tiny",
    "data": {"name": "digits", "image_size": 12, "horizontal_flip": False,
             "batch": {"classes_per_batch": 5, "samples_per_class": 4}},
    "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 16, "embedding_dim": 16},
    "loss": {"name": "multi_similarity"},
    "optimizer": {"lr": 0.003},
    "train": {"epochs": 2, "iterations_per_epoch": 6, "num_threads": 1},
    "eval": {"kmeans_iters": 5},
}


def tiny(**sections):
    raw = json.loads(json.dumps(TINY))
    for key, value in sections.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    return config_from_dict(raw)


def test_fit_writes_a_finished_run_dir_and_reports_each_eval(tmp_path):
    reports = []
    result = fit(tiny(), out_dir=tmp_path, report=lambda m, e, c: reports.append((m, e, c)))
    assert [e for _, e, _ in reports] == [1, 2]
    assert all(c == tmp_path / "checkpoint.pt" for _, _, c in reports)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "finished"
    assert len(metrics["history"]) == 2
    for key in ("recall_at_1", "recall_at_8", "map_at_r", "r_precision", "nmi", "f1", "loss", "epoch"):
        assert key in metrics["final"], key
    assert result.metrics["recall_at_1"] == metrics["final"]["recall_at_1"]
    assert (tmp_path / "config.yaml").is_file()
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and "optimizer" in ckpt and ckpt["config"]["name"] == "tiny"


def test_same_seed_same_metrics_on_cpu():
    a = fit(tiny()).metrics
    b = fit(tiny()).metrics
    c = fit(tiny(seed=1)).metrics
    keys = ["loss", "recall_at_1", "map_at_r", "nmi"]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert [a[k] for k in keys] != [c[k] for k in keys]


def test_resume_continues_to_the_same_result(tmp_path):
    straight = fit(tiny(train={"epochs": 3}))
    fit(tiny(train={"epochs": 2}), out_dir=tmp_path)
    # Resuming with a longer schedule would change the cosine/step factors; keep schedule 'none'.
    resumed = fit(tiny(train={"epochs": 3}), out_dir=tmp_path, resume=tmp_path / "checkpoint.pt")
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for key in ("loss", "recall_at_1", "map_at_r"):
        assert resumed.metrics[key] == pytest.approx(straight.metrics[key], abs=1e-6), key


def test_non_finite_loss_stops_with_clear_status(tmp_path):
    cfg = tiny(optimizer={"lr": 1e30, "name": "sgd", "momentum": 0.0}, loss={"name": "contrastive"},
               train={"epochs": 3, "iterations_per_epoch": 20})
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        fit(cfg, out_dir=tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "non-finite loss" in metrics["error"]


def test_training_beats_an_untrained_model():
    untrained = fit(tiny(train={"epochs": 1, "iterations_per_epoch": 1}, optimizer={"lr": 1e-9})).metrics
    trained = fit(tiny(train={"epochs": 3, "iterations_per_epoch": 30})).metrics
    assert trained["recall_at_1"] > untrained["recall_at_1"] + 0.05


# Synthetic points per pair (EE) / per expanded sample (SEE).
COUNT = {"ee": "n_inner_pts", "see": "n_expan"}


@pytest.mark.parametrize("loss, expansion", [("multi_similarity", "ee"), ("proxy_anchor", "see"), ("triplet", "see")])
def test_expansions_train_end_to_end(loss, expansion):
    n = 2
    result = fit(tiny(loss={"name": loss}, expansion={"name": expansion, COUNT[expansion]: n}))
    assert result.metrics["recall_at_1"] > 0.2


def test_proxies_get_their_own_learning_rate():
    from dml_core.training.trainer import Trainer

    trainer = Trainer(tiny(loss={"name": "proxy_anchor"}, optimizer={"lr": 1e-3, "loss_lr": 0.1}))
    lrs = {g["name"]: g["lr"] for g in trainer.optimizer.param_groups}
    assert lrs == {"backbone": 1e-3, "head": 1e-3, "loss": 0.1}


def test_holdout_evaluates_on_held_out_training_classes():
    from dml_core.training.trainer import Trainer

    trainer = Trainer(tiny(data={"holdout": 0.4, "batch": {"classes_per_batch": 3, "samples_per_class": 4}}))
    train_names = set(trainer.splits.train.class_names)
    test_names = set(trainer.splits.test.class_names)
    assert not train_names & test_names
    assert train_names | test_names == {"0", "1", "2", "3", "4"}
    assert len(test_names) == 2


def test_feature_cache_trains_only_the_head_and_reuses_files(tmp_path):
    cfg = tiny(model={"freeze_backbone": True}, data={"cache_features": True, "cache_dir": str(tmp_path)})
    first = fit(cfg)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)
    mtimes = [p.stat().st_mtime_ns for p in tmp_path.iterdir()]
    second = fit(cfg)
    assert [p.stat().st_mtime_ns for p in tmp_path.iterdir()] == mtimes  # read, not rewritten
    assert first.metrics["recall_at_1"] == pytest.approx(second.metrics["recall_at_1"])


@pytest.mark.parametrize("loss", LOSSES.names())  # every registered loss, with no edit here
def test_every_loss_trains_with_the_expansion_it_takes(loss):
    expansion = "see" if LOSSES.get(loss).family == "proxy" else "ee"
    cfg = tiny(loss={"name": loss}, expansion={"name": expansion, COUNT[expansion]: 2},
               train={"epochs": 1, "iterations_per_epoch": 4}, eval={"clustering": False})
    result = fit(cfg)
    assert math.isfinite(result.metrics["loss"])
    assert 0.0 < result.metrics["recall_at_1"] <= 1.0

"""Config mistakes of issues 10 and 12, each caught at load or by `--dry-run` with one line
naming the field (and, for a sweep, the cell) -- before anything trains."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dml_core.config import config_from_dict, load_config
from dml_core.errors import ConfigError
from sweep.checks import check_plan
from sweep.plan import SweepPlan

REPO = Path(__file__).resolve().parents[2]


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def test_duplicate_yaml_key_is_an_error_with_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("optimizer:\n  lr: 0.1\n  name: adam\n  lr: 0.01\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert _one_line(info.value) == f"{path}: line 4: duplicate key 'lr' (first set on line 2)"


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("data: &d {name: digits, image_size: 16}\nsweep:\n  x: {<<: *d, image_size: 8}\n")
    assert load_config(path).sweep["x"]["image_size"] == 8


@pytest.mark.parametrize("loss", ["contrastive", "triplet", "multi_similarity", "npair"])
def test_pair_loss_with_one_sample_per_class_is_rejected(loss):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"loss": {"name": loss}, "data": {"batch": {"samples_per_class": 1}}})
    assert "data.batch.samples_per_class: " in _one_line(info.value) and "no positive pairs" in str(info.value)


def test_proxy_loss_with_one_sample_per_class_is_fine():
    config_from_dict({"loss": {"name": "proxy_anchor"}, "data": {"batch": {"samples_per_class": 1}}})


def test_recall_at_zero_is_rejected_at_load():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"eval": {"recall_at": [0, 1]}}, "x.yaml")
    assert _one_line(info.value).startswith("x.yaml: eval.recall_at.0: Input should be greater than or equal to 1")


def test_sop_with_train_root_is_rejected_at_load():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"data": {"name": "sop", "root": "/x", "train_root": "/y"}}, "x.yaml")
    assert _one_line(info.value).startswith("x.yaml: data.train_root: not a parameter of dataset sop")


def _plan(sweep: dict, **sections) -> SweepPlan:
    raw = {"data": {"name": "digits", "image_size": 8, **sections.pop("data", {})}, **sections, "sweep": sweep}
    return SweepPlan.from_dict(raw, "x.yaml")


def test_dry_run_rejects_a_recall_the_dataset_does_not_report():
    plan = _plan({"metric": "recall_at_3"})  # digits reports Recall@1,2,4,8
    with pytest.raises(ValueError) as info:
        check_plan(plan)
    assert _one_line(info.value).startswith("x.yaml [base/seed=0]: sweep.metric: 'recall_at_3' is not reported")


def test_dry_run_rejects_more_classes_per_batch_than_the_holdout_leaves():
    # Digits trains on 5 classes; the search holds out 0.4 of them, leaving 3 for P = 4.
    sweep = {"search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                        "holdout": 0.4, "num_samples": 2}}
    plan = _plan(sweep, data={"batch": {"classes_per_batch": 4, "samples_per_class": 4}})
    with pytest.raises(ValueError) as info:
        check_plan(plan)
    msg = _one_line(info.value)
    assert msg.startswith("x.yaml [search/base]: data.batch.classes_per_batch: 4 classes per batch"), msg
    assert "has 3 classes, after data.holdout" in msg


def test_dry_run_checks_every_cell_against_num_classes():
    plan = _plan({"grid": {"data.num_classes": [2, 5]}}, data={"batch": {"classes_per_batch": 3, "samples_per_class": 2}})
    with pytest.raises(ValueError) as info:
        check_plan(plan)
    assert _one_line(info.value).startswith("x.yaml [data.num_classes=2/seed=0]: data.batch.classes_per_batch: 3")


def test_dry_run_rejects_k_above_every_class_size():
    plan = _plan({}, data={"batch": {"classes_per_batch": 2, "samples_per_class": 400}})  # ~180 images per digit
    with pytest.raises(ValueError) as info:
        check_plan(plan)
    assert "data.batch.samples_per_class: 400 per class but no training class of digits has more than" in _one_line(info.value)


def test_dry_run_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "digits"}, "sweep": {"metric": "recall_at_3"}}))
    proc = subprocess.run([sys.executable, "sweep/run.py", str(path), "--dry-run"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sweep.metric: 'recall_at_3'" in lines[0], proc.stderr

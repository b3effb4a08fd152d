"""The driver's checks (`check_plan(plan, download=True)`, what every sweep runs before anything
trains) import neither torch nor torchvision: together ~3.5 s of a sweep's start, and the trials
that need them run in Ray's worker processes. Nor does a whole sweep's driver (Tune's TensorBoard
logger imported torch through tensorboardX: `sweep.compat.tune_loggers`). Each probe runs in a
fresh interpreter, since the test process itself has long imported torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from sweep_testlib import REPO_ROOT, TINY_DIGITS

CHECK = """
import sys
from sweep.checks import check_plan
from sweep.plan import load_plan
check_plan(load_plan(sys.argv[1]), download=True)
"""

IMPORT_ALL = """
import importlib
import dml_core.data
from dml_core.params.datasets import DATASETS
for entry in DATASETS:  # every registered dataset's builder module
    importlib.import_module(entry.builder_ref.split(":")[0])
"""

NO_TORCH = """
heavy = sorted(m for m in ("torch", "torchvision") if m in sys.modules)
assert not heavy, f"imported {heavy}"
print("ok")
"""


def run_probe(code: str, *args: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import sys\n{code}{NO_TORCH}", *args], cwd=REPO_ROOT,
                          env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "ok"


def test_quickstart_checks_import_no_torch() -> None:
    run_probe(CHECK, str(REPO_ROOT / "experiments" / "quickstart.yaml"))


def test_omniglot_checks_import_no_torch(tmp_path: Path, omniglot_root: Path) -> None:
    raw = {**TINY_DIGITS, "data": {"name": "omniglot", "root": "${DML_DATA}/omniglot/images_background_small1",
                                   "image_size": 16, "batch": {"classes_per_batch": 8, "samples_per_class": 4}},
           "sweep": {"seeds": [0], "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4,
                                                                            "high": 1e-2}},
                                              "num_samples": 2, "holdout": 0.25}}}
    path = tmp_path / "omniglot.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_probe(CHECK, str(path))


SWEEP = """
import logging, ray
from sweep.plan import load_plan
from sweep.runner import run_sweep
ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
outcome = run_sweep(load_plan(sys.argv[1]), __import__("pathlib").Path(sys.argv[2]), verbose=0)
assert outcome.status == "FINISHED" and not outcome.failed, outcome
"""


def test_a_whole_sweep_driver_imports_no_torch(tmp_path: Path, mlflow_db: Path) -> None:
    raw = {**TINY_DIGITS, "train": {**TINY_DIGITS["train"], "epochs": 1, "iterations_per_epoch": 2},
           "sweep": {"seeds": [0], "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_probe(SWEEP, str(path), str(tmp_path / "sweeps" / "s"))
    trial_dirs = [p for p in (tmp_path / "sweeps" / "s" / "final").iterdir() if p.is_dir()]
    assert [(d / "result.json").is_file() for d in trial_dirs] == [True]  # Tune's own record is kept
    assert not list((tmp_path / "sweeps" / "s").rglob("events.out.tfevents*"))


def test_data_package_and_every_builder_import_no_torch() -> None:
    run_probe(IMPORT_ALL)


def test_every_public_name_of_the_data_package_resolves() -> None:
    import dml_core.data

    for name in dml_core.data.__all__:
        assert getattr(dml_core.data, name) is not None, name

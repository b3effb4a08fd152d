"""The digits dataset is scikit-learn's, read without importing scikit-learn (and its scipy): the
sweep driver's check builds it to count images per class, and paid ~1 s of CPU and ~150 MiB for
the import (`benchmarks/bench_sweep_scale.py`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from dml_core.data.digits import load_digit_images

REPO = Path(__file__).resolve().parents[2]


def test_the_same_images_and_labels_as_load_digits() -> None:
    from sklearn.datasets import load_digits

    images, target = load_digit_images("digits")
    bunch = load_digits()
    assert images.dtype == bunch.images.dtype and target.dtype == bunch.target.dtype
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)
    np.testing.assert_array_equal(np.unique(target), bunch.target_names)


def test_building_digits_imports_no_scikit_learn() -> None:
    code = (
        "import sys\n"
        "from dml_core.config import config_from_dict\n"
        "from dml_core.data import select_splits\n"
        "cfg = config_from_dict({'name': 'x', 'data': {'name': 'digits', 'image_size': 12}})\n"
        "splits = select_splits(cfg.data)\n"
        "assert len(splits.train.labels) + len(splits.test.labels) == 1797\n"
        "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"

"""Fixtures of the fault suite: a trained tiny run and a small image tree, made once per session."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faults_testlib import tiny


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run directory (config, metrics, checkpoint), trained once per session."""
    from dml_core.config import config_from_dict
    from dml_core.training import fit

    out = tmp_path_factory.mktemp("trained") / "run"
    fit(config_from_dict(tiny(), "tiny"), out_dir=out)
    return out


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A <class>/<image> folder of 8x8 digits as PNGs: 4 classes x 5 images."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("images") / "tree"
    for label in range(4):
        (root / f"c{label}").mkdir(parents=True)
        for j, i in enumerate([k for k, t in enumerate(digits.target) if t == label][:5]):
            Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).save(root / f"c{label}" / f"{j}.png")
    return root


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """These mistakes must be caught before Ray starts (seconds, and no cluster resources)."""
    import ray

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)

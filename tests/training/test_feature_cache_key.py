"""The feature cache is keyed by the data it was computed from, not by how the YAML spells the path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dml_core.config import config_from_dict
from dml_core.training.features import cache_key

RAW = {"data": {"name": "image_folder", "root": "${DML_DATA}/birds"},
       "model": {"backbone": "small_conv", "freeze_backbone": True}}


def _birds(home: Path, labels: list[str]) -> None:
    """`home/birds/<label>/<i>.png`: two classes of small PNGs."""
    for c, label in enumerate(labels):
        for i in range(2):
            (home / "birds" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4), 40 * c + i, dtype=np.uint8)).save(home / "birds" / label / f"{i}.png")


def test_same_written_root_under_two_data_homes_gets_two_keys(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    cfg = config_from_dict(RAW)
    for home in ("a", "b"):
        _birds(tmp_path / home, ["crow", "wren"])
    monkeypatch.setenv("DML_DATA", str(tmp_path / "a"))
    first = cache_key(cfg)
    monkeypatch.setenv("DML_DATA", str(tmp_path / "b"))
    assert cache_key(cfg) != first


def test_written_and_expanded_root_share_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    _birds(tmp_path, ["crow", "wren"])
    monkeypatch.setenv("DML_DATA", str(tmp_path))
    expanded = config_from_dict({**RAW, "data": {**RAW["data"], "root": f"{tmp_path}/birds"}})
    assert cache_key(config_from_dict(RAW)) == cache_key(expanded)


def test_other_labels_under_the_same_root_get_another_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Cached features carry the labels they were computed with: reused for relabelled data, a
    run keyed by the new data would train on the old."""
    import shutil

    monkeypatch.setenv("DML_DATA", str(tmp_path))
    _birds(tmp_path, ["crow", "wren"])
    first = cache_key(config_from_dict(RAW))
    shutil.rmtree(tmp_path / "birds")
    _birds(tmp_path, ["wren", "crow"])  # the same file names, each class's images the other's
    assert cache_key(config_from_dict(RAW)) != first
    assert cache_key(config_from_dict(RAW), torch.device("cpu")) != cache_key(config_from_dict(RAW), torch.device("cuda"))

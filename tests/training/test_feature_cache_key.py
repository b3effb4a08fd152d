"""The feature cache is keyed by the data it was computed from, not by how the YAML spells the path."""
from __future__ import annotations

import pytest

from dml_core.config import config_from_dict
from dml_core.training.features import cache_key

RAW = {"data": {"name": "image_folder", "root": "${DML_DATA}/birds"},
       "model": {"backbone": "small_conv", "freeze_backbone": True}}


def test_same_written_root_under_two_data_homes_gets_two_keys(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    cfg = config_from_dict(RAW)
    monkeypatch.setenv("DML_DATA", str(tmp_path / "a"))
    first = cache_key(cfg)
    monkeypatch.setenv("DML_DATA", str(tmp_path / "b"))
    assert cache_key(cfg) != first


def test_written_and_expanded_root_share_a_key(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DML_DATA", str(tmp_path))
    expanded = config_from_dict({**RAW, "data": {**RAW["data"], "root": f"{tmp_path}/birds"}})
    assert cache_key(config_from_dict(RAW)) == cache_key(expanded)

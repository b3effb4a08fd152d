"""Each repro_*.yaml passes `sweep/run.py --dry-run` where its data exists: tiny trees in the
real CUB and Cars196 layouts (tests/data/conftest.py's writers) under DML_DATA, judged against
cluster.yaml's node types. And the epoch lengths the headers state, on the real datasets'
sizes."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from dml_core.config import load_config
from dml_core.training.trainer import epoch_iterations
from stepcheck import REPO

_spec = importlib.util.spec_from_file_location("data_layouts", REPO / "tests" / "data" / "conftest.py")
layouts = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(layouts)

# Per YAML: the tree it needs -- enough training classes for P and one class of K images.
TREES = {
    "repro_ee_hphn_cars196.yaml": lambda root: layouts._make_cars(root / "cars196", num_classes=8, per_class=32),
    "repro_ee_ms_cub200.yaml": lambda root: layouts._make_cub(root, num_classes=8, per_class=32),
    "repro_see_pa_cub200.yaml": lambda root: layouts._make_cub(root, num_classes=200, per_class=2),
    "repro_see_pa_cub200_deit.yaml": lambda root: layouts._make_cub(root, num_classes=200, per_class=2),
}


def test_every_repro_yaml_is_covered():
    assert sorted(p.name for p in (REPO / "experiments").glob("repro_*.yaml")) == sorted(TREES)


@pytest.mark.parametrize("name", sorted(TREES))
def test_dry_run_passes_on_a_tree_in_the_real_layout(name, tmp_path, monkeypatch, capsys):
    from sweep.run import main

    TREES[name](tmp_path)
    monkeypatch.setenv("DML_DATA", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    code = main([str(REPO / "experiments" / name), "--dry-run", "--cluster-config", str(REPO / "cluster.yaml"),
                 "--out", str(tmp_path / "never")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "dry run: every trial config, data path and the resources check out" in out.out
    assert not (tmp_path / "never").exists()


def test_dry_run_fails_where_the_tree_is_too_small(tmp_path, monkeypatch, capsys):
    from sweep.run import main

    layouts._make_cub(tmp_path, num_classes=8, per_class=2)  # 4 training classes, 90 per batch wanted
    monkeypatch.setenv("DML_DATA", str(tmp_path))
    code = main([str(REPO / "experiments" / "repro_see_pa_cub200_deit.yaml"), "--dry-run", "--cluster-config",
                 str(REPO / "cluster.yaml")])
    assert code == 2 and "data.batch.classes_per_batch: 90" in capsys.readouterr().err


@pytest.mark.parametrize("name, classes, images, iterations", [
    ("repro_ee_hphn_cars196.yaml", 98, 8054, 24),       # EE: 98 x 32 // 128
    ("repro_ee_ms_cub200.yaml", 100, 5864, 25),         # 100 x 32 // 128
    ("repro_see_pa_cub200_deit.yaml", 100, 5864, 32),   # SEE: 5,864 // 180
    ("repro_see_pa_cub200.yaml", 100, 5864, 32),
])
def test_epoch_length_is_the_references(name, classes, images, iterations):
    cfg = load_config(REPO / "experiments" / name)
    labels = np.arange(images) % classes
    assert epoch_iterations(cfg, labels) == iterations


def test_the_data_index_follows_dml_data(tmp_path, monkeypatch):
    # Two DML_DATA values in one process (two dry runs, two tests): the cached index of the
    # first must not answer for the second.
    from dml_core.data.index import data_index

    cfg = load_config(REPO / "experiments" / "repro_see_pa_cub200_deit.yaml").data
    for classes in (8, 20):
        root = tmp_path / str(classes)
        layouts._make_cub(root, num_classes=classes, per_class=2)
        monkeypatch.setenv("DML_DATA", str(root))
        assert data_index(cfg).num_classes == classes // 2

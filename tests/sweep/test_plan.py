"""Expansion of a sweep block into cells, trials and search samples (no Ray)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweep.checks import check_plan
from sweep.console import describe_plan
from sweep.baseline import reference_cell
from sweep.plan import FINAL, SEARCH, load_plan, trial_config
from sweep.resources import NodeShape, check_fits
from sweep.spec import SweepError
from sweep_testlib import REPO_ROOT, write_yaml

# The grid axis is EE's n_inner_pts: `none` and `see` do not have it and opt out (pin to null).
ARMS = {
    "none": {"expansion.name": "none", "expansion.n_inner_pts": None},  # one cell
    "ee": {"expansion.name": "ee"},
    "see": {"expansion.name": "see", "loss.name": "proxy_anchor", "expansion.n_inner_pts": None, "expansion.n_expan": 4},
}


def test_grid_times_arms_times_seeds(tmp_path: Path) -> None:
    sweep = {"grid": {"model.embedding_dim": [16, 32], "optimizer.lr": [0.001, 0.01, 0.1]},
             "arms": {"a": {"loss.name": "triplet"}, "b": {}}, "seeds": [3, 4]}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    assert len(plan.cells) == 2 * 2 * 3
    assert plan.cells[0].id == "arm=a,model.embedding_dim=16,optimizer.lr=0.001"
    assert plan.cells[0].overrides == {"model.embedding_dim": 16, "optimizer.lr": 0.001, "loss.name": "triplet"}
    trials = plan.final_trials()
    assert len(trials) == 24
    # Paired design: every cell has exactly the same seeds.
    seeds_per_cell: dict[str, list[int]] = {}
    for t in trials:
        seeds_per_cell.setdefault(t.cell, []).append(t.seed)
    assert set(map(tuple, seeds_per_cell.values())) == {(3, 4)}
    assert trials[1].key == "arm=a,model.embedding_dim=16,optimizer.lr=0.001/seed=4"
    cfg = trial_config(plan.base, trials[1], None, plan.source)
    assert (cfg.seed, cfg.loss.name, cfg.optimizer.lr, cfg.model.embedding_dim) == (4, "triplet", 0.001, 16)
    assert plan.num_search_trials == 0


def test_arm_pins_an_axis_and_exclude_drops_cells(tmp_path: Path) -> None:
    sweep = {"grid": {"expansion.n_inner_pts": [0, 1, 2, 4]}, "arms": ARMS,
             "exclude": [{"arm": "ee", "expansion.n_inner_pts": 0}], "seeds": [0, 1, 2]}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    assert [c.id for c in plan.cells] == [
        "arm=none,expansion.n_inner_pts=null",
        "arm=ee,expansion.n_inner_pts=1", "arm=ee,expansion.n_inner_pts=2", "arm=ee,expansion.n_inner_pts=4",
        "arm=see,expansion.n_inner_pts=null",
    ]
    assert len(plan.final_trials()) == 5 * 3
    see4 = trial_config(plan.base, plan.final_trials()[-1], None, plan.source)
    assert (see4.expansion.name, see4.expansion.n_expan, see4.loss.name, see4.seed) == ("see", 4, "proxy_anchor", 2)
    ee2 = trial_config(plan.base, plan.final_trials()[6], None, plan.source)
    assert (ee2.expansion.name, ee2.expansion.n_inner_pts) == ("ee", 2)


def test_reference_cell_for_both_kinds_of_baseline(tmp_path: Path) -> None:
    sweep = {"grid": {"expansion.n_inner_pts": [0, 2, 4]}, "arms": ARMS}
    cells = load_plan(write_yaml(tmp_path / "x.yaml", sweep)).cells
    by_id = {c.id: c for c in cells}
    ee2, see = by_id["arm=ee,expansion.n_inner_pts=2"], by_id["arm=see,expansion.n_inner_pts=null"]

    # {arm: none}: the pinned none cell is everybody's reference.
    none = {"arm": "none"}
    assert reference_cell(ee2, cells, none).id == "arm=none,expansion.n_inner_pts=null"
    assert reference_cell(see, cells, none).id == "arm=none,expansion.n_inner_pts=null"
    assert reference_cell(by_id["arm=none,expansion.n_inner_pts=null"], cells, none) is None

    # {n_inner_pts: 0}: the EE cells against EE at n = 0.
    zero = {"expansion.n_inner_pts": 0}
    assert reference_cell(ee2, cells, zero).id == "arm=ee,expansion.n_inner_pts=0"
    assert reference_cell(by_id["arm=ee,expansion.n_inner_pts=0"], cells, zero) is None


def test_reference_cell_matches_the_other_axes(tmp_path: Path) -> None:
    sweep = {"grid": {"model.embedding_dim": [16, 64], "expansion.n_inner_pts": [2, 4]}, "arms": ARMS}
    cells = load_plan(write_yaml(tmp_path / "x.yaml", sweep)).cells
    cell = next(c for c in cells if c.id == "arm=ee,model.embedding_dim=64,expansion.n_inner_pts=4")
    # The none arm pins n_inner_pts only, so its cells still differ in embedding_dim: match it.
    assert reference_cell(cell, cells, {"arm": "none"}).id == "arm=none,model.embedding_dim=64,expansion.n_inner_pts=null"


def test_reference_cell_with_a_baseline_arm_per_arm(tmp_path: Path) -> None:
    arms = {"ms": {"expansion.name": "none"}, "ee": {"expansion.name": "ee"},
            "pa": {"expansion.name": "none", "loss.name": "proxy_anchor"},
            "see": {"expansion.name": "see", "loss.name": "proxy_anchor"}}
    sweep = {"grid": {"model.embedding_dim": [16, 64]}, "arms": arms, "baseline": {"arm": {"ee": "ms", "see": "pa"}}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    refs = {c.id: reference_cell(c, plan.cells, plan.spec.baseline) for c in plan.cells}
    assert refs["arm=ee,model.embedding_dim=64"].id == "arm=ms,model.embedding_dim=64"
    assert refs["arm=see,model.embedding_dim=16"].id == "arm=pa,model.embedding_dim=16"
    assert refs["arm=ms,model.embedding_dim=16"] is None and refs["arm=pa,model.embedding_dim=64"] is None


def test_search_and_final_trials(tmp_path: Path) -> None:
    sweep = {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [5, 6, 7],
             "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                                   "loss.alpha": {"type": "categorical", "choices": [1.0, 2.0, 4.0]}},
                        "num_samples": 4}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    assert plan.num_search_trials == 2 * 4
    search = plan.search_trial(plan.cells[1])
    assert (search.phase, search.seed, search.key) == (SEARCH, 5, "search/model.embedding_dim=16")
    # Default holdout: search trials never see the test classes (Musgrave et al. 2020).
    cfg = trial_config(plan.base, search, {"optimizer.lr": 0.005, "loss.alpha": 4.0}, plan.source)
    assert (cfg.data.holdout, cfg.optimizer.lr, cfg.loss.params["alpha"], cfg.model.embedding_dim) == (0.2, 0.005, 4.0, 16)

    best = {"model.embedding_dim=8": {"optimizer.lr": 0.0003}, "model.embedding_dim=16": {"optimizer.lr": 0.002}}
    finals = plan.final_trials(best)
    assert len(finals) == 2 * 3 and {t.phase for t in finals} == {FINAL}
    cfg = trial_config(plan.base, finals[4], None, plan.source)
    assert (cfg.model.embedding_dim, cfg.seed, cfg.optimizer.lr, cfg.data.holdout) == (16, 6, 0.002, None)


def test_search_holdout_can_be_disabled(tmp_path: Path) -> None:
    sweep = {"search": {"params": {"optimizer.lr": {"type": "uniform", "low": 1e-3, "high": 1e-2}}, "holdout": None}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    assert "data.holdout" not in plan.search_trial(plan.cells[0]).overrides
    assert "THE TEST SPLIT" in describe_plan(plan)


def test_search_bounds_are_validated_as_configs(tmp_path: Path) -> None:
    sweep = {"search": {"params": {"data.batch.samples_per_class": {"type": "int", "low": 0, "high": 4}}}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    with pytest.raises(ValueError, match=r"\[search/base\]: data\.batch\.samples_per_class: Input should be greater than or equal to 1"):
        check_plan(plan)


def test_relative_data_paths_resolve_against_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    data = {"name": "image_folder", "root": "images", "train_classes": 0.5}
    sweep = {"grid": {"data.root": ["images", "missing"]}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep, data=data))
    # Ray runs trials in their own working directories: paths leave the driver absolute.
    assert plan.base["data"]["root"] == str(tmp_path / "images")
    assert [c.overrides["data.root"] for c in plan.cells] == [str(tmp_path / "images"), str(tmp_path / "missing")]
    with pytest.raises(SweepError, match=rf"data\.root: {tmp_path / 'missing'} does not exist \(relative paths resolve against the current directory, {tmp_path}; image_folder reads your own folder"):
        check_plan(plan)


def test_resources_must_fit_one_node(tmp_path: Path) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"resources_per_trial": {"cpu": 4, "gpu": 0.5}}))
    assert plan.base["train"]["num_threads"] == 1  # set explicitly in the tiny config
    request = plan.spec.resources_per_trial
    two_small = [NodeShape("a", 2, 1), NodeShape("b", 2, 1)]  # 4 CPUs in total, 2 per node
    with pytest.raises(SweepError, match=r"sweep\.resources_per_trial: 4 CPU \+ 0\.5 GPU per trial fits no single node.*a \(2 CPU, 1 GPU\)"):
        check_fits(request, two_small, plan.source)
    with pytest.raises(SweepError, match="fits no single node"):
        check_fits(request, [NodeShape("cpu only", 8, 0)], plan.source)
    check_fits(request, [*two_small, NodeShape("node type gpu_worker", 8, 1)], plan.source)


def test_torch_threads_follow_reserved_cpus(tmp_path: Path) -> None:
    train = {"epochs": 1}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"resources_per_trial": {"cpu": 3}}, train=train))
    assert plan.base["train"]["num_threads"] == 3


def test_plan_of_a_sweep_folder_also_of_the_previous_version(tmp_path: Path) -> None:
    """The one way a sweep folder's plan is read; a folder whose plan.json carries the dropped
    `fingerprint` (written, never read) reads as before."""
    import json

    import yaml

    from sweep.plan import plan_of
    from sweep.spec import SweepError

    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"seeds": [0, 1]}))
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "sweep.yaml").write_text(yaml.safe_dump({**plan.base, "sweep": plan.raw_sweep}))
    (folder / "plan.json").write_text(json.dumps({**plan.to_json(), "fingerprint": "0123456789abcdef"}))
    again = plan_of(folder)
    assert again.source == plan.source and again.to_json() == plan.to_json() and "fingerprint" not in plan.to_json()
    (folder / "sweep.yaml").unlink()
    with pytest.raises(SweepError, match=r"sweep: not a sweep directory \(no sweep.yaml\)"):
        plan_of(folder)


def test_dry_run_prints_the_plan_without_training(tmp_path: Path) -> None:
    sweep = {"grid": {"expansion.n_inner_pts": [0, 2]}, "arms": ARMS, "seeds": [0, 1, 2],
             "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}, "num_samples": 5}}
    path = write_yaml(tmp_path / "x.yaml", sweep)
    out = tmp_path / "never_created"
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, "sweep/run.py", str(path), "--dry-run", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "cells: 4 (after pinning/exclude) = arms ['none', 'ee', 'see'] x expansion.n_inner_pts [0, 2]" in text
    assert "seeds: [0, 1, 2]" in text
    assert "search: 5 Optuna TPE samples per cell on seed 0, scored on held-out 0.2 of the training classes" in text
    assert "-> 20 trials" in text
    assert "final: 4 cells x 3 seeds = 12 trials" in text
    assert "total: 32 trials" in text
    assert "arm=ee,expansion.n_inner_pts=2" in text
    assert not out.exists()


def test_describe_writes_the_baseline_as_the_yaml_does(tmp_path: Path) -> None:
    sweep = {"grid": {"model.embedding_dim": [8, 16]}, "baseline": {"model.embedding_dim": 8}}
    text = describe_plan(load_plan(write_yaml(tmp_path / "x.yaml", sweep)))
    assert "baseline: model.embedding_dim=8" in text and "{" not in text.split("baseline:")[1].splitlines()[0]

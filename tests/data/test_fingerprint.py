"""The data's fingerprint (`dml_core.data.fingerprint`) and what it does to reuse: the same data
under another DML_DATA is reused, other labels or images under the same file names never are.
Trees in the real layouts, written in tmp_path; sweep records written by hand, no training."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dml_core.data import fingerprint as fp
from dml_core.data.fingerprint import Fingerprints, data_fingerprint, tree_fingerprint
from dml_core.params.datasets import DataConfig

# Omniglot's layout (<alphabet>/<character>/*.png, 1-channel PNGs): 4 characters x 3 drawings.
CHARACTERS = {"Latin/character01": 3, "Latin/character02": 3, "Greek/character01": 3, "Greek/character02": 3}


def _copy(src: Path, dst: Path) -> Path:
    # shutil.copy, not copy2: a copy made elsewhere has its own modification times
    shutil.copytree(src, dst, copy_function=shutil.copy)
    return dst


def test_a_tree_is_known_by_its_files_not_its_place_or_times(tmp_path: Path, make_class_tree) -> None:
    a = make_class_tree(tmp_path / "a" / "omni", CHARACTERS, mode="L")
    b = _copy(a, tmp_path / "b" / "omni")
    assert tree_fingerprint(a) == tree_fingerprint(b)
    (a / ".lock").write_text("x")  # hidden files are not data (download locks, .DS_Store)
    assert tree_fingerprint(a) == tree_fingerprint(b)

    # The same file names, other labels: each character's drawings are the other character's.
    swapped = dict(reversed(list(CHARACTERS.items())))
    c = make_class_tree(tmp_path / "c" / "omni", swapped, mode="L")
    assert sorted(p.relative_to(c) for p in c.rglob("*.png")) == sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert tree_fingerprint(c) != tree_fingerprint(a)

    moved = _copy(a, tmp_path / "d" / "omni")  # one drawing filed under another character
    (moved / "Latin/character01/00.png").rename(moved / "Latin/character02/09.png")
    assert tree_fingerprint(moved) != tree_fingerprint(a)


def test_an_annotation_file_edited_in_place_changes_it(tmp_path: Path, make_cub) -> None:
    cub = make_cub(tmp_path / "a")
    before = tree_fingerprint(cub)
    labels = cub / "image_class_labels.txt"
    text = labels.read_text()
    swapped = text.replace(" 1\n", " X\n").replace(" 2\n", " 1\n").replace(" X\n", " 2\n")
    assert swapped != text and len(swapped) == len(text)  # the same size: only the content tells
    labels.write_text(swapped)
    assert tree_fingerprint(cub) != before


def test_in_memory_digits_are_known_by_their_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.datasets import load_digits

    from dml_core.data import digits

    cfg = DataConfig.of(name="digits")
    first = data_fingerprint(cfg)
    assert data_fingerprint(cfg) == first and len(first) == 32
    bunch = load_digits()
    relabelled = (bunch.target + 1) % 10  # other labels for the same images

    monkeypatch.setattr(digits, "load_digit_images", lambda name: (bunch.images, relabelled))
    assert data_fingerprint(cfg) != first


def test_a_root_is_read_once_per_holder(tmp_path: Path, make_class_tree, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_class_tree(tmp_path / "omni", CHARACTERS, mode="L")
    calls: list[str] = []
    real = fp.tree_fingerprint
    monkeypatch.setattr(fp, "tree_fingerprint", lambda root: calls.append(root) or real(root))
    held = Fingerprints()
    cfgs = [DataConfig.of(name="omniglot", root=str(a), image_size=16 + i) for i in range(3)]
    assert len({held.of(c) for c in cfgs}) == 1 and len(calls) == 1
    assert Fingerprints().of(cfgs[0]) == held.of(cfgs[0]) and len(calls) == 2  # a new holder reads again


# ----------------------------------------------------------------------------- reuse through the key

SWEEP: dict[str, Any] = {
    "name": "fp", "seed": 0,
    "data": {"name": "omniglot", "root": "${DML_DATA}/omni", "image_size": 16,
             "batch": {"classes_per_batch": 2, "samples_per_class": 2}},
    "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 8, "embedding_dim": 16},
    "loss": {"name": "multi_similarity"},
    "train": {"epochs": 1, "iterations_per_epoch": 2, "num_threads": 1},
    "eval": {"clustering": False},
    "sweep": {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1]},
}


def _finished_sweep(plan: Any, sweep_dir: Path) -> None:
    from sweep.pending import identity
    from sweep.records import FINISHED, TrialRecord
    from sweep.store import SweepLog

    log = SweepLog.create(sweep_dir, sweep_dir.name)
    for spec in plan.final_trials():
        ident = identity(plan, spec)
        log.add(TrialRecord(trial_id="", key=spec.key, phase=spec.phase, cell=spec.cell, seed=spec.seed,
                            status=FINISHED, metrics={"recall_at_1": 0.9, "epoch": 1.0}, config=ident.config,
                            content_key=ident.content_key))


def _reused(plan: Any, sweep_dir: Path) -> tuple[int, int]:
    """(trials answered from the store, trials to train) for a new sweep of `plan`."""
    from sweep.pending import final_work, identity
    from sweep.store import SweepLog

    log = SweepLog.create(sweep_dir, sweep_dir.name)
    specs = plan.final_trials()
    work = final_work(plan, log, specs, {s.key: identity(plan, s) for s in specs}, reuse=True, retry_failed=False)
    return len(work.reuse), len(work.run)


@pytest.mark.parametrize("layout", ["omniglot", "image_folder"])
def test_the_same_data_under_another_dml_data_reuses_everything_other_labels_nothing(
        tmp_path: Path, make_class_tree, monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    from sweep.plan import load_plan

    classes = CHARACTERS if layout == "omniglot" else {k.replace("/", "_"): v for k, v in CHARACTERS.items()}
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "data": {**SWEEP["data"], "name": layout}}, sort_keys=False))
    monkeypatch.setenv("DML_TRIAL_STORE", str(tmp_path / "trials.sqlite"))
    make_class_tree(tmp_path / "node1" / "omni", classes, mode="L")
    _copy(tmp_path / "node1", tmp_path / "node2")
    make_class_tree(tmp_path / "other" / "omni", dict(reversed(list(classes.items()))), mode="L")

    monkeypatch.setenv("DML_DATA", str(tmp_path / "node1"))
    _finished_sweep(load_plan(path), tmp_path / "sweeps" / "first")
    monkeypatch.setenv("DML_DATA", str(tmp_path / "node2"))  # a copy: every trial answered from the store
    assert _reused(load_plan(path), tmp_path / "sweeps" / "copy") == (4, 0)
    monkeypatch.setenv("DML_DATA", str(tmp_path / "other"))  # same names, other labels: nothing reused
    assert _reused(load_plan(path), tmp_path / "sweeps" / "other") == (0, 4)
    monkeypatch.setenv("DML_DATA", str(tmp_path / "node1"))
    assert _reused(load_plan(path), tmp_path / "sweeps" / "again") == (4, 0)


def test_a_missing_root_is_one_line_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.pending import identity
    from sweep.plan import load_plan
    from sweep.spec import SweepError

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    monkeypatch.setenv("DML_DATA", str(tmp_path / "nowhere"))
    plan = load_plan(path)
    with pytest.raises(SweepError, match=r"nowhere/omni: not a folder") as e:
        identity(plan, plan.final_trials()[0])
    assert "\n" not in str(e.value) and str(path) in str(e.value)



def test_resuming_a_sweep_whose_data_changed_under_the_same_path_is_refused(
        tmp_path: Path, make_class_tree, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.pending import check_growth, identity
    from sweep.plan import load_plan
    from sweep.spec import SweepError
    from sweep.store import SweepLog

    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    monkeypatch.setenv("DML_TRIAL_STORE", str(tmp_path / "trials.sqlite"))
    monkeypatch.setenv("DML_DATA", str(tmp_path / "data"))
    tree = make_class_tree(tmp_path / "data" / "omni", CHARACTERS, mode="L")
    _finished_sweep(load_plan(path), tmp_path / "sweeps" / "s")
    shutil.rmtree(tree)
    make_class_tree(tree, dict(reversed(list(CHARACTERS.items()))), mode="L")  # other labels, same names
    plan, log = load_plan(path), SweepLog.open(tmp_path / "sweeps" / "s")
    specs = plan.final_trials()
    ids = {s.key: identity(plan, s) for s in specs}
    with pytest.raises(SweepError, match=r"x\.yaml: the data \(what its data roots hold\) changes 4 trials this sweep"):
        check_growth(plan, log, specs, ids, restart_changed=False)
    assert len(check_growth(plan, log, specs, ids, restart_changed=True)) == 4  # then they run afresh

"""`dml_core.train` and `dml_core.embed` under concurrent starts, hostile or damaged checkpoints,
unwritable outputs, diverged models and odd image folders."""
from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from dml_core import embed as embed_cli
from dml_core import train as train_cli
from faults_testlib import CreatesAFile, one_error_line, run_together, start_together, tiny, write_yaml


def _cli(main: Callable[[list[str]], Any], argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def train(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    return _cli(train_cli.main, argv, capsys)


def embed(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    return _cli(embed_cli.main, argv, capsys)


# ------------------------------------------------------------------ ownership


def test_two_runs_started_together_on_one_out(tmp_path: Path) -> None:
    """Both used to exit 0 printing the same run dir, the second's files replacing the first's."""
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny())
    out = tmp_path / "run"
    argvs = [[str(cfg), "--out", str(out), "--set", f"seed={seed}"] for seed in (1, 2)]
    results = run_together("dml_core.train:main", argvs, tmp_path)
    assert sorted(r.returncode for r in results) == [0, 2], [r.stderr for r in results]
    winner, loser = sorted(results, key=lambda r: r.returncode)
    line = one_error_line(loser.stderr)
    assert line.startswith(f"dml_core.train: error: {out}: in use by pid ") and " on " in line
    seed = 1 if winner is results[0] else 2
    assert f"seed: {seed}" in (out / "config.yaml").read_text()  # the winner's files, untouched
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"


def test_resume_after_kill_9_is_not_blocked_by_the_dead_runs_lock(tmp_path: Path, capsys) -> None:
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny(train={"epochs": 200}))
    out = tmp_path / "run"
    [proc] = start_together("dml_core.train:main", [[str(cfg), "--out", str(out)]], tmp_path)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert proc.exitcode is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no cleanup of any kind runs
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    epoch = torch.load(out / "checkpoint.pt", weights_only=True)["epoch"]
    rc, err = train([str(cfg), "--out", str(out), "--resume", str(out), "--set", f"train.epochs={epoch + 2}"], capsys)
    assert rc == 0, err
    assert json.loads((out / "metrics.json").read_text())["history"][-1]["epoch"] == epoch + 2


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_an_out_that_cannot_be_created_is_one_line(tmp_path: Path, capsys, where: str, image_tree: Path,
                                                   trained_run: Path) -> None:
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "run" if where == "under_a_file" else Path("/proc/dml-faults/run")
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny())
    rc, err = train([str(cfg), "--out", str(bad)], capsys)
    assert rc == 2 and one_error_line(err).startswith(f"dml_core.train: error: {bad}: cannot create")
    rc, err = embed([str(trained_run), str(image_tree), "-o", str(bad / "e.parquet")], capsys)
    assert rc == 2 and one_error_line(err).startswith(f"dml_core.embed: error: {bad}: cannot create")


# ------------------------------------------------------------------ checkpoints


def _planted_run(tmp_path: Path, trained_run: Path, checkpoint: bytes | None = None) -> Path:
    run = tmp_path / "planted"
    shutil.copytree(trained_run, run)
    if checkpoint is not None:
        (run / "checkpoint.pt").write_bytes(checkpoint)
    return run


@pytest.mark.parametrize("form", ["torch_save", "plain_pickle"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path, trained_run: Path, image_tree: Path, capsys,
                                                     form: str) -> None:
    marker = tmp_path / "pwned"
    run = _planted_run(tmp_path, trained_run)
    ckpt = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    ckpt["history"] = CreatesAFile(marker)
    if form == "torch_save":
        torch.save(ckpt, run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").write_bytes(pickle.dumps(ckpt, protocol=2))  # the protocol torch.save uses
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny(train={"epochs": 2}))
    for rc, err, prog in [(*embed([str(run), str(image_tree), "-o", str(tmp_path / "e.parquet")], capsys), "embed"),
                          (*train([str(cfg), "--resume", str(run), "--out", str(tmp_path / "r")], capsys), "train")]:
        assert rc == 2, err
        line = one_error_line(err)
        assert line.startswith(f"dml_core.{prog}: error: {run / 'checkpoint.pt'}: refused to load"), line
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "empty"])
def test_a_damaged_checkpoint_is_one_line(tmp_path: Path, trained_run: Path, image_tree: Path, capsys,
                                          damage: str) -> None:
    whole = (trained_run / "checkpoint.pt").read_bytes()
    data = {"truncated": whole[: len(whole) // 2], "random_bytes": os.urandom(4096), "empty": b""}[damage]
    run = _planted_run(tmp_path, trained_run, data)
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny(train={"epochs": 2}))
    for rc, err, prog in [(*embed([str(run), str(image_tree), "-o", str(tmp_path / "e.parquet")], capsys), "embed"),
                          (*train([str(cfg), "--resume", str(run), "--out", str(tmp_path / "r")], capsys), "train")]:
        assert rc == 2, err
        assert one_error_line(err).startswith(f"dml_core.{prog}: error: {run / 'checkpoint.pt'}: not a readable checkpoint")


def test_resume_with_other_shapes_is_one_line(tmp_path: Path, trained_run: Path, capsys) -> None:
    cfg = write_yaml(tmp_path / "tiny.yaml", tiny(train={"epochs": 2}))
    rc, err = train([str(cfg), "--resume", str(trained_run), "--out", str(tmp_path / "r"),
                     "--set", "model.embedding_dim=8"], capsys)
    assert rc == 2
    line = one_error_line(err)
    assert line.startswith(f"dml_core.train: error: {trained_run / 'checkpoint.pt'}: its model does not fit this config")
    assert "size mismatch for head" in line


def test_checkpoints_hold_only_plain_data_and_resume_the_rng(tmp_path: Path) -> None:
    import random

    import numpy as np

    from dml_core.training.checkpoint import rng_state, set_rng_state

    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    state = rng_state()
    torch.save(state, tmp_path / "s.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# ------------------------------------------------------------------ silent wrongs


def test_a_diverged_model_fails_as_non_finite_not_as_an_evaluation_error() -> None:
    """SGD at lr 1e30: the one step's loss is finite, the weights overflow, the embeddings are NaN."""
    from dml_core.config import config_from_dict
    from dml_core.training import NonFiniteLossError, fit

    cfg = config_from_dict(tiny(optimizer={"name": "sgd", "lr": 1e30}, train={"iterations_per_epoch": 1}), "nan")
    with pytest.raises(NonFiniteLossError, match="non-finite embeddings"):
        fit(cfg)


def test_a_directory_link_inside_a_class_is_not_a_class(tmp_path: Path, image_tree: Path, caplog) -> None:
    from dml_core.data.layout import scan_class_tree

    root = tmp_path / "tree"
    shutil.copytree(image_tree, root)
    (root / "c2" / "self").symlink_to("../c2", target_is_directory=True)
    (root / "c9").symlink_to(root / "c1", target_is_directory=True)  # a second name for a class
    outside = tmp_path / "elsewhere" / "c7"
    shutil.copytree(image_tree / "c3", outside)
    (root / "c7").symlink_to(outside, target_is_directory=True)  # data kept elsewhere: followed
    with caplog.at_level(logging.WARNING, logger="dml_core.data.layout"):
        paths, classes = scan_class_tree(root, "data.root")
    assert sorted(set(classes)) == ["c0", "c1", "c2", "c3", "c7"]
    assert len(paths) == len(set(map(os.path.realpath, paths))) == 25
    skipped = sorted(r.getMessage().split(":")[0] for r in caplog.records)
    assert skipped == [str(root / "c2" / "self"), str(root / "c9")]


@pytest.mark.parametrize("layout", ["classes_plus_a_loose_image", "flat_folder"])
def test_embed_refuses_what_training_refuses(tmp_path: Path, trained_run: Path, image_tree: Path, capsys,
                                             layout: str) -> None:
    """Embedding a folder of class folders plus one loose image embedded only that image."""
    root = tmp_path / "tree"
    if layout == "flat_folder":
        root.mkdir()
        for p in (image_tree / "c0").iterdir():
            shutil.copy(p, root / p.name)
    else:
        shutil.copytree(image_tree, root)
        shutil.copy(image_tree / "c0" / "0.png", root / "loose.png")
    cfg = write_yaml(tmp_path / "t.yaml", tiny(data={"name": "image_folder", "root": str(root), "image_size": 8}))
    rc_t, err_t = train([str(cfg), "--out", str(tmp_path / "r")], capsys)
    rc_e, err_e = embed([str(trained_run), str(root), "-o", str(tmp_path / "e.parquet")], capsys)
    assert rc_t == rc_e == 2
    why_t = one_error_line(err_t).split(": error: ", 1)[1]
    why_e = one_error_line(err_e).split(": error: ", 1)[1]
    assert "image directly in" in why_t
    assert why_e == why_t.replace("data.root", "image folder")
    assert not (tmp_path / "e.parquet").exists()

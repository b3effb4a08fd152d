"""Atomic writes and directory ownership at the file level (no training)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faults_testlib import REPO, env, run_together

def test_two_processes_filling_one_feature_cache_both_succeed(tmp_path: Path) -> None:
    """The cache exists for trials that share it; a fixed `<file>.tmp` name made one writer's
    rename fail (or publish the other's half-written file) when two filled it at once."""
    target = tmp_path / "cache" / "k-train.parquet"
    target.parent.mkdir()
    results = run_together("faults_testlib:fill_feature_cache", [[str(target), "1"], [str(target), "2"]], tmp_path)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    from dml_core.training.features import _read

    feats, labels = _read(target)
    assert feats.shape == (64, 32) and len(set(labels.tolist())) == 1  # one writer's file, whole
    seed = int(labels[0])
    assert np.array_equal(feats, np.random.default_rng(seed).normal(size=(64, 32)).astype("float32"))
    assert os.listdir(target.parent) == [target.name]  # no temporary left behind


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    from dml_core.io import atomic_write_bytes, atomic_write_json, read_json

    path = tmp_path / "m.json"
    atomic_write_json(path, {"status": "finished", "x": np.float32(0.5)})

    def half(f):
        f.write(b'{"status": "runn')
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write_bytes(path, half)
    assert read_json(path) == {"status": "finished", "x": 0.5}
    assert os.listdir(tmp_path) == ["m.json"]


def test_a_second_owner_is_refused_with_the_holders_pid_and_host(tmp_path: Path) -> None:
    from dml_core.io import DirectoryInUseError, DirectoryLock

    with DirectoryLock(tmp_path / "run"):
        with pytest.raises(DirectoryInUseError) as info:
            DirectoryLock(tmp_path / "run").acquire()
    assert f"pid {os.getpid()} on {socket.gethostname()}" in str(info.value)
    assert "\n" not in str(info.value)
    with DirectoryLock(tmp_path / "run"):  # released on exit
        pass


def test_the_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    """flock dies with its process: after `kill -9` the directory can be taken (e.g. --resume)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dml_core.io import DirectoryLock; "
         "lock = DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(tmp_path / "run")],
        cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    from dml_core.io import DirectoryInUseError, DirectoryLock

    with pytest.raises(DirectoryInUseError, match=f"pid {holder.pid} "):
        DirectoryLock(tmp_path / "run").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with DirectoryLock(tmp_path / "run"):
        pass


def test_a_directory_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    from dml_core.io import PathError, make_dir

    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "run", Path("/proc/dml-faults/run")):
        with pytest.raises(PathError, match=f"^{bad}: cannot create this directory") as info:
            make_dir(bad)
        assert "\n" not in str(info.value)

"""Issue 29, family 4 (second half): after `kill -9` of a driver, each in-flight trial's
`dml-trial-*` folder (with a checkpoint in it) stayed in the system's temporary folder for good.
Now a trial's scratch folder names the process that made it, and the next sweep (each trial as it
starts, and the driver before Ray starts) removes those whose process is gone."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_scratch_folders_of_dead_processes_are_removed_and_no_others(tmp_path: Path, monkeypatch) -> None:
    from sweep.trainable import clean_stale_scratch, scratch_dir

    gone = dead_pid()
    stale = [tmp_path / f"dml-trial-{gone}-abc", tmp_path / f"dml-folds-{gone}-def"]
    for d in stale:
        (d / "run").mkdir(parents=True)
        (d / "run" / "checkpoint.pt").write_bytes(b"weights")
    live = tmp_path / f"dml-trial-{os.getpid()}-xyz"  # a trial running now
    other = [tmp_path / "dml-trial-q1w2e3", tmp_path / f"pytest-{gone}-x", tmp_path / f"dml-trial-{gone}-file"]
    live.mkdir()
    other[0].mkdir()
    other[1].mkdir()
    other[2].write_text("not a folder")
    link = tmp_path / f"dml-trial-{gone}-link"
    link.symlink_to(live)

    assert sorted(clean_stale_scratch(tmp_path)) == sorted(stale)
    assert not any(d.exists() for d in stale)
    assert live.is_dir() and all(p.exists() for p in other) and link.is_symlink()

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch_dir() as work:  # what a trial makes: named by its process, kept while it lives
        assert Path(work).parent == tmp_path and Path(work).name.startswith(f"dml-trial-{os.getpid()}-")
        assert clean_stale_scratch() == []
        assert Path(work).is_dir()

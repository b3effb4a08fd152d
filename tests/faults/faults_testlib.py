"""Shared by the fault tests: a tiny digits experiment, CLIs in real processes, and processes
released by one barrier at the same instant (concurrent starts)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

# The digits experiment at its smallest: a run takes about a second once torch is imported.
TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "digits", "image_size": 16, "crop_scale": [0.6, 1.0], "horizontal_flip": False,
             "batch": {"classes_per_batch": 3, "samples_per_class": 4}},
    "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 8, "embedding_dim": 16},
    "loss": {"name": "multi_similarity"},
    "optimizer": {"name": "adam", "lr": 0.003},
    "train": {"epochs": 1, "eval_every": 1, "iterations_per_epoch": 2, "num_threads": 1},
    "eval": {"clustering": False},
}


def tiny(**sections: Any) -> dict[str, Any]:
    raw = copy.deepcopy(TINY)
    for name, value in sections.items():
        raw[name] = {**raw[name], **value} if isinstance(raw.get(name), dict) else value
    return raw


def write_yaml(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_cli(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env())


def _released_child(barrier: Any, main: str, argv: list[str], out: str, cwd: str) -> None:
    import importlib

    os.chdir(cwd)
    for fd, name in ((1, f"{out}.stdout"), (2, f"{out}.stderr")):  # fd level: Ray and C code too
        f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    module, func = main.split(":")
    entry = getattr(importlib.import_module(module), func)
    barrier.wait()
    try:
        rc = entry(argv)
    except SystemExit as e:
        rc = e.code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 1)


@dataclass
class Released:
    returncode: int
    stdout: str
    stderr: str


# Imported once by the fork server (first use of `run_together` in a session).
PRELOAD = ["dml_core.training", "dml_core.train", "sweep.run", "faults_testlib"]


def start_together(main: str, argvs: list[list[str]], cwd: Path) -> list[Any]:
    """Start `main` ("module:function", called with argv like a CLI) in one process per argv, all
    released at once by a barrier. The processes fork from one server that imported `PRELOAD`
    (torch, the CLIs) once, so the start-up cost is paid once and the work starts together.
    Each process's stdout/stderr go to `cwd/proc<i>.stdout|stderr`."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    barrier = ctx.Barrier(len(argvs))
    procs = [ctx.Process(target=_released_child, args=(barrier, main, argv, str(cwd / f"proc{i}"), str(cwd)))
             for i, argv in enumerate(argvs)]
    for p in procs:
        p.barrier = barrier  # keeps it alive until the children have unpickled it
        p.start()
    return procs


def run_together(main: str, argvs: list[list[str]], cwd: Path, timeout: float = 300) -> list[Released]:
    """`start_together`, then wait for all: their exit status and output."""
    procs = start_together(main, argvs, cwd)
    for p in procs:
        p.join(timeout)
        if p.exitcode is None:
            p.kill()
            raise AssertionError(f"{main} {argvs}: still running after {timeout} s")
    return [Released(p.exitcode, (cwd / f"proc{i}.stdout").read_text(), (cwd / f"proc{i}.stderr").read_text())
            for i, p in enumerate(procs)]


class CreatesAFile:
    """Unpickling this calls open(marker, "w"): stands for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def call_cli(main: Any, argv: list[str], capsys: Any) -> tuple[int, str]:
    """A CLI's `main(argv)` in this process: (exit status, stderr)."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def truncated_pngs(root: Path, classes: int = 6, per_class: int = 8) -> Path:
    """Class folders of PNGs cut in half: they pass the dataset index (the header is whole) and
    fail when decoded."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            png = root / f"c{c}" / f"{i}.png"  # noise: half of it still holds the whole header
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(png)
            png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return root


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def fill_feature_cache(argv: list[str]) -> int:
    """A trial filling the feature cache: write the split's file 30 times (argv: path, seed)."""
    import numpy as np

    from dml_core.training.features import _write

    path, seed = Path(argv[0]), int(argv[1])
    feats = np.random.default_rng(seed).normal(size=(64, 32)).astype("float32")
    for _ in range(30):
        _write(path, feats, np.full(64, seed))
    return 0


def open_tracker(argv: list[str]) -> int:
    """A sweep driver's first touch of its MLflow store (argv: tracking URI, experiment): the
    store is created (or migrated) and the experiment made; prints the experiment id."""
    from sweep.tracker import Tracker

    print(Tracker(argv[0], argv[1]).experiment_id, flush=True)
    return 0


def sweep_with_full_disk(argv: list[str]) -> int:
    """`sweep.run:main(argv[1:])` on a disk that fills up at the driver's `argv[0]`-th write to the
    trial store: that write and every later one fail as SQLite fails on a full disk ("database or
    disk is full"). Trials run in Ray's worker processes and write as usual."""
    import sqlite3

    from sweep.store import TrialStore

    failing_from, writes = int(argv[0]), [0]

    class FullDisk:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: object) -> object:
            if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                writes[0] += 1
                if writes[0] >= failing_from:
                    raise sqlite3.OperationalError("database or disk is full")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

    real_conn = TrialStore.conn
    TrialStore.conn = property(lambda self: FullDisk(real_conn.fget(self)))  # this process (the driver) only
    from sweep.run import main

    return main(argv[1:])


def sweep_with_store_removed(argv: list[str]) -> int:
    """`sweep.run:main(argv)` whose trial store is removed (`rm trials.sqlite*`) right after the
    driver recorded its first finished trial, as a person cleaning up might."""
    from sweep.store import SweepLog

    real_add, removed = SweepLog.add, []

    def add(self: SweepLog, record: Any) -> Any:
        out = real_add(self, record)
        if record.status == "FINISHED" and not removed:
            removed.extend(self.store.path.parent.glob(self.store.path.name + "*"))
            for f in removed:
                f.unlink()
        return out

    SweepLog.add = add
    from sweep.run import main

    return main(argv)


def sweep_with_mlflow_locked(argv: list[str]) -> int:
    """`sweep.run:main(argv[1:])` while the MLflow database `argv[0]` is locked (an exclusive write
    transaction, as a backup or another program's long write holds it) from the driver's first
    trial record to the driver's exit, with MLflow's waits shortened to seconds."""
    import sqlite3
    import threading

    from sweep import mlflow_writer
    from sweep.store import SweepLog

    mlflow_writer.BUSY_WAIT_S, mlflow_writer.CATCH_UP_S = 2.0, 3.0
    real_add, held = SweepLog.add, threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(argv[0], isolation_level=None, timeout=60)
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        threading.Event().wait()  # until the process exits

    def add(self: SweepLog, record: Any) -> Any:
        if not held.is_set():
            threading.Thread(target=hold, daemon=True).start()
            held.wait(60)
        return real_add(self, record)

    SweepLog.add = add
    from sweep.run import main

    return main(argv[1:])

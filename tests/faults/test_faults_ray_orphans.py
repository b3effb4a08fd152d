"""Issue 29, family 4: after `kill -9` of a sweep driver that started its own local Ray, the raylet's
agents (dashboard and runtime-env agents) stayed about 70 s as orphans. Now a watchdog outside
Ray's process tree ends what is left of that cluster within seconds of the driver's death, and a
next sweep kills what a killed watchdog left (`kill_stale_clusters`)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import ray  # noqa: F401 -- puts Ray's vendored psutil on the path
import psutil
import pytest

from tests.faults.faults_testlib import REPO, env, tiny, write_yaml

BOUND_S = 15  # the watchdog acts at once; Ray's own worker checks take a few seconds more


def _alive(procs: list[psutil.Process]) -> list[str]:
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{p.pid} {p.name()}")
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.mark.timeout(300)
def test_kill_9_of_a_driver_leaves_no_process_of_its_ray_session(tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "long.yaml", {**tiny(train={"epochs": 500, "eval_every": 1}), "sweep": {"seeds": [0]}})
    out = tmp_path / "sweep"
    driver = subprocess.Popen([sys.executable, "sweep/run.py", str(cfg), "--out", str(out)], cwd=REPO, env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("checkpoints/*.pt")):  # a trial is training in the driver's Ray
            assert driver.poll() is None, driver.stderr.read()
            assert time.monotonic() < deadline, "no trial checkpointed in time"
            time.sleep(0.5)
        session = psutil.Process(driver.pid).children(recursive=True)
        names = " ".join(p.name() for p in session)
        assert "raylet" in names and "ray::" in names, names  # the trial runs in the driver's own local Ray
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    deadline = time.monotonic() + BOUND_S
    while _alive(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(session), f"left {BOUND_S} s after the driver's kill -9: {_alive(session)}"


def test_the_next_sweep_kills_what_a_dead_drivers_ledger_names(tmp_path: Path) -> None:
    from sweep.local_ray import kill_stale_clusters

    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        started = psutil.Process(orphan.pid).create_time()
        (tmp_path / f"dml-ray-{gone.pid}.json").write_text(json.dumps({orphan.pid: started, bystander.pid: started - 50}))
        live_ledger = tmp_path / f"dml-ray-{bystander.pid}.json"  # a driver alive now: its cluster is not ours to end
        live_ledger.write_text(json.dumps({orphan.pid: started}))
        assert kill_stale_clusters(tmp_path) == 1
        assert orphan.wait(10) == -signal.SIGKILL
        assert bystander.poll() is None  # same pid, another start time: a process the ledger never saw
        assert not (tmp_path / f"dml-ray-{gone.pid}.json").exists() and live_ledger.exists()
    finally:
        for p in (orphan, bystander):
            p.kill()
            p.wait()

"""The driver's Ray: join a cluster, or start a local one that does not outlive the driver.

Ray ties the processes a driver starts directly (GCS, raylet, monitors) to it (`PR_SET_PDEATHSIG`),
but the raylet's own children (dashboard and runtime-env agents) are orphaned when a driver is
`kill -9`ed and linger for about a minute. A watchdog outside Ray's process tree (this module run as
a script) notes the local cluster's processes while the driver lives and kills what is left of them
as soon as the driver's end of its pipe closes -- however the driver died. It also writes what it
tracks to the temporary folder, so that the next sweep kills what a watchdog killed with its driver
could not (`kill_stale_clusters`).
"""
from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

_PREFIX = "dml-ray-"  # <tmp>/dml-ray-<driver pid>.json: the processes of that driver's local Ray
_POLL_S = 0.5  # how often the watchdog notes new processes of the cluster (workers start on demand)
_watchdog: Optional[subprocess.Popen] = None  # held: its stdin pipe is the driver's life line


def ray_address(address: Optional[str]) -> str:
    """--address > $RAY_ADDRESS > a new local instance. Plain `ray.init()` would attach to any Ray
    instance already running on this machine (another user's, or a stale one), so say "local"."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def start_ray(address: Optional[str], verbose: int) -> None:
    """Join the cluster `address` names, or start a local Ray that dies with this process."""
    import ray

    from dml_core.cli import sigterm_as_ctrl_c

    if ray.is_initialized():
        return
    where = ray_address(address)
    if where == "local":
        kill_stale_clusters()
    ray.init(address=where, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=verbose > 0)
    sigterm_as_ctrl_c()  # ray.init replaced the driver's SIGTERM handler
    if where == "local":
        from sweep.compat import local_node_pids

        _watch(local_node_pids())


def _watch(roots: list[int]) -> None:
    global _watchdog
    if _watchdog is not None and _watchdog.poll() is None:
        _watchdog.stdin.close()  # the previous local cluster of this process (ray.shutdown, then init)
    _watchdog = subprocess.Popen(
        [sys.executable, "-m", "sweep.local_ray", str(os.getpid()), *map(str, roots)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[1], start_new_session=True,  # not in the driver's Ctrl-C
    )


def _ledger(driver: int, tmp: Optional[Path] = None) -> Path:
    return Path(tmp or tempfile.gettempdir()) / f"{_PREFIX}{driver}.json"


def _tree(psutil: Any, roots: list[int]) -> dict[int, float]:
    """pid -> start time of `roots` and their descendants that are alive."""
    found: dict[int, float] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            for p in (root, *root.children(recursive=True)):
                found[p.pid] = p.create_time()
        except psutil.Error:
            continue
    return found


def _kill(psutil: Any, tracked: dict[int, float]) -> None:
    """SIGKILL what is still alive of `tracked`; a pid reused since (another start time) is spared."""
    for pid, started in tracked.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.01:
                p.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue


def kill_stale_clusters(tmp: Optional[Path] = None) -> int:
    """Kill the processes of local Ray clusters whose driver is gone and whose watchdog did not
    finish (it was killed too); returns how many ledgers were settled."""
    import ray  # noqa: F401 -- puts Ray's vendored psutil on the path
    import psutil

    settled = 0
    for ledger in Path(tmp or tempfile.gettempdir()).glob(f"{_PREFIX}*.json"):
        try:
            if ledger.stat().st_uid != os.getuid() or psutil.pid_exists(int(ledger.stem[len(_PREFIX):])):
                continue
            tracked = {int(k): float(v) for k, v in json.loads(ledger.read_text()).items()}
        except (OSError, ValueError):
            continue
        _kill(psutil, tracked)
        ledger.unlink(missing_ok=True)
        settled += 1
    return settled


def _run_watchdog(driver: int, roots: list[int]) -> None:
    """Until the driver's pipe closes: note the cluster's processes; then kill what is left of them.
    A cluster that ended while the driver lives (`ray.shutdown`) ends the watch."""
    import ray  # noqa: F401 -- puts Ray's vendored psutil on the path
    import psutil

    ledger, tracked = _ledger(driver), {}
    while True:
        seen = _tree(psutil, roots)
        if seen.keys() - tracked.keys():
            tracked |= seen
            ledger.write_text(json.dumps(tracked))
        if select.select([sys.stdin], [], [], _POLL_S)[0] and not os.read(sys.stdin.fileno(), 1):
            break  # EOF: the driver is gone, or let go of this cluster
        if not any(pid in seen for pid in roots):
            break
    _kill(psutil, tracked)
    ledger.unlink(missing_ok=True)


if __name__ == "__main__":
    _run_watchdog(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])

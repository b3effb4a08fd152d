"""Helpers for the cluster tests (the fixtures are in conftest.py): the handles of a real
multi-node Ray cluster and of a real MLflow server, both on 127.0.0.1 only.

The Ray "nodes" are separate raylets (one per `add_node`) sharing one GCS, exactly as on a cloud
cluster but on one machine. GPUs are logical: each worker declares `num_gpus=1`, so fractional GPU
requests are packed by Ray's scheduler as they would be on g5 workers, while the trainer itself
falls back to the CPU (no CUDA here).
"""
from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# Ray rewrites a 127.0.0.1 address to the machine's LAN address (multi-node mode) unless this is
# off; with it off every Ray process started from such an environment stays on loopback.
LOOPBACK_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    """A `ray.cluster_utils.Cluster` on loopback plus the temp dir that isolates it."""

    cluster: Any
    workers: list[Any]
    temp_dir: Path  # RAY_TMPDIR of every process of this cluster (session logs, address file)

    @property
    def address(self) -> str:
        return self.cluster.address

    def driver_env(self) -> dict[str, str]:
        """What a driver process (the sweep) needs in its environment to join over loopback."""
        return {**LOOPBACK_RAY_ENV, "RAY_TMPDIR": str(self.temp_dir)}

    def add_worker(self, **resources: Any) -> Any:
        node = self.cluster.add_node(node_ip_address=LOOPBACK, **resources)
        self.cluster.wait_for_nodes()
        return node

    def node_of_pid(self) -> dict[int, str]:
        """pid -> node id of every actor the cluster has run (dead ones included): Tune's results
        carry the trial process's `pid`, GCS's actor table knows on which node that process ran."""
        actors = self.cluster.global_state.actor_table(None)
        return {a["Pid"]: a["Address"]["NodeID"] for a in actors.values() if a["Pid"]}


@dataclass
class MlflowServer:
    uri: str
    state_dir: Path


def stop_process_group(pgid: int, timeout: float = 15.0) -> None:
    """SIGTERM the group (the server and its uvicorn workers), SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)

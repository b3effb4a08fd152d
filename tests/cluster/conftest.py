"""Fixtures for the cluster tests: a real multi-node Ray cluster and a real MLflow server, both on
127.0.0.1 only, both stopped by the fixture that started them (see cluster_harness.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from cluster_harness import LOOPBACK, LOOPBACK_RAY_ENV, REPO_ROOT, LocalCluster, MlflowServer, free_port, stop_process_group


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[LocalCluster]:
    """Head (0 CPUs: trials never land there, as in cluster.yaml) + 2 workers with 2 CPUs and one
    logical GPU each. Module-scoped: starting ~10 Ray processes costs seconds on 2 cores."""
    from ray.cluster_utils import Cluster

    # Short private temp dir: Ray writes the cluster address to <RAY_TMPDIR>/ray/ray_current_cluster,
    # where a plain `ray.init()` elsewhere on this machine would otherwise find and join this cluster.
    temp_dir = Path(tempfile.mkdtemp(prefix="dmlc", dir="/tmp"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", str(temp_dir))
        for key, value in LOOPBACK_RAY_ENV.items():
            mp.setenv(key, value)
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False},
            shutdown_at_exit=True,
        )
        local = LocalCluster(cluster, [], temp_dir)
        try:
            for _ in range(2):
                local.workers.append(cluster.add_node(num_cpus=2, num_gpus=1, node_ip_address=LOOPBACK))
            cluster.wait_for_nodes()
            yield local
        finally:
            cluster.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` (sqlite backend, local artifact store) started by the head node's own
    start script, cluster/start_mlflow.sh, listening on 127.0.0.1 only."""
    state = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_HOST": LOOPBACK,
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "DML_MLFLOW_DIR": str(state),
        "DML_MLFLOW_ARTIFACTS": str(state / "artifacts"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    started = subprocess.run(
        ["bash", str(REPO_ROOT / "cluster" / "start_mlflow.sh")], env=env, capture_output=True, text=True, timeout=150
    )
    pid_file = state / "server.pid"
    try:
        assert started.returncode == 0, f"start_mlflow.sh failed:\n{started.stdout}\n{started.stderr}"
        yield MlflowServer(f"http://{LOOPBACK}:{port}", state)
    finally:
        if pid_file.is_file():
            stop_process_group(int(pid_file.read_text()))



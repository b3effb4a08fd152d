"""The unchanged sweep command on a real multi-node Ray cluster (loopback, one machine).

    python sweep/run.py experiments/quickstart.yaml --set ... --address <cluster>

runs as a subprocess against a head + GPU-worker cluster (conftest.py) while a real MLflow server
(started by cluster/start_mlflow.sh) receives the runs, exactly as `ray job submit` runs it on the
cloud cluster. Checked here: trials spread over worker nodes, fractional GPUs bound concurrency,
every trial reaches MLflow, and a worker lost mid-sweep costs a retry, not a trial.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from cluster_harness import REPO_ROOT, LocalCluster, MlflowServer

pytestmark = pytest.mark.slow

# Tiny trials: the 16-px digits quickstart for two short epochs. One import of torch per trial
# process dominates their cost on 2 cores, not the training.
TINY = [
    "--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "train.iterations_per_epoch=5",
    "--set", "train.num_threads=1", "--set", "eval.clustering=false",
    # The cluster's GPUs are Ray's logical resources on a CPU machine: a trial that asks for one
    # would be pinned to cuda before keying (sweep/plan.py), so the device is said outright.
    "--set", "train.device=cpu",
]


def sweep_command(name: str, seeds: int, gpu: float, cluster: LocalCluster) -> list[str]:
    return [
        sys.executable, "sweep/run.py", "experiments/quickstart.yaml", *TINY,
        "--set", f"sweep.name={name}", "--set", f"sweep.seeds={list(range(seeds))}",
        "--set", "sweep.resources_per_trial.cpu=0.5", "--set", f"sweep.resources_per_trial.gpu={gpu}",
        "--set", "sweep.max_failures=2",
        # One cell whatever the quickstart's sweep block grows into: the counts below are per seed.
        "--set", "sweep.grid={}", "--set", "sweep.arms={}", "--set", "sweep.baseline=null", "--set", "sweep.search=null",
        "--address", cluster.address,
    ]


def sweep_env(cluster: LocalCluster, mlflow: MlflowServer, storage: Path) -> dict[str, str]:
    # Tracking server and sweep storage come from the environment, as on the cloud cluster
    # (cluster/write_env.sh), never from the experiment.
    return {
        **os.environ, **cluster.driver_env(),
        "MLFLOW_TRACKING_URI": mlflow.uri,
        "DML_STORAGE_PATH": str(storage),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "RAY_AUTH_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
    }


def check_finished(proc: subprocess.CompletedProcess | subprocess.Popen, log: Path) -> None:
    assert proc.returncode == 0, f"sweep exited {proc.returncode}:\n{log.read_text()[-4000:]}"


def results_table(sweep_dir: Path) -> list[dict[str, Any]]:
    return pq.read_table(sweep_dir / "trials.parquet").to_pylist()


def tune_results(sweep_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    """Ray Tune's own per-trial record (one row per report), in the sweep directory."""
    path = sweep_dir / "final" / trial_id / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def child_runs(mlflow: MlflowServer, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=mlflow.uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} on {mlflow.uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("sweep.role") != "parent"]


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Largest number of [start, end) intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = open_ = 0
    for _, delta in events:  # ends sort before starts at equal times: touching is not overlapping
        open_ += delta
        best = max(best, open_)
    return best


def test_max_overlap_counts_concurrency() -> None:
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2
    assert max_overlap([(0, 1), (1, 2)]) == 1
    assert max_overlap([(0, 10), (1, 2), (3, 4), (3, 5)]) == 3


@pytest.mark.timeout(200)
def test_trial_bigger_than_any_node_is_refused_before_any_trial(
    ray_cluster: LocalCluster, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # Workers have 2 CPUs each, 4 in all: 3 CPUs per trial passes a check of the total but
    # would stay PENDING forever, since a trial runs on one node.
    command = [*sweep_command("too_big", 1, 0, ray_cluster), "--set", "sweep.resources_per_trial.cpu=3"]
    env = sweep_env(ray_cluster, mlflow_server, tmp_path)
    for extra in (["--dry-run"], []):
        proc = subprocess.run(command + extra, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=150)
        assert proc.returncode == 2, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "3 CPU + 0 GPU per trial fits no single node" in errors[0], proc.stderr[-3000:]
        assert "(2 CPU, 1 GPU" in errors[0]
    assert not (tmp_path / "too_big").exists(), "refused before the sweep directory (and any trial) exists"
    assert not any(mlflow_server_runs(mlflow_server, "too_big"))

    # The same cluster with its autoscaler's node types known (here the cluster YAML, as on the
    # head node): a node type that holds the trial may still come, so the sweep is not refused.
    config = tmp_path / "cluster.yaml"
    config.write_text("head_node_type: head\navailable_node_types:\n  head: {resources: {CPU: 0}, max_workers: 0}\n"
                      "  big: {resources: {CPU: 4, GPU: 1}, min_workers: 0, max_workers: 2}\n")
    proc = subprocess.run(command + ["--dry-run", "--cluster-config", str(config)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]


def mlflow_server_runs(mlflow: MlflowServer, experiment: str) -> list[Any]:
    client = MlflowClient(tracking_uri=mlflow.uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


@pytest.mark.timeout(200)
def test_sweep_spreads_over_nodes_with_fractional_gpus_and_reaches_mlflow(
    ray_cluster: LocalCluster, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # 2 workers x 1 GPU, 0.5 GPU per trial -> 4 trials at a time; 6 trials -> two waves.
    out, log = tmp_path / "cluster_spread", tmp_path / "sweep.log"
    with log.open("w") as f:
        proc = subprocess.run(sweep_command("cluster_spread", 6, 0.5, ray_cluster), cwd=REPO_ROOT,
                              env=sweep_env(ray_cluster, mlflow_server, tmp_path), stdout=f, stderr=subprocess.STDOUT,
                              timeout=180)
    check_finished(proc, log)
    assert (out / "trials.parquet").is_file(), "the sweep should land in $DML_STORAGE_PATH/<sweep name>"

    table = results_table(out)
    assert sorted(r["seed"] for r in table) == list(range(6))
    assert {r["status"] for r in table} == {"FINISHED"}

    # Where each trial ran: Tune's results carry the trial process's pid, GCS knows its node.
    node_of_pid = ray_cluster.node_of_pid()
    worker_ids = {n.node_id for n in ray_cluster.workers}
    node_of_trial = {}
    for row in table:
        pids = {r["pid"] for r in tune_results(out, row["trial_id"])}
        assert len(pids) == 1, f"trial {row['key']} reported from several processes {pids}"
        node_of_trial[row["trial_id"]] = node_of_pid[pids.pop()]
    assert set(node_of_trial.values()) == worker_ids, "trials should use both GPU workers and never the head"

    # Every trial reached the tracking server, from whichever node it ran on, with its metrics.
    runs = {r.data.tags["sweep.trial_id"]: r for r in child_runs(mlflow_server, "cluster_spread")}
    assert set(runs) == {r["trial_id"] for r in table}
    for row in table:
        run = runs[row["trial_id"]]
        assert run.info.run_id == row["mlflow_run_id"]
        assert run.info.status == "FINISHED"
        assert "epoch" not in run.data.metrics  # the epoch is the step (history below)
        assert run.data.metrics["recall_at_1"] == pytest.approx(row["recall_at_1"])
        history = MlflowClient(mlflow_server.uri).get_metric_history(run.info.run_id, "recall_at_1")
        assert [m.step for m in history] == [1, 2]

    # Fractional GPUs: the trial runs (start/end stamped by the driver as Tune starts and ends
    # each trial) overlap 4 at a time overall and 2 at a time per 1-GPU worker -- never more.
    spans = {tid: (r.info.start_time, r.info.end_time) for tid, r in runs.items()}
    assert max_overlap(list(spans.values())) == 4
    for node in worker_ids:
        on_node = [span for tid, span in spans.items() if node_of_trial[tid] == node]
        assert max_overlap(on_node) <= 2


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"sweep ended while waiting for {what}:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


@pytest.mark.timeout(200)
def test_losing_a_worker_mid_sweep_retries_its_trial_once(
    ray_cluster: LocalCluster, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    # A third worker that will die; one whole GPU per trial puts exactly one trial on each worker.
    victim = ray_cluster.add_worker(num_cpus=2, num_gpus=1)
    out, log = tmp_path / "cluster_node_loss", tmp_path / "sweep.log"
    with log.open("w") as f:
        proc = subprocess.Popen(sweep_command("cluster_node_loss", 3, 1.0, ray_cluster), cwd=REPO_ROOT,
                                env=sweep_env(ray_cluster, mlflow_server, tmp_path), stdout=f, stderr=subprocess.STDOUT)
    try:
        def victim_running() -> bool:
            from sweep.store import load_records

            started = (out / "store.json").is_file() and len(load_records(out).trials) == 3
            on_victim = [a for a in ray_cluster.cluster.global_state.actor_table(None).values()
                         if a["Address"]["NodeID"] == victim.node_id and a["State"] == "ALIVE"]
            return started and bool(on_victim)

        # Kill the node once all three trials have started (MLflow runs exist) and one runs there.
        wait_for(victim_running, 120, "a trial on the victim node", proc, log)
        ray_cluster.cluster.remove_node(victim, allow_graceful=False)
        proc.wait(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_finished(proc, log)

    table = results_table(out)
    assert sorted(r["seed"] for r in table) == [0, 1, 2], "every trial exactly once in the results table"
    assert {r["status"] for r in table} == {"FINISHED"}
    assert sorted(r["attempts"] for r in table) == [1, 1, 2], "the lost trial was retried once, the others not"
    retried = next(r for r in table if r["attempts"] == 2)
    final_pid = tune_results(out, retried["trial_id"])[-1]["pid"]
    assert ray_cluster.node_of_pid()[final_pid] != victim.node_id

    # One MLflow run per trial, the retry logged into the same run: no duplicate, no gap.
    runs = child_runs(mlflow_server, "cluster_node_loss")
    assert sorted(r.info.run_id for r in runs) == sorted(r["mlflow_run_id"] for r in table)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        history = MlflowClient(mlflow_server.uri).get_metric_history(run.info.run_id, "recall_at_1")
        assert [m.step for m in history] == [1, 2]

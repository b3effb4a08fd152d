"""Real sweeps on digits with the real trainer: Ray Tune (2 CPUs), MLflow (sqlite), the report.

One grid sweep (module fixture) holds a healthy ablation plus two broken cells that fail for real
reasons: a learning rate of 1e30 makes the contrastive loss NaN at its second step, and an image
folder whose PNGs are cut in half (headers intact, so the dataset index and `--dry-run` accept it)
fails to decode in every attempt. The resume test
interrupts the same sweep (Ctrl-C on the command) and checks that `--resume` ends with the same
table. The search test runs the two-phase grid x Optuna sweep.
"""
from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from PIL import Image

from sweep.plan import load_plan
from sweep.records import FAILED, FINISHED, KILLED
from sweep.store import load_records
from sweep.runner import SweepOutcome, run_sweep
from sweep.search import study_storage
from sweep_testlib import REPO_ROOT, write_yaml

pytestmark = pytest.mark.slow

GRID_SWEEP: dict[str, Any] = {
    "grid": {"model.embedding_dim": [8, 16]},
    "arms": {
        "ms": {},
        "nan": {"loss.name": "contrastive", "optimizer.lr": 1.0e30, "model.embedding_dim": 8},
        "crash": {"data.name": "image_folder", "data.root": "<set by grid_sweep>", "model.embedding_dim": 8},
    },
    "seeds": [0, 1],
    "baseline": {"arm": "ms", "model.embedding_dim": 8},
    "max_failures": 1,
}
EPOCHS = 2


def ledger(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """The sweep's records in the trial store, by key (as dicts, to compare whole records)."""
    return {r.key: r.model_dump() for r in load_records(sweep_dir).trials}


def runs_of(tracking_uri: str, experiment: str) -> tuple[Any, list[Any]]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    assert len(parents) == 1, "one parent run per sweep"
    return parents[0], [r for r in runs if r.data.tags.get("sweep.role") != "parent"]


def truncated_image_folder(root: Path, classes: int = 6, per_class: int = 8) -> Path:
    """Class folders of PNGs whose pixel data is cut off: what a half-copied dataset looks like."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            png = root / f"c{c}" / f"{i}.png"
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(png)
            png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return root


def steps(tracking_uri: str, run_id: str, metric: str = "recall_at_1") -> list[int]:
    return [m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, metric)]


@pytest.fixture(scope="module")
def grid_sweep(ray_local: None, tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SweepOutcome]:
    tmp = tmp_path_factory.mktemp("grid")
    arms = {**GRID_SWEEP["arms"], "crash": {**GRID_SWEEP["arms"]["crash"],
                                            "data.root": str(truncated_image_folder(tmp / "truncated"))}}
    sweep = {**GRID_SWEEP, "arms": arms, "name": "grid", "mlflow": {"tracking_uri": tracking_uri}}
    path = write_yaml(tmp / "grid.yaml", sweep)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        outcome = run_sweep(load_plan(path), tmp / "sweep", verbose=0)
    (tmp / "console.txt").write_text(console.getvalue())
    return path, outcome


def test_grid_sweep_records_finished_and_failed_trials(grid_sweep: tuple[Path, SweepOutcome], tracking_uri: str) -> None:
    _, outcome = grid_sweep
    assert outcome.status == FINISHED
    table = {r["key"]: r for r in pq.read_table(outcome.sweep_dir / "trials.parquet").to_pylist()}
    assert len(table) == 4 * 2
    ok = [r for r in table.values() if r["arm"] == "ms"]
    assert {r["status"] for r in ok} == {FINISHED} and {r["epochs"] for r in ok} == {EPOCHS}
    assert all(0 < r["recall_at_1"] <= 1 for r in ok)

    # NaN loss: failed with its reason, and not retried (it is the config, not bad luck).
    for seed in (0, 1):
        nan = table[f"arm=nan,model.embedding_dim=8/seed={seed}"]
        assert (nan["status"], nan["attempts"]) == (FAILED, 1)
        assert "non-finite loss" in nan["error"] and nan["recall_at_1"] is None
    # A crash is retried max_failures times, then failed with the exception's last line.
    for seed in (0, 1):
        crash = table[f"arm=crash,model.embedding_dim=8/seed={seed}"]
        assert (crash["status"], crash["attempts"]) == (FAILED, 2)
        assert re.search(r"DatasetError: \S+/truncated/c\d/\d\.png: cannot decode image \(image file is truncated", crash["error"])

    # Statistics: over the two seeds of each healthy cell; the comparison pairs them by seed.
    cells = {(r["cell"], r["metric"]): r for r in pq.read_table(outcome.sweep_dir / "cells.parquet").to_pylist()}
    for dim in (8, 16):
        cell = f"arm=ms,model.embedding_dim={dim}"
        values = [table[f"{cell}/seed={s}"]["recall_at_1"] for s in (0, 1)]
        assert cells[(cell, "recall_at_1")]["mean"] == pytest.approx(sum(values) / 2)
    comps = {r["cell"]: r for r in pq.read_table(outcome.sweep_dir / "comparisons.parquet").to_pylist()
             if r["metric"] == "recall_at_1"}
    assert comps["arm=ms,model.embedding_dim=16"]["pairs"] == 2
    assert comps["arm=nan,model.embedding_dim=8"]["pairs"] == 0
    assert (outcome.sweep_dir / "ablation_model.embedding_dim.png").is_file()

    # MLflow: one parent, one child per trial under it, statuses and errors as in the table.
    parent, children = runs_of(tracking_uri, "grid")
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    by_key = {r.data.tags["sweep.key"]: r for r in children}
    assert set(by_key) == set(table)
    for key, row in table.items():
        run = by_key[key]
        # Short distinct names, the same text as the label tag: arm, the varying axis, the seed.
        cell = row["arm"] if row["arm"] != "ms" else f"ms dim={row['model.embedding_dim']}"  # nan, crash pin dim
        assert run.info.run_name == run.data.tags["label"] == f"{cell} · s{row['seed']}"
        assert "epoch" not in run.data.metrics  # the step of every metric
        assert run.info.run_id == row["mlflow_run_id"]
        assert run.info.status == row["status"]
        assert run.data.tags["sweep.seed"] == str(row["seed"]) and run.data.tags["sweep.cell"] == row["cell"]
        assert run.data.tags["sweep.phase"] == "final" and "mlflow.source.git.commit" in run.data.tags
        assert run.data.tags["sweep.group"] == f"final · {cell}"  # MLflow's Group-by: one group per cell
        assert run.data.params["model.embedding_dim"] == str(row["model.embedding_dim"])
        if row["status"] == FINISHED:
            assert steps(tracking_uri, run.info.run_id) == [1, 2]
            assert run.data.metrics["recall_at_1"] == pytest.approx(row["recall_at_1"])
        else:
            assert run.data.tags["error"] == row["error"]
    client = MlflowClient(tracking_uri)
    first = by_key["arm=ms,model.embedding_dim=8/seed=0"].info.run_id
    assert {a.path for a in client.list_artifacts(first)} == {"config.yaml", "metrics.json"}
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "trials.parquet", "trials.csv", "cells.csv", "comparisons.csv", "ablation_model.embedding_dim.png",
            "ablation_model.embedding_dim.pdf", "ablation_model.embedding_dim.csv", "ablation_model.embedding_dim_diff.csv",
            "plot_paired_differences.png", "plot_learning_curves.png", "sweep.yaml"} <= parent_files

    # The parent carries the results in %: cell means and clipped CI bounds, the paired difference
    # in points and its p.
    cell16 = cells[("arm=ms,model.embedding_dim=16", "recall_at_1")]
    assert parent.data.metrics["recall_at_1_pct.ms_dim_16.mean"] == pytest.approx(100 * cell16["mean"])
    assert parent.data.metrics["recall_at_1_pct.ms_dim_16.ci_low"] == pytest.approx(100 * cell16["ci_low"])
    comp = comps["arm=ms,model.embedding_dim=16"]
    name = "ms_dim_16_vs_ms_dim_8"
    assert parent.data.metrics[f"recall_at_1_pct.{name}.diff"] == pytest.approx(100 * comp["mean_diff"])
    assert parent.data.metrics[f"recall_at_1_pct.{name}.ci_high"] == pytest.approx(100 * comp["ci_high"])
    if comp["p_value"] == comp["p_value"]:  # NaN when both seeds differ by exactly the same amount
        assert parent.data.metrics[f"recall_at_1.{name}.p"] == pytest.approx(comp["p_value"])
    assert parent.data.tags["mlflow.note.content"].startswith("- ms dim=16 vs ms dim=8: R@1 ")  # the headline first
    assert parent.data.params["model.embedding_dim"] == "grid [8, 16]"  # not the base value
    assert "epoch" not in parent.data.metrics

    # Console: one line per trial with the counter, failures with their error, the closing data.
    console = (outcome.sweep_dir.parent / "console.txt").read_text()
    assert "-- final: 8 trials = 4 cells x 2 seeds" in console
    # status lines (`[0/8] ...     running 2`) come every 30 s without an event, more of them on a loaded machine
    assert len(re.findall(r"^\[[ \d]\d?/8\] (?!\.\.\. )", console, re.M)) == 8
    assert re.search(r"^\[[ \d]/8\] FAILED  final crash · s0  [\w.]*DatasetError: \S+\.png: cannot decode image", console, re.M)
    assert re.search(r"^\[[ \d]/8\] FAILED  final nan · s1  non-finite loss", console, re.M)
    assert re.search(r"^\[[ \d]/8\] final   ms dim=16 · s1  R@1 \d+\.\d  \(", console, re.M)
    assert "╭" not in console and "Trial status" not in console  # Ray Tune's boxes and tables
    assert outcome.mlflow_url.endswith(f"#/experiments/{parent.info.experiment_id}?workflowType=machine_learning")


def test_existing_sweep_dir_needs_resume(grid_sweep: tuple[Path, SweepOutcome]) -> None:
    path, outcome = grid_sweep
    with pytest.raises(ValueError, match="a sweep already exists here; add --resume"):
        run_sweep(load_plan(path), outcome.sweep_dir, verbose=0)
    with pytest.raises(ValueError, match="sweep.seeds: drops seed 1, which this sweep has run"):
        run_sweep(load_plan(path, ["sweep.seeds=[0]"]), outcome.sweep_dir, resume=True, verbose=0)
    with pytest.raises(ValueError, match=r"optimizer\.lr \(0\.003 -> 0\.004\): changes the experiment this sweep already ran"):
        run_sweep(load_plan(path, ["optimizer.lr=0.004"]), outcome.sweep_dir, resume=True, verbose=0)


def test_a_second_sweep_reuses_then_grows(grid_sweep: tuple[Path, SweepOutcome], tracking_uri: str) -> None:
    """The same trials in another sweep under the same storage root are answered from the trial
    store (one console line each, naming the sweep that ran them; an MLflow run each, tagged with
    it); adding a seed and resuming trains exactly the new trials."""
    path, first = grid_sweep
    out = first.sweep_dir.parent / "again"
    only_ms = ["sweep.name=again", "sweep.arms={ms: {}}"]
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        outcome = run_sweep(load_plan(path, only_ms), out, verbose=0)
    assert (outcome.status, outcome.reused) == (FINISHED, 4)
    assert not (out / "final").exists()  # no Tune experiment: nothing trained
    assert len(re.findall(rf"^\[\d/4\] final   ms dim=\d+ · s\d  R@1 \d+\.\d  reused from sweep \({first.sweep_dir}\)$",
                          console.getvalue(), re.M)) == 4
    records = ledger(out)
    before = ledger(first.sweep_dir)
    for key, r in records.items():
        assert (r["reused_from"], r["metrics"], r["content_key"]) == (
            str(first.sweep_dir), before[key]["metrics"], before[key]["content_key"])
    _, children = runs_of(tracking_uri, "again")
    assert {c.data.tags["sweep.reused_from"] for c in children} == {str(first.sweep_dir)} and len(children) == 4
    assert all(c.info.status == FINISHED and "recall_at_1" in c.data.metrics for c in children)
    report = (out / "report.md").read_text()  # the report marks them too
    assert report.count(f"FINISHED, reused from {first.sweep_dir.name} |") == 4 and "4 of 4 trials were reused" in report

    grown = run_sweep(load_plan(path, [*only_ms, "sweep.seeds=[0,1,2]"]), out, resume=True, verbose=0)
    assert (grown.status, grown.reused, grown.final_trials) == (FINISHED, 0, 6)
    trained = {p.name for p in (out / "final").iterdir() if p.is_dir()}
    assert len(trained) == 2  # exactly the two seed-2 trials ran
    assert {r["trial_id"] for k, r in ledger(out).items() if k.endswith("seed=2")} == trained


@pytest.mark.timeout(400)
def test_interrupted_sweep_resumes_to_the_same_table(grid_sweep: tuple[Path, SweepOutcome], tracking_uri: str,
                                                      tmp_path: Path) -> None:
    path, reference = grid_sweep
    out, log = tmp_path / "sweep", tmp_path / "run.log"
    name = ["--set", "sweep.name=resumed"]
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "sweep/run.py", str(path), *name, "--out", str(out)],
                                cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while not ((out / "store.json").is_file() and any(r["status"] == FINISHED for r in ledger(out).values())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "continue with: python sweep/run.py" in log.read_text()
    assert "╭" not in log.read_text() and "View detailed results" not in log.read_text()  # Ray's output is off
    before = ledger(out)
    done_before = {k: r for k, r in before.items() if r["status"] in (FINISHED, FAILED)}
    assert 1 <= len(done_before) < 8
    cut_off = [r for r in before.values() if r["status"] == KILLED]
    parent, children = runs_of(tracking_uri, "resumed")
    assert parent.info.status == KILLED
    assert {r.info.status for r in children if r.info.run_id in {c["mlflow_run_id"] for c in cut_off}} <= {KILLED}

    outcome = run_sweep(load_plan(path, [name[1]]), out, resume=True, verbose=0)  # = `--resume`, in-process
    assert outcome.status == FINISHED
    after = ledger(out)
    # Trials that had ended were not run again: same record, same MLflow run, one Tune result per epoch.
    for key, record in done_before.items():
        assert after[key] == record
        if record["status"] == FINISHED:
            result_lines = (out / "final" / record["trial_id"] / "result.json").read_text().splitlines()
            assert len(result_lines) == EPOCHS

    # The same table as the uninterrupted sweep (the trainer is deterministic given the seed).
    table = {r["key"]: r for r in pq.read_table(out / "trials.parquet").to_pylist()}
    expected = {r["key"]: r for r in pq.read_table(reference.sweep_dir / "trials.parquet").to_pylist()}
    assert set(table) == set(expected)
    for key, row in expected.items():
        assert table[key]["status"] == row["status"], key
        assert table[key]["error"] == row["error"], key
        for metric in ("recall_at_1", "map_at_r", "loss"):
            assert table[key][metric] == pytest.approx(row[metric], abs=1e-6), (key, metric)

    # MLflow: still one parent and exactly one child per trial, no step logged twice.
    parent, children = runs_of(tracking_uri, "resumed")
    assert parent.info.status == FINISHED
    assert sorted(r.data.tags["sweep.key"] for r in children) == sorted(table)
    for run in children:
        assert run.info.status == table[run.data.tags["sweep.key"]]["status"]
        if run.info.status == FINISHED:
            assert steps(tracking_uri, run.info.run_id) == [1, 2]


def test_grid_with_search_runs_two_phases(ray_local: None, tracking_uri: str, tmp_path: Path) -> None:
    sweep = {
        "name": "searched", "grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1],
        "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
                   "num_samples": 2, "holdout": 0.4},
        "scheduler": {"name": "asha", "grace_period": 1},
        "mlflow": {"tracking_uri": tracking_uri},
    }
    outcome = run_sweep(load_plan(write_yaml(tmp_path / "s.yaml", sweep)), tmp_path / "sweep", verbose=0)
    assert outcome.status == FINISHED
    records = ledger(outcome.sweep_dir).values()
    search = [r for r in records if r["phase"] == "search"]
    final = [r for r in records if r["phase"] == "final"]
    assert len(search) == 2 * 2 and len(final) == 2 * 2
    assert {r["status"] for r in records} == {FINISHED}
    _, children = runs_of(tracking_uri, "searched")
    params = {r.data.tags["sweep.trial_id"]: r.data.params for r in children}
    for cell in ("model.embedding_dim=8", "model.embedding_dim=16"):
        tried = [r for r in search if r["cell"] == cell]
        lrs = [r["params"]["optimizer.lr"] for r in tried]
        assert len(set(lrs)) == 2 and all(1e-3 <= lr <= 1e-2 for lr in lrs), lrs  # Optuna sampled the range
        assert {r["seed"] for r in tried} == {0}
        for r in tried:  # searched on held-out training classes
            assert params[r["trial_id"]]["data.holdout"] == "0.4"
        best = max(tried, key=lambda r: r["metrics"]["recall_at_1"])
        reruns = [r for r in final if r["cell"] == cell]
        assert sorted(r["seed"] for r in reruns) == [0, 1]
        for r in reruns:  # the cell's best value, on the test split
            assert r["params"] == best["params"]
            assert params[r["trial_id"]]["optimizer.lr"] == str(best["params"]["optimizer.lr"])
            assert params[r["trial_id"]]["data.holdout"] == "None"
    report = (outcome.sweep_dir / "report.md").read_text()
    assert "## Search (per cell, on held-out training classes)" in report
    assert "![plot_search_history](plot_search_history.png)" in report
    assert not list(outcome.sweep_dir.glob("plot_search_importance_*"))  # one searched param: no importance plot
    assert (outcome.sweep_dir / "plot_search_history.png").is_file()

    # Search runs: their own names and metric names (held-out training classes, not the test split).
    search_runs = [r for r in children if r.data.tags["sweep.phase"] == "search"]
    assert sorted(r.info.run_name for r in search_runs) == sorted(
        f"search · dim={d} · #{n}" for d in (8, 16) for n in (1, 2))
    for run in search_runs:
        assert "holdout_recall_at_1" in run.data.metrics and "recall_at_1" not in run.data.metrics
    parent, _ = runs_of(tracking_uri, "searched")
    assert parent.data.params["optimizer.lr"] == "searched loguniform[0.001, 0.01]"

    # The Optuna studies outlive the sweep: one per cell in the sweep directory, with every sample.
    for cell in ("model.embedding_dim=8", "model.embedding_dim=16"):
        study = optuna.load_study(study_name=cell, storage=study_storage(outcome.sweep_dir))
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        tried = {r["trial_id"]: r for r in search if r["cell"] == cell}
        assert sorted(t.user_attrs["tune_trial_id"] for t in trials) == sorted(tried)
        for t in trials:
            assert t.params == tried[t.user_attrs["tune_trial_id"]]["params"]
            assert t.value == pytest.approx(tried[t.user_attrs["tune_trial_id"]]["metrics"]["recall_at_1"])
    # Nothing of the search is pickled (Tune's searcher-state-*.pkl / cloudpickled search_gen_state).
    assert not list(outcome.sweep_dir.rglob("searcher-state-*")) and not list(outcome.sweep_dir.rglob("search_gen_state-*"))

"""A tiny interpolation ablation, trained for real (digits, 2 seeds, a few iterations): MS vs MS+EE
over n and PA vs PA+SEE over SEE's count, one named axis. The figure's CSV has the MS baseline at
n = 0 on EE's axis and SEE's counts as one series; the PDF and the CSVs reach the MLflow parent run."""
from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweep.plan import load_plan
from sweep.records import FINISHED
from sweep.runner import run_sweep
from sweep_testlib import TINY_DIGITS, write_yaml

pytestmark = pytest.mark.slow

SWEEP = {
    "name": "interp",
    "grid": {"n": [1, 2, 4]},
    "axes": {"n": {"label": "synthetic points per sample n", "others_at": 0,
                   "keys": {"ee": "expansion.n_inner_pts", "see": "expansion.n_expan"}}},
    "arms": {"ms": {"loss.name": "multi_similarity", "expansion.name": "none"},
             "ee": {"loss.name": "multi_similarity", "expansion.name": "ee"},
             "pa": {"loss.name": "proxy_anchor", "expansion.name": "none"},
             "see": {"loss.name": "proxy_anchor", "expansion.name": "see"}},
    "seeds": [0, 1],
    "baseline": {"arm": {"ee": "ms", "see": "pa"}},
    "max_failures": 0,
}


def test_interp_ablation_draws_the_papers_curve(ray_local: None, tracking_uri: str, tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "interp.yaml", {**SWEEP, "mlflow": {"tracking_uri": tracking_uri}},
                      optimizer={"name": "adam", "lr": 0.003, "loss_lr": 0.01},
                      train={**TINY_DIGITS["train"], "epochs": 1})  # 16 trials; the figure needs each one's result, not a second epoch
    with contextlib.redirect_stdout(io.StringIO()):
        outcome = run_sweep(load_plan(path), tmp_path / "sweep", verbose=0)
    assert outcome.status == FINISHED and not outcome.failed
    sweep_dir = outcome.sweep_dir
    with (sweep_dir / "ablation_n.csv").open() as f:
        header, *rows = list(csv.reader(f))
    assert header == ["series", "x", "mean", "ci_low", "ci_high", "seeds"]
    points = [dict(zip(header, r)) for r in rows]
    series = {p["series"]: [] for p in points}
    for p in points:
        series[p["series"]].append(p["x"])
        assert float(p["ci_low"]) <= float(p["mean"]) <= float(p["ci_high"]) and p["seeds"] == "2"
    assert series["MS"] == ["0"] and series["MS+EE"] == ["1", "2", "4"]  # the loss alone at n = 0 on EE's axis
    assert series["PA"] == ["0"] and series["PA+SEE"] == ["1", "2", "4"]  # SEE's counts: one series, 3 values
    with (sweep_dir / "ablation_n_diff.csv").open() as f:
        diffs = list(csv.DictReader(f))
    assert {(d["series"], d["x"]) for d in diffs} == {(s, x) for s in ("MS+EE - MS", "PA+SEE - PA") for x in "124"}
    assert all(float(d["ci_low"]) <= float(d["mean"]) <= float(d["ci_high"]) for d in diffs)
    assert (sweep_dir / "ablation_n.png").stat().st_size > 10_000
    assert (sweep_dir / "ablation_n.pdf").read_bytes()[:4] == b"%PDF"
    page = (sweep_dir / "report.html").read_text()
    assert "R@1 against synthetic points per sample n" in page and "<code>ablation_n.pdf</code>" in page
    parent = MlflowClient(tracking_uri).get_run(outcome.parent_url.split("?")[0].rsplit("/", 1)[-1])
    logged = {a.path for a in MlflowClient(tracking_uri).list_artifacts(parent.info.run_id)}
    assert {"ablation_n.png", "ablation_n.pdf", "ablation_n.csv", "ablation_n_diff.csv", "report.html"} <= logged

"""The report says what was run: the command with its `--set` overrides, the commit, the recipe
(the base config's fields that differ from the defaults), search trials scored by the search
metric, and a link per trial to its MLflow run."""
from __future__ import annotations

import re
from pathlib import Path

from sweep.plan import load_plan
from sweep.records import FINISHED, BestChoice, TrialRecord
from sweep.report import write_report
from sweep.writers import COMMANDS_FILE, record_command
from sweep_testlib import sweep_from_records, write_yaml

SWEEP = {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1], "baseline": {"model.embedding_dim": 8},
         "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                    "num_samples": 2, "holdout": 0.4, "metric": "map_at_r"}}


def row_of(report: str, first_cell: str) -> list[str]:
    line = next(line for line in report.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_report_lists_command_recipe_search_scores_and_run_links(tmp_path: Path) -> None:
    argv = [str(tmp_path / "x.yaml"), "--set", "train.epochs=3", "sweep.seeds=[0,1]"]
    plan = load_plan(write_yaml(tmp_path / "x.yaml", SWEEP), argv[2:])
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, {c.id: {0: 0.90, 1: 0.92} for c in plan.cells})
    from sweep.store import SweepLog

    log = SweepLog.open(sweep_dir, plan.name)
    log.update_meta(tracking_uri="sqlite:///mlflow.db", experiment="x", experiment_id="7", git_commit="abc1234")
    cell = plan.cells[0].id
    log.add(TrialRecord(trial_id="s1", key=f"search/{cell}/s1", label="search · dim=8 · #1", phase="search",
                        cell=cell, seed=0, status=FINISHED, params={"optimizer.lr": 0.001},
                        metrics={"map_at_r": 0.529, "recall_at_1": 0.982, "epoch": 3.0}, mlflow_run_id="RUN1"))
    log.update_meta(best={cell: BestChoice(params={"optimizer.lr": 0.001}, trial_id="s1", value=0.529, samples=1)})
    undo = record_command(sweep_dir, argv)
    write_report(sweep_dir)
    report = (sweep_dir / "report.md").read_text()

    # The command as run, overrides included; the commit.
    assert f"python sweep/run.py {argv[0]} --set train.epochs=3 'sweep.seeds=[0,1]'" in report
    assert "git commit `abc1234`" in report
    # The recipe: fields that differ from their defaults (with the default), swept and searched ones marked.
    assert "| field | value | default |" in report
    assert row_of(report, "`train.epochs`") == ["`train.epochs`", "3", "10"]
    assert row_of(report, "`model.embedding_dim`")[1] == "grid [8, 16]"
    assert row_of(report, "`optimizer.lr`")[1] == "searched loguniform[0.0001, 0.01]"
    assert row_of(report, "`model.backbone`")[1] == "small_conv"  # a component is named even at its default
    assert not re.search(r"^\| `optimizer.weight_decay` \|", report, re.M)  # at its default: left out
    # Search trials scored by the search metric (MAP@R 52.9), not the test metric (R@1 98.2).
    assert "| trial | phase | status | search MAP@R (%) | test R@1 (%) |" in report
    search_row = row_of(report, "search · dim=8 · #1")
    assert search_row[3:5] == ["52.9", "-"] and "98.2" not in search_row
    url = "http://127.0.0.1:5000/#/experiments/7/runs/RUN1?workflowType=machine_learning"
    assert f"[run]({url})" in report
    html = (sweep_dir / "report.html").read_text()
    assert f'<a href="{url}">run</a>' in html

    undo()  # a session that stopped before its sweep existed takes its line out again
    assert not (sweep_dir / COMMANDS_FILE).exists()
    fresh = tmp_path / "none" / "yet"
    record_command(fresh, argv)()  # ... and the folders it made for it
    assert not (tmp_path / "none").exists()


def test_the_kept_sample_of_a_reused_search_is_found_by_its_key() -> None:
    """A search answered from the trial store has no Tune trial ids: the choice names its sample by
    key, and the search plot rings it (it rang nothing before)."""
    from sweep.report_view import kept_sample
    from sweep.results import SearchResult

    samples = [TrialRecord(trial_id="", key=f"search/c/reused-{i}", phase="search", cell="c", seed=0, status=FINISHED)
               for i in range(3)]
    choice = BestChoice(params={}, trial_id="search/c/reused-1", value=0.5)
    assert kept_sample(SearchResult("c", "c", 3, 3, choice, samples)) is samples[1]
    ran = [TrialRecord(trial_id=f"t{i}", key=f"search/c/t{i}", phase="search", cell="c", seed=0, status=FINISHED)
           for i in range(2)]
    assert kept_sample(SearchResult("c", "c", 2, 2, BestChoice(params={}, trial_id="t0", value=0.5), ran)) is ran[0]

"""The forecast end to end: a few quickstart trials trained and stored, then `--dry-run` of the
quickstart with other epochs and seeds prices it from exactly those trials, and a sweep that
starts with a forecast keeps it and reports it beside what it measured."""
from __future__ import annotations

from pathlib import Path

import pytest

from sweep.plan import load_plan
from sweep.run import main
from sweep.runner import run_sweep
from sweep.store import load_records
from sweep_testlib import REPO_ROOT

pytestmark = pytest.mark.slow

QUICKSTART = str(REPO_ROOT / "experiments" / "quickstart.yaml")
SMALL = ["sweep.search=null", "train.iterations_per_epoch=6", "eval.clustering=false"]


def test_dry_run_prices_a_changed_quickstart_from_the_stored_trials(tmp_path: Path, ray_local: None,
                                                                    tracking_uri: str, capsys) -> None:
    stored = load_plan(QUICKSTART, [*SMALL, "sweep.seeds=[0,1]", "train.epochs=2",
                                    f"sweep.mlflow.tracking_uri={tracking_uri}"])
    run_sweep(stored, tmp_path / "sweeps" / "first", verbose=0)
    trials = load_records(tmp_path / "sweeps" / "first").final()
    assert len(trials) == 4 and all(t.finished and t.wall_s for t in trials)
    capsys.readouterr()

    changed = [*SMALL, "sweep.seeds=[0,1,2]", "train.epochs=6", "train.eval_every=3"]
    assert main([QUICKSTART, "--dry-run", "--set", *changed, "--out", str(tmp_path / "sweeps" / "next")]) == 0
    out = capsys.readouterr().out
    for cell in ("expansion.n_inner_pts=0", "expansion.n_inner_pts=2"):  # EE is its own recipe
        assert f"cells like {cell}: from 2 stored trials of this recipe on cpu (sweep quickstart)" in out, out
    final = next(ln for ln in out.splitlines() if ln.strip().startswith("final") and "trial-hours" in ln)
    assert "6 trials:" in final and "not estimated" not in final, out

    # The same sweep again, elsewhere: every trial is answered from the store; the forecast is
    # printed, kept, and the report sets it beside the (zero) trial time spent here.
    again = tmp_path / "sweeps" / "again"
    assert main([QUICKSTART, "--set", *SMALL, "sweep.seeds=[0,1]", "train.epochs=2",
                 f"sweep.mlflow.tracking_uri={tracking_uri}", "--out", str(again)]) == 0
    assert "from 2 stored trials" in capsys.readouterr().out
    assert (again / "forecast.json").is_file()
    report = (again / "report.md").read_text()
    assert "Cost: final forecast" in report and "measured 0 s over the 0 that trained here" in report

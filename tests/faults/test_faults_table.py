"""Issue 29, family 5: `dml-report table` ended in a traceback on a sweep whose trial store is
missing (an uncaught `PathError`) and on an `--out` it cannot write (read-only, under a file, a
directory: `OSError`). Now one line naming the file, exit 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from faults_testlib import call_cli, one_error_line, tiny, write_yaml


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    from sweep.plan import load_plan
    from sweep.records import TrialRecord
    from sweep.sweep_folder import create_sweep_dir

    raw = tiny()
    raw["sweep"] = {"name": "t", "seeds": [0, 1], "grid": {"model.embedding_dim": [8, 16]}}
    plan = load_plan(write_yaml(tmp_path / "t.yaml", raw))
    log = create_sweep_dir(plan, tmp_path / "sweeps" / "t")
    for cell in plan.cells:
        for seed in (0, 1):
            log.add(TrialRecord(trial_id="x", key=f"{cell.id}/seed={seed}", phase="final", cell=cell.id, seed=seed,
                                status="FINISHED", metrics={"recall_at_1": 0.5 + seed / 10, "epoch": 1.0}))
    log.store.close()
    return tmp_path / "sweeps" / "t"


def table(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    from sweep.report import main

    return call_cli(main, ["table", *argv, "--rows", "model.embedding_dim"], capsys)


def test_a_sweep_whose_store_is_missing_is_one_line(sweep: Path, capsys: pytest.CaptureFixture) -> None:
    store = sweep.parent / ".store" / "trials.sqlite"
    assert table([str(sweep)], capsys)[0] == 0
    for f in store.parent.iterdir():
        f.unlink()
    rc, err = table([str(sweep)], capsys)
    assert rc == 2
    assert one_error_line(err).startswith(f"error: {sweep / 'store.json'}: its trial store {store} is missing")


@pytest.mark.parametrize("where", ["directory", "under_a_file", "missing_folder"])
def test_an_out_it_cannot_write_is_one_line(sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture, where: str) -> None:
    (tmp_path / "file").write_text("x")
    out, why = {"directory": (tmp_path, "Is a directory"), "under_a_file": (tmp_path / "file" / "t.md", "Not a directory"),
                "missing_folder": (tmp_path / "no" / "t.md", "No such file or directory")}[where]
    rc, err = table([str(sweep), "--out", str(out)], capsys)
    assert rc == 2
    assert one_error_line(err) == f"error: --out {out}: cannot write it ({why})"

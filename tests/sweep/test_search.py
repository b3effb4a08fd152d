"""The per-cell Optuna search driven by hand (no Ray trials): studies in the sweep directory,
a JSON snapshot instead of pickles, and a restore that continues the same studies."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from ray.tune.search import Searcher

from sweep.search import STUDY_FILE, JournalSearchGenerator, PerCellSearch, load_studies, study_storage
from sweep.spec import SearchParam

CELLS = ["a", "b"]  # a suggestion carries its cell's index in this list
LR = {"optimizer.lr": SearchParam(type="loguniform", low=1e-3, high=1e-2)}


def searcher(sweep_dir: Path, **kw: object) -> PerCellSearch:
    return PerCellSearch(CELLS, LR, num_samples=3, metric="recall_at_1", mode="max", seed=0, sweep_dir=sweep_dir, **kw)


def test_studies_are_stored_in_the_sweep_dir(tmp_path: Path) -> None:
    s = searcher(tmp_path)
    configs = {tid: s.suggest(tid) for tid in ("t1", "t2", "t3")}
    assert [CELLS[c["trial"]] for c in configs.values()] == ["a", "b", "a"]  # round-robin over cells
    s.on_trial_result("t1", {"recall_at_1": 0.5, "epoch": 1})
    s.on_trial_result("t1", {"recall_at_1": 0.5, "epoch": 1})  # a resumed trial re-reports: ignored
    s.on_trial_complete("t1", {"recall_at_1": 0.8, "epoch": 2})
    s.on_trial_complete("t2", {"recall_at_1": float("nan")})  # a NaN loss: nothing to learn from

    assert (tmp_path / STUDY_FILE).is_file()
    a = optuna.load_study(study_name="a", storage=study_storage(tmp_path))
    first = a.trials[0]
    assert (first.state, first.value, first.intermediate_values) == (optuna.trial.TrialState.COMPLETE, 0.8, {1: 0.5})
    assert first.params == configs["t1"]["params"] and first.user_attrs["tune_trial_id"] == "t1"
    assert load_studies(tmp_path)["b"].trials[0].state == optuna.trial.TrialState.FAIL
    with pytest.raises(NotImplementedError):  # Tune's pickling hook is refused
        s.save(str(tmp_path / "x.pkl"))


def test_resume_continues_the_studies_without_any_pickle(tmp_path: Path) -> None:
    gen = JournalSearchGenerator(searcher(tmp_path))
    s = gen.searcher
    for tid in ("t1", "t2", "t3"):
        s.suggest(tid)
    s.on_trial_complete("t1", {"recall_at_1": 0.9})
    s.on_trial_complete("t2", {"recall_at_1": 0.7})
    tune_dir = tmp_path / "search"
    tune_dir.mkdir()
    gen.save_to_dir(str(tune_dir), "2026-01-01")  # Tune's periodic snapshot: writes nothing
    assert list(tune_dir.iterdir()) == [] and not gen.has_checkpoint(str(tune_dir))
    with pytest.raises(RuntimeError, match="Optuna journal"):
        gen.restore_from_dir(str(tune_dir))
    assert "_studies" not in s.__getstate__()  # what Tune pickles into tuner.pkl: no storage

    # The driver stopped with t3 running; --resume builds a new searcher on the same journal.
    r = searcher(tmp_path)
    t3 = load_studies(tmp_path)["a"].trials[1]
    assert t3.state == optuna.trial.TrialState.FAIL and t3.user_attrs["lost"]
    # 3 samples per cell: a has t1 (t3 was lost), b has t2 -> two more for each, then finished.
    cells = [CELLS[r.suggest(tid)["trial"]] for tid in ("t4", "t5", "t6", "t7")]
    assert sorted(cells) == ["a", "a", "b", "b"]
    assert r.suggest("t8") == Searcher.FINISHED
    # A resumed study does not re-propose its first candidates (its sampler seed moved on).
    values = [t.params["optimizer.lr"] for t in load_studies(tmp_path)["a"].trials]
    assert len(set(values)) == len(values)


def test_max_concurrent_is_applied_by_the_searcher(tmp_path: Path) -> None:
    s = searcher(tmp_path, max_concurrent=1)
    assert s.suggest("t1") is not None
    assert s.suggest("t2") is None  # wait: one sample in flight
    s.on_trial_complete("t1", {"recall_at_1": 0.5})
    assert s.suggest("t2") is not None


def test_samples_the_store_answers_are_told_not_run(tmp_path: Path) -> None:
    """A sample whose result some sweep already has (the runner's `answer`) is told to its study
    at once and never handed to Tune; the others are suggested as usual."""
    asked: list[tuple[int, int]] = []

    def answer(cell: int, params: dict, number: int) -> float | None:
        asked.append((cell, number))
        return 0.7 if CELLS[cell] == "a" else None  # cell a: everything known; b: nothing

    s = searcher(tmp_path, answer=answer)
    # Round-robin: a's first sample is answered, then b's first must run and waits for Tune.
    assert s.answer_from_store() == 1 and not s.done
    assert [CELLS[s.suggest(tid)["trial"]] for tid in ("t1", "t2", "t3")] == ["b", "b", "b"]
    assert s.suggest("t4") == Searcher.FINISHED and s.done
    a = load_studies(tmp_path)["a"].trials
    assert [(t.state, t.value, t.user_attrs.get("reused")) for t in a] == [(optuna.trial.TrialState.COMPLETE, 0.7, True)] * 3
    assert sorted(asked) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]

"""`check_selections`: the sweep driver's one call into the data layer before a sweep."""
from __future__ import annotations

from pathlib import Path

from dml_core.data.index import DataProblem, check_selections
from dml_core.params.datasets import DataConfig

DIGITS = DataConfig.of(name="digits")  # in memory: 5 training classes of about 180 images


def _batch(cfg: DataConfig, p: int, k: int = 4) -> DataConfig:
    return cfg.model_copy(update={"batch": cfg.batch.model_copy(update={"classes_per_batch": p, "samples_per_class": k})})


def test_selections_that_can_train_have_no_problem() -> None:
    assert check_selections([_batch(DIGITS, 4), _batch(DIGITS, 5, 8)]) is None


def test_a_batch_problem_names_the_selection_it_is_of() -> None:
    problem = check_selections([_batch(DIGITS, 4), _batch(DIGITS, 6)])
    assert problem == DataProblem("data.batch.classes_per_batch: 6 classes per batch but the training split of "
                                  "digits has 5 classes", at=1)


def test_a_missing_path_comes_before_any_batch_problem(tmp_path: Path) -> None:
    # The first selection cannot give its batches, the second names a folder that is not there:
    # the path is what to fix first, and no one selection owns it.
    missing = tmp_path / "omniglot"
    problem = check_selections([_batch(DIGITS, 6), DataConfig.of(name="omniglot", root=str(missing))])
    assert problem is not None and problem.at is None
    assert problem.message.startswith(f"data.root: {missing} does not exist (relative paths resolve against")


def test_each_fold_is_checked_and_named_by_the_field_given() -> None:
    too_many = check_selections([DataConfig.of(name="digits", folds=5)], folds_field="sweep.search.folds")
    assert too_many == DataProblem("sweep.search.folds: 5 folds of the 5 training classes of digits hold out 1 class "
                                   "in fold 0; a fold needs at least 2 (one class scores every model 100 %); at most "
                                   "2 folds", at=0)
    # 3 folds of 5 classes leave fold 0 three classes to train on: P = 4 cannot be drawn there,
    # though the whole training split has 5.
    small = check_selections([_batch(DataConfig.of(name="digits", folds=3), 4, 2)])
    assert small is not None and small.at == 0
    assert small.message.startswith("data.folds: 3 folds leave fold 0 3 training classes: data.batch.classes_per_batch")

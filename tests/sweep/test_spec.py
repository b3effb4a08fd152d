"""The `sweep:` block: every mistake is one line naming the file and the `sweep.<field>`."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sweep_testlib import REPO_ROOT, write_yaml
from sweep.checks import check_plan
from sweep.plan import load_plan
from sweep.config_keys import check_config_key
from sweep.spec import SweepError

GRID = {"model.embedding_dim": [8, 16]}


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ({"grdi": GRID}, "sweep.grdi: unknown key"),
        ({"grid": {"expansion.n_inner": [1, 2]}},
         "sweep.grid.expansion.n_inner: unknown config key (did you mean 'expansion.n_inner_pts'?)"),
        ({"grid": {"seed": [0, 1]}}, "sweep.grid.seed: use sweep.seeds"),
        ({"grid": {"model.embedding_dim": []}}, "sweep.grid.model.embedding_dim: needs at least one value"),
        ({"grid": {"model.embedding_dim": [8, 8]}}, "sweep.grid.model.embedding_dim: repeated values [8, 8]"),
        ({"grid": {"model": [1]}}, "sweep.grid.model: names a section, not a field"),
        ({"arms": {"ee": {"expansion.nam": "ee"}}}, "sweep.arms.ee.expansion.nam: unknown config key"),
        ({"seeds": [0, 0]}, "sweep.seeds: repeated seeds [0, 0]"),
        ({"seeds": []}, "sweep.seeds: List should have at least 1 item"),
        ({"search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 0, "high": 0.1}}}},
         "sweep.search.params.optimizer.lr: loguniform needs low > 0"),
        ({"search": {"params": {"optimizer.lr": {"type": "uniform", "low": 0.1, "high": 0.01}}}},
         "sweep.search.params.optimizer.lr: uniform needs low < high"),
        ({"search": {"params": {"loss.name": {"type": "categorical"}}}},
         "sweep.search.params.loss.name: categorical needs a non-empty `choices` list"),
        ({"search": {"params": {"optimizer.lr": {"type": "normal", "low": 0.1, "high": 1}}}},
         "sweep.search.params.optimizer.lr.type: Input should be 'loguniform', 'uniform', 'int' or 'categorical'"),
        ({"search": {"params": {}}}, "sweep.search.params: Dictionary should have at least 1 item"),
        ({"grid": GRID, "search": {"params": {"model.embedding_dim": {"type": "int", "low": 8, "high": 32}}}},
         "sweep.search.params.model.embedding_dim: also set by grid/arms"),
        ({"search": {"params": {"optimizer.lr": {"type": "uniform", "low": 0.001, "high": 0.01}}, "holdout": 1.5}},
         "sweep.search.holdout: Input should be less than 1"),
        ({"scheduler": {"name": "asha"}}, "sweep.scheduler: asha stops search trials early and needs a search: block"),
        ({"grid": GRID, "baseline": {"model.embedding_dim": 7}}, "sweep.baseline.model.embedding_dim: 7 is not one of [8, 16]"),
        ({"grid": GRID, "baseline": {"arm": "none"}}, "sweep.baseline.arm: not a grid key or `arm`"),
        ({"arms": {"a": {}, "b": {}}, "baseline": {"arm": {"a": "c"}}}, "sweep.baseline.arm: 'c' is not one of the arms ['a', 'b']"),
        ({"grid": GRID, "exclude": [{"optimizer.lr": 1}]}, "sweep.exclude.0.optimizer.lr: not a grid key or `arm`"),
        ({"metric": "recall@1"}, "sweep.metric: expected one of loss, recall_at_<K>"),
        ({"resources_per_trial": {"cpu": 0}}, "sweep.resources_per_trial.cpu: Input should be greater than 0"),
        ({"max_failures": -1}, "sweep.max_failures: Input should be greater than or equal to 0"),
        ({"name": "a/b"}, "sweep.name: use only A-Z, a-z, 0-9"),
        ({"grid": {"model.embedding_dim": [8]}, "exclude": [{"model.embedding_dim": 8}]}, "sweep.exclude: removes every cell"),
    ],
)
def test_bad_sweep_block_is_one_line_naming_file_and_field(tmp_path: Path, sweep: dict, expected: str) -> None:
    path = write_yaml(tmp_path / "bad.yaml", sweep)
    with pytest.raises(SweepError) as err:
        load_plan(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: "), message
    assert expected in message, message


def test_bad_trial_config_names_the_cell(tmp_path: Path) -> None:
    # SEE needs embedding_dim >= n_expan + 2: only the cell (see, dim 4) is invalid.
    sweep = {"grid": {"model.embedding_dim": [4, 16]},
             "arms": {"see": {"expansion.name": "see", "expansion.n_expan": 4, "loss.name": "proxy_anchor"}}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    with pytest.raises(ValueError) as err:
        check_plan(plan)
    assert "\n" not in str(err.value)
    assert "[arm=see,model.embedding_dim=4/seed=0]" in str(err.value)
    assert "model.embedding_dim" in str(err.value)


def test_bad_base_config_and_override_are_reported_with_the_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "x.yaml", {"seeds": [0]})
    with pytest.raises(SweepError, match=r"x\.yaml: optimizer\.lr: Input should be greater than 0"):
        load_plan(path, ["optimizer.lr=-1"])
    with pytest.raises(SweepError, match=r"sweep\.seeds: Input should be a valid list"):
        load_plan(path, ["sweep.seeds=3"])


def test_config_keys_are_checked_against_the_experiment_config() -> None:
    check_config_key("expansion.n_inner_pts")
    check_config_key("data.batch.samples_per_class")
    check_config_key("loss.margin")  # loss keys are constructor arguments, checked per trial
    with pytest.raises(ValueError, match="not a section"):
        check_config_key("optimizer.lr.value")
    with pytest.raises(ValueError, match="did you mean 'data.batch.classes_per_batch'"):
        check_config_key("data.batch.classes_per_btch")


def test_cli_rejects_bad_yaml_with_one_line_and_nonzero_exit(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "bad.yaml", {"grid": {"expansion.n_inner": [1]}})
    proc = subprocess.run([sys.executable, "sweep/run.py", str(path), "--dry-run"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith(f"error: {path}: sweep.grid.expansion.n_inner: unknown config key")

"""The typed record of a sweep: one `TrialRecord` per trial, one `SweepMeta` per sweep.

This is the contract between the modules that write a sweep's state (the driver's Tune
callbacks, the runner) and those that read it (report, console, MLflow sync, cross-sweep
tables). Readers call `sweep.store.load_records(sweep_dir)` and use attributes, never string keys; where
the records are kept (the trial store, `sweep.store`) is the writer's business.

Two keys name a trial:

- `key`, the trial's place in *this* sweep: `<cell id>/seed=<n>` for a final trial,
  `search/<cell id>/<tune trial id>` for a search sample (what the report's rows, the console and
  the checkpoints are named by);
- `content_key`, the identity of its *result*: a digest of the fully resolved experiment config,
  seed, what it is scored on and the results version of `dml_core` (`dml_core.identity`). Two
  records with the same content key are the same experiment, in any sweep.
"""
from __future__ import annotations

import math
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

Phase = Literal["search", "final"]
# MLflow's run statuses, so the two always agree.
Status = Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"
SEARCH, FINAL = "search", "final"


class _Record(BaseModel):
    # extra="ignore": a record written by a newer version still reads; validate_assignment keeps
    # an update from storing the wrong type.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class TrialRecord(_Record):
    trial_id: str  # the Tune trial id of the latest attempt ("" for a trial that never started)
    key: str  # place in this sweep: `<cell>/seed=<n>` or `search/<cell>/<tune id>`
    phase: Phase
    cell: str
    arm: Optional[str] = None
    coords: dict[str, Any] = Field(default_factory=dict)
    seed: int
    params: dict[str, Any] = Field(default_factory=dict)  # searched values (sampled, or the cell's best)
    label: str = ""
    status: Status
    failure: Optional[str] = None  # crash | non_finite | search | ...
    error: Optional[str] = None  # one line
    attempts: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)  # the last evaluation (with `epoch`)
    history: list[dict[str, float]] = Field(default_factory=list)  # every evaluation, in order
    last_step: int = 0
    mlflow_run_id: Optional[str] = None
    tune_experiment: Optional[str] = None
    # The result's identity (dml_core.identity): empty only in records migrated from a ledger.json.
    content_key: str = ""
    config: dict[str, Any] = Field(default_factory=dict)  # the resolved experiment config it ran
    scored_on: str = ""  # "test" or "holdout"
    results_version: Optional[int] = None
    reused_from: Optional[str] = None  # directory of the sweep whose run produced this result; None = ran here
    wall_s: Optional[float] = None
    hardware: Optional[str] = None
    code_version: Optional[str] = None
    checkpoint: Optional[str] = None

    @property
    def reused(self) -> bool:
        return self.reused_from is not None

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def ended(self) -> bool:
        return self.status in (FINISHED, FAILED)

    def value(self, metric: str) -> float:
        """The last evaluation's `metric`, NaN when missing."""
        return float(self.metrics.get(metric, math.nan))


class BestChoice(_Record):
    """What the search chose for one cell (decided once, then kept)."""

    params: dict[str, Any]
    trial_id: str
    value: float
    # The search's resolution (sweep.selection): False when the best was within noise of another
    # candidate and the choice fell back to the documented rule, with `note` saying so.
    separated: bool = True
    noise: Optional[float] = None  # standard error of the chosen score; None when unknown
    queries: Optional[int] = None  # held-out queries each candidate was scored on
    note: str = ""
    samples: int = 0  # the cell's ended search samples when chosen (a grown search chooses again)


class SweepMeta(_Record):
    name: str = ""
    mlflow_parent_run_id: Optional[str] = None
    tracking_uri: Optional[str] = None  # the MLflow store the runs above live in
    experiment: Optional[str] = None  # the MLflow experiment name
    experiment_id: Optional[str] = None  # its id, for links into the MLflow UI (the report's per-trial links)
    git_commit: str = "unknown"
    wall_s: float = 0.0  # the driver's wall time over every session of the sweep
    sessions: int = 0  # driver sessions that added to wall_s (0 in sweeps of earlier versions)
    best: dict[str, BestChoice] = Field(default_factory=dict)  # cell id -> the search's choice


class SweepRecords(_Record):
    meta: SweepMeta
    trials: list[TrialRecord]

    def final(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.phase == FINAL]

    def search(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.phase == SEARCH]


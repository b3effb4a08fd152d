"""From one experiment YAML to the list of trials a sweep runs.

    cells  = grid axes (full product) x arms, minus `exclude`   (an arm may pin an axis, or opt
                                                                out of it by pinning it to null;
                                                                a named axis sets its own key per
                                                                arm, `sweep.axes.<name>.keys`)
    trials = cells x seeds                                      (the same seeds everywhere)

With a `search:` block the sweep has two phases, because Optuna's TPE sampler cannot also walk a
grid (OptunaSearch rejects `grid_search`) and because a search needs its own validation data:

1. search: per cell, `num_samples` Optuna TPE trials on the first seed (one study per cell, see
   `sweep.search`), each trained on the training classes minus a held-out fraction
   (`data.holdout`) and scored on those held-out classes -- never on the test classes (Musgrave
   et al., "A Metric Learning Reality Check", ECCV 2020);
2. final: per cell, the best searched parameters re-run for every seed on the full training
   classes and scored on the test split. Only final trials enter the statistics.

Without `search:` only the final phase runs. This module imports neither Ray nor MLflow, so
`--dry-run` and the tests of the expansion are fast.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from dml_core.config import ExperimentConfig, apply_overrides, config_from_dict, get_dotted, parse_overrides, read_yaml
from dml_core.errors import ConfigError
from dml_core.io import read_json
from dml_core.params.datasets import DATASETS

from sweep.records import FINAL, SEARCH
from sweep.resources import trial_loader_workers
from sweep.spec import SweepError, SweepSpec, parse_sweep

PLAN_FILE = "plan.json"  # the typed plan as JSON: what marks a folder as a sweep to --resume
PLAN_YAML = "sweep.yaml"  # the sweep's definition in its folder, rewritten by each session (sweep.runner)


def yaml_value(value: Any) -> str:
    """A cell coordinate as written in the YAML: strings bare, the rest as JSON (`null`, `0.1`)."""
    return value if isinstance(value, str) else json.dumps(value)


# Data locations in a trial config are the dataset's path fields (`DataConfig.path_fields`). Ray
# runs each trial in its own working directory, so a relative path is made absolute in the
# driver, against the current working directory -- the same rule as a single run (`dml_core`
# resolves `data.root` against the cwd). A path naming `${DML_DATA}` is left for each trial to
# expand on its own node (`dml_core.data.roots`).
def _path_keys() -> set[str]:
    """`data.<field>` for each path field of any registered dataset (an arm may switch datasets)."""
    return {f"data.{f}" for dataset in DATASETS for f in dataset.params.path_fields()}


def _absolute(value: Any) -> Any:
    # `~` and `${DML_DATA}/...` are expanded by the data layer, in the trial: leave them as written.
    if isinstance(value, str) and value and "://" not in value and not value.startswith(("~", "$")) \
            and "${" not in value and not os.path.isabs(value):
        return os.path.abspath(value)
    return value


# What a trial would otherwise resolve on the node it lands on; fixed in the driver so that the
# trial runs with, and the content key names (dml_core.identity), the same values:
# - train.num_threads null: the trial's `cpu` (Ray reserves that many cores; torch's default is
#   the node's core count, and the thread count changes the numbers);
# - train.device auto: cuda when the trial asks for a GPU (Ray then gives it one), else cpu --
#   Ray 2.x no longer hides a node's GPUs from a trial that asks for none, so `auto` there would
#   take an unreserved GPU and key a GPU result as whatever the driver guessed;
# - eval.knn_backend auto: torch on cuda, else faiss (`dml_core.evaluation.knn.resolve_backend`).
_PLACEMENT = ("train.num_threads", "train.device", "eval.knn_backend")


def _placement_fields(config: dict[str, Any]) -> dict[str, Any]:
    return {k: get_dotted(config, k) for k in _PLACEMENT}


def _fixed_placement(base: dict[str, Any], written: dict[str, Any], spec: SweepSpec,
                     dotted: bool = False) -> dict[str, Any]:
    """The `_PLACEMENT` values a trial runs with, from those `written` (dotted keys): as dotted
    overrides, or (`dotted` False) as `base` sections updated."""
    res = spec.resources_per_trial
    threads, device, backend = (written[k] for k in _PLACEMENT)
    threads = max(1, int(res.cpu)) if threads is None else threads
    device = ("cuda" if res.gpu > 0 else "cpu") if device == "auto" else device
    backend = ("torch" if device == "cuda" else "faiss") if backend == "auto" else backend
    fixed = dict(zip(_PLACEMENT, (threads, device, backend)))
    if dotted:
        return fixed
    return {"train": {**base["train"], "num_threads": threads, "device": device},
            "eval": {**base["eval"], "knn_backend": backend}}


@dataclass
class Cell:
    """One point of the grid x arms product: what differs from the base experiment."""

    arm: Optional[str]
    coords: dict[str, Any]  # grid key -> value (an arm-pinned axis holds the arm's value)
    overrides: dict[str, Any]  # every dotted key this cell sets (coords + the arm's overrides)

    @property
    def id(self) -> str:
        parts = ([f"arm={self.arm}"] if self.arm is not None else []) + [f"{k}={yaml_value(v)}" for k, v in self.coords.items()]
        return ",".join(parts) or "base"

    def get(self, key: str) -> Any:
        return self.arm if key == "arm" else self.coords.get(key)

    def matches(self, partial: dict[str, Any]) -> bool:
        """True when the cell agrees with every key of `partial` (`arm` or grid keys)."""
        return all(self.get(k) == v for k, v in partial.items())


def expand_cells(spec: SweepSpec) -> list[Cell]:
    arms = list(spec.arms.items()) or [(None, {})]
    cells = []
    for arm, arm_overrides in arms:
        # A named axis (`axes.<name>.keys`) sets its arm's own key and is no coordinate of an arm
        # it does not bind: such an arm runs once, the key as configured (SEE's n_expan for PA).
        keys = {k: spec.axis_key(k, arm) for k in spec.grid}
        axes = {k: [arm_overrides[k]] if k in arm_overrides else values for k, values in spec.grid.items()
                if keys[k] is not None}
        # An arm that pins a grid key to null takes no part in that axis: its cells leave the key
        # unset (an axis that its component does not have, e.g. EE's n_inner_pts for `none`).
        unset = {k for k in spec.grid if k in arm_overrides and arm_overrides[k] is None}
        for combo in itertools.product(*axes.values()):
            coords = dict(zip(axes, combo))
            settings = {keys[k]: v for k, v in coords.items()}
            overrides = {k: v for k, v in {**settings, **arm_overrides}.items() if k not in unset}
            cell = Cell(arm, coords, overrides)
            if not any(cell.matches(part) for part in spec.exclude):
                cells.append(cell)
    return cells


@dataclass
class TrialSpec:
    """What one Tune trial runs; travels inside the Tune config, so plain JSON types only."""

    phase: str
    cell: str
    arm: Optional[str]
    coords: dict[str, Any]
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)  # the cell's settings (+ search holdout)
    params: dict[str, Any] = field(default_factory=dict)  # searched values chosen for a final trial

    @property
    def key(self) -> str:
        return f"{self.cell}/seed={self.seed}" if self.phase == FINAL else f"{SEARCH}/{self.cell}"

    def ledger_key(self, trial_id: str) -> str:
        """The key of the Tune trial `trial_id` running this spec in the sweep's trial store (and of its
        checkpoint): a final trial is its cell and seed, whichever Tune experiment runs it; a
        search sample is one Tune trial."""
        return f"{self.key}/{trial_id}" if self.phase == SEARCH else self.key

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialSpec":
        return cls(**d)


def trial_config(base: dict[str, Any], trial: TrialSpec, params: dict[str, Any] | None, source: str) -> ExperimentConfig:
    """The validated experiment config of one trial: base + cell + searched params + seed.

    `params` are the values Optuna sampled for a search trial; a final trial carries its cell's
    best values in `trial.params`."""
    overrides = {**trial.overrides, **trial.params, **(params or {}), "seed": trial.seed}
    return config_from_dict(apply_overrides(base, overrides), f"{source} [{trial.key}]")


@dataclass
class SweepPlan:
    source: str  # the YAML path, for messages
    name: str
    base: dict[str, Any]  # the experiment config without `sweep:`, data paths absolute
    raw_sweep: dict[str, Any]
    spec: SweepSpec
    cells: list[Cell]
    seeds: list[int]
    # Each data root's fingerprint (dml_core.data.fingerprint), read once per driver session.
    data_fingerprints: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "SweepPlan":
        raw = apply_overrides(read_yaml(path), parse_overrides(overrides))
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str) -> "SweepPlan":
        raw = dict(raw)
        block = raw.pop("sweep", None)
        spec = parse_sweep(block, source)
        base_cfg = config_from_dict(raw, source)  # the base experiment must be valid on its own
        base = base_cfg.to_dict()
        base.pop("sweep", None)
        for leaf in base_cfg.data.path_fields():  # each dataset has only the paths its layout reads
            base["data"][leaf] = _absolute(base["data"][leaf])
        written = _placement_fields(base)
        base |= _fixed_placement(base, written, spec)
        if base["data"]["num_workers"] is None:
            # Auto: the trial's CPUs but the training loop's one, not the cores of whichever node it lands on.
            base["data"]["num_workers"] = trial_loader_workers(spec.resources_per_trial)
        cells, path_keys = expand_cells(spec), _path_keys()
        for cell in cells:
            cell.overrides = {k: _absolute(v) if k in path_keys else v for k, v in cell.overrides.items()}
            if any(k in cell.overrides for k in _PLACEMENT):
                cell.overrides |= _fixed_placement(base, {**written, **cell.overrides}, spec, dotted=True)
        if not cells:
            raise SweepError(f"{source}: sweep.exclude: removes every cell")
        name = spec.name or base_cfg.name
        seeds = spec.policy.seeds if spec.policy else spec.seeds or [base_cfg.seed]  # a policy: every seed it may run
        return cls(source, name, base, dict(block or {}), spec, cells, seeds)

    # ------------------------------------------------------------------ trials

    def search_trial(self, cell: Cell) -> TrialSpec:
        overrides = dict(cell.overrides)
        if self.spec.search and self.spec.search.holdout is not None:
            overrides["data.holdout"] = self.spec.search.holdout
        if self.spec.search and self.spec.search.folds:
            # The trial trains every fold in turn (sweep.trainable); data.fold is set per fit.
            overrides["data.folds"] = self.spec.search.folds
        return TrialSpec(SEARCH, cell.id, cell.arm, dict(cell.coords), self.seeds[0], overrides)

    def final_trials(self, best_params: dict[str, dict[str, Any]] | None = None) -> list[TrialSpec]:
        """Cells x seeds; `best_params[cell_id]` (from the search phase) is applied to each cell."""
        best_params = best_params or {}
        return [
            TrialSpec(FINAL, c.id, c.arm, dict(c.coords), seed, dict(c.overrides), dict(best_params.get(c.id, {})))
            for c in self.cells
            for seed in self.seeds
        ]

    @property
    def num_search_trials(self) -> int:
        return len(self.cells) * self.spec.search.num_samples if self.spec.search else 0

    def search_budget(self) -> dict[str, dict[str, int]]:
        """Per arm ("base" without arms): its search cells, Optuna samples, and training runs
        (samples x folds). The Reality Check's fairness rule is the same budget for every arm."""
        if not self.spec.search:
            return {}
        folds = self.spec.search.folds or 1
        out: dict[str, dict[str, int]] = {}
        for cell in self.cells:
            arm = out.setdefault(cell.arm or "base", {"cells": 0, "samples": 0, "fits": 0})
            arm["cells"] += 1
            arm["samples"] += self.spec.search.num_samples
            arm["fits"] += self.spec.search.num_samples * folds
        return out

    @property
    def max_epochs(self) -> int:
        return max(int(c.overrides.get("train.epochs", self.base["train"]["epochs"])) for c in self.cells)

    def to_json(self) -> dict[str, Any]:
        """What `sweep/report.py` needs to rebuild the report from the sweep directory alone."""
        return {
            "name": self.name,
            "source": self.source,
            "base": self.base,  # what a resumed sweep's base config is compared with
            "axes": list(self.spec.grid),
            "arms": list(self.spec.arms),
            "seeds": self.seeds,
            "cells": [{"id": c.id, "arm": c.arm, "coords": c.coords} for c in self.cells],
            "baseline": self.spec.baseline,
            "metric": self.spec.metric,
            "mode": self.spec.mode,
            "search": self.spec.search.model_dump(mode="json") if self.spec.search else None,
            "search_budget": self.search_budget(),
            "sweep": self.spec.model_dump(mode="json"),
        }


def load_plan(path: str | Path, overrides: list[str] | None = None) -> SweepPlan:
    """Read and check a sweep YAML; `ConfigError` and `SweepError` are both one-line ValueErrors."""
    try:
        return SweepPlan.from_yaml(path, overrides)
    except ConfigError as e:
        raise SweepError(str(e)) from None


def plan_of(sweep_dir: str | Path) -> SweepPlan:
    """The typed plan of a sweep directory: its definition (`sweep.yaml`), its messages naming the
    YAML it was started from (`plan.json`'s `source`). The one way a sweep folder's plan is read."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / PLAN_YAML).is_file():
        raise SweepError(f"{sweep_dir}: not a sweep directory (no {PLAN_YAML})")
    started = sweep_dir / PLAN_FILE
    source = read_json(started).get("source", str(sweep_dir / PLAN_YAML)) if started.is_file() else str(sweep_dir / PLAN_YAML)
    try:
        return SweepPlan.from_dict(read_yaml(sweep_dir / PLAN_YAML), source)
    except ConfigError as e:
        raise SweepError(str(e)) from None


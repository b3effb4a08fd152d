"""The typed `sweep:` block of an experiment YAML.

`dml_core` keeps the block verbatim and never reads it; this module validates it. Every mistake
becomes a `SweepError` whose message is one line naming the file and the field, e.g.
``experiments/x.yaml: sweep.grid.expansion.n_inner: unknown config key (did you mean
'expansion.n_inner_pts'?)``.

Keys in `grid`, `arms`, `exclude`, `baseline` and `search.params` are dotted paths into the
experiment config (`model.embedding_dim`, `loss.margin`); they are checked against
`ExperimentConfig` here so a typo fails before Ray starts.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal, Optional, Union

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from dml_core.errors import format_validation_error
from dml_core.io import check_folder_name
from dml_core.evaluation.names import check_mode, direction, looks_like_metric
from dml_core.registry import Strict
from sweep.config_keys import check_keys
from sweep.seed_policy import SeedPolicy, SeedsField


class SweepError(ValueError):
    """A mistake in a sweep block or sweep directory; the message is one line."""


# --------------------------------------------------------------------------- the block


def _check_metric(v: str) -> str:
    """A metric some run can report; whether these trials report it is checked per trial config
    (`sweep.checks.check_plan`, i.e. `--dry-run`), which knows the dataset's Recall@K list."""
    if not looks_like_metric(v):
        raise ValueError("expected one of loss, recall_at_<K>, map_at_r, r_precision, nmi, f1")
    return v


class SearchParam(Strict):
    """One searched hyper-parameter; `int` bounds are inclusive."""

    type: Literal["loguniform", "uniform", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _bounds(self) -> "SearchParam":
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("categorical needs a non-empty `choices` list and no low/high")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes low/high, not choices")
        for end, value in (("low", self.low), ("high", self.high)):
            if value is not None and not math.isfinite(value):  # `.inf` crashed the driver once Ray ran
                raise ValueError(f"{end}: must be a finite number, got {value}")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs low < high")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.type == "int" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError("int needs integer low and high")
        return self


# A fold search's default metric: MAP@R, the Reality Check's (Musgrave et al. 2020).
FOLD_METRIC = "map_at_r"


class SearchSpec(Strict):
    """Optuna TPE search, run per grid cell on the first seed (see `sweep.plan`)."""

    params: dict[str, SearchParam] = Field(min_length=1)
    num_samples: int = Field(10, ge=1)
    metric: Optional[str] = None  # default: sweep.metric
    # default and only allowed value: the search metric's direction (`evaluation.names.direction`)
    mode: Optional[Literal["max", "min"]] = None
    # Musgrave et al. 2020 (A Metric Learning Reality Check): tuning on the test classes inflates
    # results. Search trials hold out this fraction of the *training* classes and evaluate on
    # them; the final per-seed runs then train on all training classes and test on the test split.
    # `null` searches on the test split (not recommended; reported in the plan).
    holdout: Optional[float] = Field(0.2, gt=0, lt=1)
    # The Reality-Check protocol instead (Musgrave et al. 2020, Sec. 4): the training classes in
    # `folds` class-disjoint folds; each sample is trained `folds` times (on all folds but one,
    # scored on the one held out) and scored by the fold mean of the search metric (MAP@R unless
    # `metric` says otherwise). Replaces `holdout`.
    folds: Optional[int] = Field(None, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _folds_or_holdout(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("folds") is not None:
            if data.get("holdout") is not None:
                raise ValueError("folds: search.folds cross-validates on the training classes; drop search.holdout")
            data = {**data, "holdout": None}  # the folds are the held-out classes
        return data

    @field_validator("params")
    @classmethod
    def _keys(cls, v: dict[str, SearchParam]) -> dict[str, SearchParam]:
        check_keys(v)
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _check_metric(v)


class SchedulerSpec(Strict):
    """Early stopping of search trials: ASHA (Li et al. 2020) on the per-epoch search metric."""

    name: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="epochs before a trial may be stopped")
    reduction_factor: float = Field(2.0, gt=1)


RAY_RESOURCE_UNIT = 1e-4  # Ray counts resources in ten-thousandths (ray._raylet.RESOURCE_UNIT_SCALING)


class Resources(Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0, description="fractional GPUs share one device")

    @field_validator("cpu", "gpu")
    @classmethod
    def _ray_quantity(cls, v: float, info: ValidationInfo) -> float:
        # What Ray refuses when the first trial is placed (every trial then fails): shares below
        # its resource unit, and a fraction of more than one GPU.
        if 0 < v < RAY_RESOURCE_UNIT:
            raise ValueError(f"{v} is below {RAY_RESOURCE_UNIT}, the smallest share Ray schedules")
        if info.field_name == "gpu" and v > 1 and not float(v).is_integer():
            raise ValueError(f"more than one GPU per trial must be a whole number, got {v}")
        return v


class MlflowSpec(Strict):
    # Precedence: this key > env MLFLOW_TRACKING_URI > sqlite:///mlflow.db (current directory).
    tracking_uri: Optional[str] = None
    experiment: Optional[str] = None  # default: the sweep name


class ReportSpec(Strict):
    # Which evaluation of a final trial the statistics use: `last` (the model as trained) or
    # `best` (its best epoch by sweep.metric; optimistic, the epoch is chosen on the test split) or
    # `best_on_test` (the papers' selection, e.g. EE's and SEE's reference code: the best test
    # Recall@1 over the evaluations; test-set selection, labelled so wherever shown).
    evaluation: Literal["last", "best", "best_on_test"] = "last"


_AXIS_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


class AxisSpec(Strict):
    """How people read one grid axis, and (with `keys`) which config key spells it in each arm.

    EE's `expansion.n_inner_pts` and SEE's `expansion.n_expan` are one quantity, synthetic points
    per sample: a grid axis `n` bound with `keys: {ee: expansion.n_inner_pts, see:
    expansion.n_expan}` gives both arms one cell per value and one curve each on the same axis."""

    # The axis's name in figures and tables (`embedding dimension`); default: `labels.axis_label`.
    label: Optional[str] = Field(None, min_length=1)
    # arm -> the dotted config key this axis sets in that arm. Arms not listed take no part in the
    # axis (one cell each, the key left as configured). Only for a grid axis named by a plain word.
    keys: Optional[dict[str, str]] = Field(None, min_length=1)
    # Where the cells that take no part in the axis sit on it in the figures: the loss alone is
    # n = 0 synthetic points. Unset: they are drawn as a horizontal line with its band.
    others_at: Optional[Union[int, float]] = None

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: Optional[dict[str, str]]) -> Optional[dict[str, str]]:
        if v is not None:
            for arm, key in v.items():
                try:
                    check_keys([key])
                except ValueError as e:
                    raise ValueError(f"{arm}: {e}") from None
        return v


class SweepSpec(Strict):
    """The `sweep:` block. Cells = grid x arms (minus `exclude`); trials = cells x seeds."""

    name: Optional[str] = None  # default: the experiment's `name`
    # Ablation axes: dotted config key (or an axis named in `axes` with `keys`) -> values. The
    # full product is taken.
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    # Per grid axis: its readable label, the key it sets per arm, where arms without it sit.
    axes: dict[str, AxisSpec] = Field(default_factory=dict)
    # Named override sets crossed with the grid. An arm that sets a grid key pins that axis for
    # itself; pinned to null the axis does not apply to the arm, whose cells leave the key unset
    # (e.g. `none: {expansion.name: none, expansion.n_inner_pts: null}` runs once, not once per
    # n_inner_pts value: `none` has no n_inner_pts).
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Partial cells to drop, e.g. `[{arm: ee, expansion.n_inner_pts: 0}]`.
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    # The same seeds in every cell, so cells can be compared pairwise by seed: a list, or a
    # policy that adds seeds in rounds until the answer is clear, e.g.
    # `{start: 3, max: 12, until: decided}` (see SeedPolicy).
    seeds: Optional[SeedsField] = None  # default: [the experiment's seed]
    # Points of the metric (percentage points for fractions): a comparison whose interval lies
    # within +-margin is "equivalent within +-margin" (TOST) instead of "inconclusive".
    equivalence_margin: Optional[float] = Field(None, gt=0, allow_inf_nan=False)  # .inf made everything "equivalent"
    search: Optional[SearchSpec] = None
    scheduler: SchedulerSpec = SchedulerSpec()
    resources_per_trial: Resources = Resources()
    max_concurrent_trials: Optional[int] = Field(None, ge=1)
    max_failures: int = Field(2, ge=0, description="retries of a crashing trial")
    # The reference cell(s) for paired comparisons: a partial cell, e.g. `{arm: none}` or
    # `{expansion.n_inner_pts: 0}`; each cell is compared to the matching cell that agrees with it
    # on every other coordinate that the baseline cells vary in. `arm` may also map each arm to its
    # own reference arm, e.g. `{arm: {ee: ms, see: pa}}` (EE against its loss alone, SEE likewise).
    baseline: Optional[dict[str, Any]] = None
    metric: str = "recall_at_1"
    # The metric's direction (`evaluation.names.direction`: loss min, the rest max), filled in at
    # validation; writing the other one is an error.
    mode: Optional[Literal["max", "min"]] = None
    mlflow: MlflowSpec = MlflowSpec()
    report: ReportSpec = ReportSpec()
    # Ray Tune storage root; the sweep lives in <storage_path>/<name>. Precedence: --out >
    # env DML_STORAGE_PATH > this key > ./sweeps.
    storage_path: Optional[str] = None
    # A trial whose content key (dml_core.identity) some sweep in the trial store finished is not
    # run again (sweep.store); false (or --no-reuse) trains every trial afresh.
    reuse: bool = True

    @model_validator(mode="before")
    @classmethod
    def _named_axes(cls, data: Any) -> Any:
        # A grid axis bound by `axes.<name>.keys` is named by a word, not a config key: keep it out
        # of the key check below (`_cross` checks the binding itself).
        if isinstance(data, dict) and isinstance(data.get("grid"), dict) and isinstance(data.get("axes"), dict):
            bound = {name for name, axis in data["axes"].items() if isinstance(axis, dict) and axis.get("keys")}
            data = {**data, "grid": {k: _Named(v) if k in bound and isinstance(v, list) else v for k, v in data["grid"].items()}}
        return data

    @field_validator("grid", mode="before")
    @classmethod
    def _grid_names(cls, v: Any) -> Any:
        if isinstance(v, dict):
            named = {k for k, values in v.items() if isinstance(values, _Named)}
            try:
                check_keys([k for k in v if k not in named])
            except ValueError as e:
                key = str(e).split(":", 1)[0]
                if re.fullmatch(_AXIS_NAME, key):
                    raise ValueError(f"{e}; a named axis needs sweep.axes.{key}.keys: {{arm: dotted.key}}") from None
                raise
            for k in named:
                if not re.fullmatch(_AXIS_NAME, k):
                    raise ValueError(f"{k}: an axis bound by sweep.axes.{k}.keys is named by a word (letters, digits, '_')")
            v = {k: list(values) if isinstance(values, _Named) else values for k, values in v.items()}
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if not values:
                raise ValueError(f"{key}: needs at least one value")
            if len({repr(x) for x in values}) != len(values):
                raise ValueError(f"{key}: repeated values {values}")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, overrides in v.items():
            if not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
                raise ValueError(f"{name!r}: arm names use letters, digits, '_' and '-'")
            try:
                check_keys(overrides)
            except ValueError as e:
                raise ValueError(f"{name}.{e}") from None
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: Optional[list[int] | SeedPolicy]) -> Optional[list[int] | SeedPolicy]:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"repeated seeds {v}")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return _check_metric(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else check_folder_name(v)

    @model_validator(mode="after")
    def _cross(self) -> "SweepSpec":
        mode = check_mode(self.metric, self.mode, "mode")
        if self.mode != mode:  # assigned only when unset: validate_assignment re-runs this validator
            self.mode = mode
        if self.search is not None:
            check_mode(self.search_metric, self.search.mode, "search.mode")
        self._check_axes()
        coords = {**self.grid, "arm": list(self.arms)}
        for i, part in enumerate(self.exclude):
            _check_partial_cell(part, coords, f"exclude.{i}")
        if self.baseline is not None:
            _check_partial_cell(self.baseline, coords, "baseline")
        if self.search is not None:
            fixed = set(self.grid) | {k for arm in self.arms.values() for k in arm} | set(self.bound_keys)
            clash = sorted(fixed & set(self.search.params))
            if clash:
                raise ValueError(f"search.params.{clash[0]}: also set by grid/arms; search it or fix it, not both")
        if isinstance(self.seeds, SeedPolicy) and self.seeds.until.decided and self.baseline is None:
            raise ValueError("seeds.until: decided needs a baseline: to compare with (or use ci_half_width)")
        if self.scheduler.name == "asha" and self.search is None:
            # Stopping some seeds of a grid cell early would break the paired comparison.
            raise ValueError("scheduler: asha stops search trials early and needs a search: block")
        if self.scheduler.name == "asha" and self.search is not None and self.search.folds:
            raise ValueError("scheduler: asha stops trials on per-epoch results; a search.folds trial reports once, "
                             "its fold mean after all folds")
        return self

    def _check_axes(self) -> None:
        for name, axis in self.axes.items():
            if name not in self.grid:
                raise ValueError(f"axes.{name}: not a grid axis (grid: {sorted(self.grid)})")
            for arm, key in (axis.keys or {}).items():
                if arm not in self.arms:
                    raise ValueError(f"axes.{name}.keys.{arm}: not one of the arms {list(self.arms)}")
                clash = next((k for k in (key, name) if k in self.arms[arm]), None)
                if clash is not None:
                    raise ValueError(f"arms.{arm}.{clash}: set by grid axis {name} (sweep.axes.{name}.keys); drop it from the arm")

    @property
    def bound_keys(self) -> dict[str, str]:
        """Each config key a named axis sets -> the axis."""
        return {key: name for name, axis in self.axes.items() for key in (axis.keys or {}).values()}

    def axis_key(self, axis: str, arm: Optional[str]) -> Optional[str]:
        """The config key grid axis `axis` sets in `arm`: the axis itself for a dotted key, the
        bound key for a named axis (None: the arm takes no part in it)."""
        keys = self.axes[axis].keys if axis in self.axes else None
        return axis if keys is None else keys.get(arm or "")

    @property
    def policy(self) -> Optional[SeedPolicy]:
        return self.seeds if isinstance(self.seeds, SeedPolicy) else None

    @property
    def search_metric(self) -> str:
        """`search.metric`; else MAP@R for a fold search (the Reality Check's metric); else sweep.metric."""
        if self.search and self.search.metric:
            return self.search.metric
        return FOLD_METRIC if self.search and self.search.folds else self.metric

    @property
    def search_mode(self) -> str:
        return direction(self.search_metric)


class _Named(list):
    """The values of a grid axis named by `axes.<name>.keys` while the block is validated."""


def _check_partial_cell(part: dict[str, Any], coords: dict[str, list[Any]], where: str) -> None:
    if not part:
        raise ValueError(f"{where}: empty; name at least one grid key or `arm`")
    for key, value in part.items():
        if key not in coords or (key == "arm" and not coords["arm"]):
            raise ValueError(f"{where}.{key}: not a grid key or `arm` (choose from {sorted(k for k, v in coords.items() if v)})")
        if key == "arm" and isinstance(value, dict) and where == "baseline":
            bad = next((a for a in [*value, *value.values()] if a not in coords["arm"]), None)
            if bad is not None:
                raise ValueError(f"{where}.arm: {bad!r} is not one of the arms {coords['arm']}")
            continue
        if value not in coords[key]:
            raise ValueError(f"{where}.{key}: {value!r} is not one of {coords[key]}")


def parse_sweep(block: dict[str, Any] | None, source: str) -> SweepSpec:
    """Validate a raw `sweep:` block; a missing block is one cell x one seed."""
    if block is None:
        block = {}
    if not isinstance(block, dict):
        raise SweepError(f"{source}: sweep: must be a mapping, got {type(block).__name__}")
    try:
        return SweepSpec.model_validate(block)
    except ValidationError as e:
        message = format_validation_error(e, source, root=("sweep",), model=SweepSpec)
        # The seeds union's tags are not keys of the YAML: `sweep.seeds.policy.max` -> `sweep.seeds.max`.
        raise SweepError(re.sub(r"sweep\.seeds\.(list|policy)\b", "sweep.seeds", message)) from None



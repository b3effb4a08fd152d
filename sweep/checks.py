"""What `--dry-run` (and every sweep's start) checks before anything trains.

Every trial config a sweep can run -- each final cell x seed, and each search cell at the corners
of its search space -- is built and validated; the metric the sweep ranks by must be one the
trial reports; every data path must exist on the driver's machine; each training split must have
the classes and images its P x K batches need. Each failure is one line naming the YAML and the
trial. Fetching datasets (`data.download`) is a separate step the driver asks for
(`check_plan(plan, download=True)`), so that a check alone never touches the network.

Like `sweep.plan`, this module imports neither Ray nor MLflow; the data layer is imported only by
the checks that read data, and what they use of it imports neither torch nor torchvision (~3.5 s
of the driver's start; tests/sweep/test_checks_no_torch.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dml_core.config import ExperimentConfig
from dml_core.evaluation.names import check_metric_name

from sweep.mlflow_check import check_tracking_store
from sweep.plan import FINAL, SweepPlan, TrialSpec, trial_config
from sweep.spec import SearchParam, SweepError

TrialConfigs = list[tuple[TrialSpec, ExperimentConfig]]


def check_plan(plan: SweepPlan, *, download: bool = False) -> None:
    """Every trial config (search bounds included), metric, data path and P x K, as one-line
    errors; with `download`, datasets with `data.download` on are fetched before their paths are
    checked, so trials on this node find them and a blocked network is one line naming the URL."""
    trials = trial_configs(plan)
    check_tracking_store(plan.spec.mlflow.tracking_uri)
    if download:
        download_data(plan.source, trials)
    check_paths(plan.source, trials)
    check_batches(plan.source, trials)


def trial_configs(plan: SweepPlan) -> TrialConfigs:
    """The validated config of every final trial and of each search cell at each search corner;
    then the metric each is ranked by must be one it reports (its dataset's Recall@K): a final
    trial's `sweep.metric`, a search sample's `sweep.search.metric` (or `sweep.metric`)."""
    source, spec = plan.source, plan.spec
    trials = [(t, trial_config(plan.base, t, None, source)) for t in plan.final_trials()]
    if spec.search:
        corners = search_corners(spec.search.params)
        trials += [(t, trial_config(plan.base, t, p, source)) for t in map(plan.search_trial, plan.cells) for p in corners]
    searched = "sweep.search.metric" if spec.search and spec.search.metric else "sweep.metric"
    for trial, cfg in trials:
        field, metric = ("sweep.metric", spec.metric) if trial.phase == FINAL else (searched, spec.search_metric)
        try:
            check_metric_name(metric, cfg.metric_names(), field)
        except ValueError as e:
            raise SweepError(f"{source} [{trial.key}]: {e}") from None
    return trials


def search_corners(params: dict[str, SearchParam]) -> list[dict[str, Any]]:
    """One config per search bound / choice, the others at their low end: cheap coverage that
    catches e.g. a `high` that a config field rejects."""
    low = {k: (p.choices[0] if p.type == "categorical" else _bound(p, p.low)) for k, p in params.items()}
    corners = [low]
    for key, p in params.items():
        values = p.choices[1:] if p.type == "categorical" else [_bound(p, p.high)]
        corners += [{**low, key: v} for v in values]
    return corners


def download_data(source: str, trials: TrialConfigs) -> None:
    """Fetch each distinct data selection whose `data.download` is on (once per selection)."""
    from dml_core.data.download import ensure_downloaded
    from dml_core.data.roots import resolve_data_paths

    seen = set()
    for _, cfg in trials:
        data = resolve_data_paths(cfg.data)
        if data.download and data.model_dump_json() not in seen:
            seen.add(data.model_dump_json())
            try:
                ensure_downloaded(data)
            except ValueError as e:
                raise SweepError(f"{source}: {e}") from None


def check_paths(source: str, trials: TrialConfigs) -> None:
    """Every data path exists on the driver's machine."""
    from dml_core.data.download import where_to_get
    from dml_core.data.roots import DATA_ENV, data_home, resolve_data_paths, uses_data_home

    seen = set()
    for _, cfg in trials:
        written, data = cfg.data, resolve_data_paths(cfg.data)
        for key in data.data_roots():
            path = getattr(data, key)
            if path is None or path in seen or "://" in path:
                continue
            seen.add(path)
            if not Path(path).exists():
                raw = getattr(written, key)  # present: the resolved copy has the same fields
                why = (f"{raw} with {DATA_ENV}={data_home()}" if uses_data_home(raw)
                       else f"relative paths resolve against the current directory, {os.getcwd()}")
                raise SweepError(f"{source}: data.{key}: {path} does not exist ({why}; {where_to_get(data.name)})")


def check_batches(source: str, trials: TrialConfigs) -> None:
    """P x K of every trial against its training split's classes and images (read once per
    data selection: annotation files and folder listings, no pixels)."""
    from dml_core.data.index import check_batch, data_index

    for trial, cfg in trials:
        try:
            if cfg.data.folds is not None:
                check_folds(cfg)
            else:
                check_batch(cfg.data, data_index(cfg.data))
        except ValueError as e:
            raise SweepError(f"{source} [{trial.key}]: {e}") from None


# Fewer held-out classes than this and a fold's score means nothing: with one class every
# embedding retrieves its own class, MAP@R 100 whatever the learning rate.
MIN_FOLD_CLASSES = 2


def check_folds(cfg: ExperimentConfig) -> None:
    """Every fold of a fold search (`sweep.search.folds`), from one read of the training classes:
    it holds out at least `MIN_FOLD_CLASSES` classes, and the other folds' classes give its
    training P x K batches. `ValueError` naming the field otherwise."""
    from dml_core.data.index import DataIndex, check_batch, data_index
    from dml_core.data.splits import fold_classes

    data, k = cfg.data, cfg.data.folds
    whole = data_index(data.model_copy(update={"folds": None, "fold": 0}))  # the training classes before folds
    n = whole.num_classes
    for fold in range(k):
        held = set(fold_classes(n, k, fold))
        if len(held) < MIN_FOLD_CLASSES:
            most = f"; at most {n // MIN_FOLD_CLASSES} folds" if n >= MIN_FOLD_CLASSES else ""
            raise ValueError(f"sweep.search.folds: {k} folds of the {n} training classes of {data.name} hold out "
                             f"{len(held)} class{'es' * (len(held) != 1)} in fold {fold}; a fold needs at least "
                             f"{MIN_FOLD_CLASSES} (one class scores every model 100 %){most}")
        rest = tuple(c for i, c in enumerate(whole.images_per_class) if i not in held)
        if data.num_classes is not None:  # the first N training classes, after the fold split
            rest = rest[:data.num_classes]
        try:
            check_batch(data, DataIndex(rest))
        except ValueError as e:
            raise ValueError(f"sweep.search.folds: {k} folds leave fold {fold} {len(rest)} training classes: {e}") from None



def _bound(p: Any, value: float) -> Any:
    return int(value) if p.type == "int" else value

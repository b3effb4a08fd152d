"""What `--dry-run` (and every sweep's start) checks before anything trains.

Every trial config a sweep can run -- each final cell x seed, and each search cell at the corners
of its search space -- is built and validated; the metric the sweep ranks by must be one the
trial reports; every data path must exist on the driver's machine; each training split must have
the classes and images its P x K batches need. Each failure is one line naming the YAML and the
trial. Fetching datasets (`data.download`) is a separate step the driver asks for
(`check_plan(plan, download=True)`), so that a check alone never touches the network.

Like `sweep.plan`, this module imports neither Ray nor MLflow; the data layer is imported only when
the data is checked, in one call (`dml_core.data.index.check_selections`: fetch, paths, P x K,
folds), and what it uses imports neither torch nor torchvision (~3.5 s of the driver's start;
tests/sweep/test_checks_no_torch.py).
"""
from __future__ import annotations

from typing import Any

from dml_core.config import ExperimentConfig
from dml_core.evaluation.names import check_metric_name

from sweep.mlflow_check import check_tracking_store
from sweep.plan import FINAL, SweepPlan, TrialSpec, trial_config
from sweep.spec import SearchParam, SweepError

TrialConfigs = list[tuple[TrialSpec, ExperimentConfig]]


def check_plan(plan: SweepPlan, *, download: bool = False) -> str:
    """Every trial config (search bounds included), metric, tracking store, data path and P x K,
    as one-line errors; with `download`, datasets with `data.download` on are fetched before their
    paths are checked, so trials on this node find them and a blocked network is one line naming
    the URL. Returns the tracking URI it checked (`sweep.mlflow_check.resolve_tracking_uri`)."""
    from dml_core.data.index import check_selections

    trials = trial_configs(plan)
    tracking_uri = check_tracking_store(plan.spec.mlflow.tracking_uri)
    # The data layer reads each selection once; the sweep names the trial a problem is of.
    configs = [cfg.data for _, cfg in trials]
    problem = check_selections(configs, download=download, folds_field="sweep.search.folds")
    if problem is not None:
        trial = "" if problem.at is None else f" [{trials[problem.at][0].key}]"
        raise SweepError(f"{plan.source}{trial}: {problem.message}")
    return tracking_uri


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


def _bound(p: Any, value: float) -> Any:
    return int(value) if p.type == "int" else value

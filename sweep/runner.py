"""Runs a `SweepPlan` on Ray Tune: the search phase (per cell), then the final phase.

Each phase is one Ray Tune experiment inside the sweep directory (`search-000`, ..., `final`).
Resuming (`--resume`) walks the same phases: a phase the ledger marks complete is skipped, an
interrupted one is continued with `Tuner.restore` (unfinished trials resume from their last
checkpoint; finished ones are never re-run; errored ones are kept as failed unless
`--retry-failed`, which restarts them from scratch).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from sweep.ledger import FAILED, FINISHED, KILLED, PLAN_FILE, Ledger, write_json_atomic
from sweep.plan import FINAL, SEARCH, Cell, SweepPlan, TrialSpec
from sweep.spec import SweepError

log = logging.getLogger("sweep")

# Tune snapshots its experiment state at most every 10 s by default; a driver killed in between
# may lose the completion of a trial (it would then re-run from its last checkpoint, and the ledger
# keeps MLflow free of duplicates). Snapshot more often: the state of a sweep is small.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")


class SweepInterrupted(Exception):
    """Ctrl-C (or a lost driver loop) stopped a phase before all its trials ended."""


@dataclass
class SweepOutcome:
    sweep_dir: Path
    status: str  # FINISHED or KILLED
    report_files: list[Path]


def default_sweep_dir(plan: SweepPlan, out: Optional[str] = None) -> Path:
    """--out > $DML_STORAGE_PATH/<name> > sweep.storage_path/<name> > ./sweeps/<name>."""
    if out:
        return Path(out).resolve()
    root = os.environ.get("DML_STORAGE_PATH") or plan.spec.storage_path or "sweeps"
    if "://" in root:
        raise SweepError(
            f"{plan.source}: sweep.storage_path: {root}: use a filesystem path that every node sees (e.g. NFS); "
            "the sweep ledger and report are plain files"
        )
    return (Path(root) / plan.name).resolve()


def prepare_sweep_dir(plan: SweepPlan, sweep_dir: Path, resume: bool) -> Ledger:
    plan_file = sweep_dir / PLAN_FILE
    if resume:
        if not plan_file.is_file():
            raise SweepError(f"{sweep_dir}: no sweep to resume here (no {PLAN_FILE}); run without --resume")
        started = json.loads(plan_file.read_text())["fingerprint"]
        if started != plan.fingerprint():
            raise SweepError(
                f"{sweep_dir}: was started from a different sweep definition; resume with the same YAML and "
                "--set values, or start a new sweep (--out DIR or --set sweep.name=...)"
            )
    elif plan_file.exists():
        raise SweepError(f"{sweep_dir}: a sweep already exists here; add --resume to continue it, or use --out DIR / --set sweep.name=...")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        write_json_atomic(plan_file, plan.to_json())
        (sweep_dir / "sweep.yaml").write_text(yaml.safe_dump({**plan.base, "sweep": plan.raw_sweep}, sort_keys=False))
        (sweep_dir / "plan.txt").write_text(plan.describe(sweep_dir) + "\n")
    return Ledger(sweep_dir)


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # the default embeds the whole config in the folder name


def _interrupted(results: Any, expected: int) -> bool:
    """Tune returns normally after Ctrl-C; trials that neither ended nor errored show it."""
    unfinished = [r for r in results if r.error is None and not (r.metrics or {}).get("done")]
    return len(results) < expected or bool(unfinished)


class SweepRunner:
    def __init__(self, plan: SweepPlan, sweep_dir: Path, ledger: Ledger, tracking_uri: str, experiment: str,
                 *, resume: bool = False, retry_failed: bool = False, verbose: int = 1) -> None:
        from ray import tune

        from sweep.tracking import TrackingCallback
        from sweep.trainable import run_trial

        self.plan, self.spec = plan, plan.spec
        self.sweep_dir, self.ledger = sweep_dir, ledger
        self.resume, self.retry_failed, self.verbose = resume, retry_failed, verbose
        res = self.spec.resources_per_trial
        self.trainable = tune.with_resources(run_trial, {"cpu": res.cpu, "gpu": res.gpu})
        self.callback = TrackingCallback(str(sweep_dir), tracking_uri, experiment, plan.name)

    # ---------------------------------------------------------------- phases

    def run(self) -> None:
        best: dict[str, dict[str, Any]] = {}
        if self.spec.search:
            for i, cell in enumerate(self.plan.cells):
                self._run_phase(f"{SEARCH}-{i:03d}", self._search_tuner, cell, expected=self.spec.search.num_samples)
                chosen = self._best_params(cell)
                if chosen is not None:
                    best[cell.id] = chosen
        trials = self.plan.final_trials(best)
        if self.spec.search:
            trials = self._drop_unsearched(trials, best)
        if trials:
            self._run_phase(FINAL, self._final_tuner, trials, expected=len(trials))

    def _run_phase(self, name: str, make_tuner: Any, arg: Any, expected: int) -> None:
        from ray import tune

        if self.ledger.phase_done(name) and not (self.retry_failed and self._has_crashes(name)):
            return
        path = self.sweep_dir / name
        if self.resume and tune.Tuner.can_restore(str(path)):
            tuner = tune.Tuner.restore(
                str(path), self.trainable, resume_unfinished=True, resume_errored=False, restart_errored=self.retry_failed
            )
        else:
            tuner = make_tuner(name, arg)
        results = tuner.fit()
        if _interrupted(results, expected):
            raise SweepInterrupted(name)
        self.ledger.mark_phase_done(name)

    def _has_crashes(self, phase: str) -> bool:
        return any(r.get("tune_experiment") == phase and r.get("status") == FAILED and r.get("failure") == "crash"
                   for r in self.ledger.trials())

    def _run_config(self, name: str) -> Any:
        from ray import tune

        return tune.RunConfig(
            name=name,
            storage_path=str(self.sweep_dir),
            callbacks=[self.callback],
            failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            verbose=self.verbose,
        )

    def _param_space(self, metric: str) -> dict[str, Any]:
        return {"base": self.plan.base, "source": self.plan.source, "metric": metric}

    def _final_tuner(self, name: str, trials: list[TrialSpec]) -> Any:
        from ray import tune

        space = {**self._param_space(self.spec.metric), "trial": tune.grid_search([t.to_dict() for t in trials])}
        config = tune.TuneConfig(
            num_samples=1, max_concurrent_trials=self.spec.max_concurrent_trials, reuse_actors=True,
            trial_dirname_creator=_trial_dirname,
        )
        return tune.Tuner(self.trainable, param_space=space, tune_config=config, run_config=self._run_config(name))

    def _search_tuner(self, name: str, cell: Cell) -> Any:
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        search = self.spec.search
        space = {
            **self._param_space(self.spec.search_metric),
            "trial": self.plan.search_trial(cell).to_dict(),
            "params": {key: _domain(p) for key, p in search.params.items()},
        }
        scheduler = None
        if self.spec.scheduler.name == "asha":
            scheduler = ASHAScheduler(
                time_attr="epoch", max_t=self.plan.max_epochs, grace_period=self.spec.scheduler.grace_period,
                reduction_factor=self.spec.scheduler.reduction_factor,
            )
        config = tune.TuneConfig(
            search_alg=OptunaSearch(seed=self.plan.seeds[0]), scheduler=scheduler, num_samples=search.num_samples,
            metric=self.spec.search_metric, mode=self.spec.search_mode,
            max_concurrent_trials=self.spec.max_concurrent_trials, reuse_actors=True, trial_dirname_creator=_trial_dirname,
        )
        return tune.Tuner(self.trainable, param_space=space, tune_config=config, run_config=self._run_config(name))

    # ---------------------------------------------------------------- search results

    def _best_params(self, cell: Cell) -> Optional[dict[str, Any]]:
        """Best finished search trial of `cell` by its last evaluation; decided once, then kept."""
        chosen = self.ledger.get("best", {})
        if cell.id in chosen:
            return chosen[cell.id]["params"]
        metric, sign = self.spec.search_metric, (1 if self.spec.search_mode == "max" else -1)
        done = [
            r for r in self.ledger.trials()
            if r.get("phase") == SEARCH and r.get("cell") == cell.id and r.get("status") == FINISHED
            and math.isfinite(r.get("metrics", {}).get(metric, math.nan))
        ]
        if not done:
            return None
        top = max(done, key=lambda r: sign * r["metrics"][metric])
        self.ledger.set("best", {**chosen, cell.id: {"params": top["params"], "trial_id": top["trial_id"], "value": top["metrics"][metric]}})
        log.info("best for %s: %s (%s = %.4f)", cell.id, top["params"], metric, top["metrics"][metric])
        return top["params"]

    def _drop_unsearched(self, trials: list[TrialSpec], best: dict[str, Any]) -> list[TrialSpec]:
        """A cell whose every search trial failed has nothing to re-run: its final trials are
        recorded as failed (they appear in the table) instead of silently using base values."""
        kept = []
        for t in trials:
            if t.cell in best:
                kept.append(t)
            elif self.ledger.trial(t.key) is None:
                self.ledger.update_trial(
                    t.key, key=t.key, phase=FINAL, cell=t.cell, arm=t.arm, coords=t.coords, seed=t.seed, params={},
                    status=FAILED, failure="search", error="no search trial of this cell finished", metrics={}, history=[],
                )
        return kept


def _domain(p: Any) -> Any:
    from ray import tune

    if p.type == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.type == "uniform":
        return tune.uniform(p.low, p.high)
    if p.type == "int":
        return tune.randint(int(p.low), int(p.high) + 1)  # Tune's upper bound is exclusive
    return tune.choice(p.choices)


def run_sweep(plan: SweepPlan, sweep_dir: Path, *, resume: bool = False, retry_failed: bool = False,
              address: Optional[str] = None, verbose: int = 1) -> SweepOutcome:
    """Validate, start (or join) Ray, run all phases with MLflow tracking, write the report."""
    import ray

    from sweep.report import write_report
    from sweep.tracking import Tracker, flatten, git_commit, mark_killed, resolve_tracking_uri

    plan.validate_configs()
    tracking_uri = resolve_tracking_uri(plan.spec.mlflow.tracking_uri)
    ledger = prepare_sweep_dir(plan, sweep_dir, resume)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    available = ray.cluster_resources()
    plan.check_resources(available.get("CPU", 0.0), available.get("GPU", 0.0))

    experiment = plan.spec.mlflow.experiment or plan.name
    tracker = Tracker(tracking_uri, experiment)
    parent = ledger.get("mlflow_parent_run_id")
    if parent:
        tracker.reopen(parent)
    else:
        ledger.set("git_commit", git_commit())
        tags = {"sweep.name": plan.name, "sweep.role": "parent", "sweep.source": plan.source,
                "mlflow.source.git.commit": ledger.get("git_commit")}
        params = flatten(plan.base) | flatten({"sweep": plan.spec.model_dump(mode="json")})
        parent = tracker.start_run(plan.name, tags, params)
        ledger.set("mlflow_parent_run_id", parent)
        tracker.log_files(parent, [sweep_dir / "sweep.yaml", sweep_dir / "plan.txt"])

    runner = SweepRunner(plan, sweep_dir, ledger, tracking_uri, experiment, resume=resume, retry_failed=retry_failed,
                         verbose=verbose)
    try:
        runner.run()
    except (SweepInterrupted, KeyboardInterrupt) as e:
        mark_killed(ledger, tracker)
        tracker.end_run(parent, KILLED)
        if isinstance(e, KeyboardInterrupt):
            raise
        return SweepOutcome(sweep_dir, KILLED, [])
    except BaseException as e:
        tracker.end_run(parent, FAILED, f"{type(e).__name__}: {e}")
        raise
    files = write_report(sweep_dir)
    tracker.log_files(parent, files)
    tracker.end_run(parent, FINISHED)
    return SweepOutcome(sweep_dir, FINISHED, files)

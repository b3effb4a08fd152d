"""Run a sweep: `python sweep/run.py experiments/<name>.yaml [options]` (or `python -m sweep.run`).

    --set k=v [k=v ...]  override the YAML (base experiment or sweep block: `--set sweep.seeds=[0,1]`)
    --dry-run          print the trial plan and the figures the report will draw, and validate
                       every trial config, data path and the resources; train nothing; with the
                       cost forecast (trial-hours, wall time)
    --calibrate        with --dry-run: price trials no stored trial prices by timing a few iterations here
    --resume           continue a sweep: an interrupted one, or one whose YAML grew (more seeds, arms,
                       cells or search samples: only the new trials run)
    --retry-failed     with --resume: restart trials that crashed (after their retries)
    --restart-changed  with --resume: allow a YAML change that alters trials already run (e.g. the
                       base optimizer.lr); those trials run afresh
    --no-reuse         train every trial, even one whose result the trial store holds (YAML:
                       sweep.reuse: false)
    --store FILE       the trial store (default: $DML_TRIAL_STORE, else <storage root>/.store/trials.sqlite)
    --sync DIR         rebuild the MLflow runs of the sweep in DIR (parent + one per trial) from the
                       trial store, in the tracking store in use now; trains nothing
    --address ADDR     join a Ray cluster (default: $RAY_ADDRESS, else a local Ray instance)
    --cluster-config F the cluster YAML whose node types a trial may also fit (default:
                       $DML_CLUSTER_CONFIG, else ~/ray_bootstrap_config.yaml on a head node)
    --out DIR          sweep directory (default: <storage_path>/<sweep name>)
    -v, --verbose      Ray Tune's own progress output and the trials' logs too (for debugging)

The console shows the plan, what it is starting (data checks, Ray, MLflow), a header per phase,
one line per trial (`[7/10] final  n=2 · s0  R@1 96.2  (8 s)  ETA 0:20`; failures with their
error; `reused from <sweep>` for a trial answered from the trial store), a status line when no
trial ended for 30 s (`[7/10] ...  running 2, pending 1 · slowest n=2 · s1 epoch 4/8 (0:41)  ETA
0:38`) and a closing block: each comparison's headline, the report path and the command + URL
that open the runs in the MLflow UI.

Exit status: 0 done, 1 done but final trials failed (the report covers the rest), 2 bad input
(one line on stderr), 3 the driver could not write its own state -- a full disk, a read-only
sweep folder or trial store, a trial store removed or replaced while it ran, the MLflow store
(one line naming the file or store; fix it, then --resume), 130
interrupted by Ctrl-C or SIGTERM (resume with --resume).
"""
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script (`python sweep/run.py`): put this checkout first, so a worktree runs its own code
# even where another checkout is installed (the `dml-sweep` entry point needs no such step).
if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import os
import shlex

# As the Makefile does: a local Ray without token authentication, so `ray.init` does not print
# its auth warning in the middle of the plan. Set before Ray is imported; a value given wins.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from dml_core.cli import sigterm_as_ctrl_c
from dml_core.errors import first_line
from sweep.checks import check_plan
from sweep.console import SCREEN_CELLS, describe_plan
from sweep.policy_lines import pilot_forecast_lines
from sweep.plan import PLAN_FILE, SweepPlan, load_plan
from sweep.records import KILLED
from sweep.store import POINTER_FILE, check_store_file, default_store_path
from sweep.resources import check_fits, cluster_shapes, local_shape, read_node_types
from sweep.local_ray import ray_address
from sweep.runner import SweepOutcome, run_sweep, sync_sweep
from sweep.sweep_folder import default_sweep_dir


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sweep/run.py", description="Run a DML benchmark sweep on Ray Tune.")
    p.add_argument("config", nargs="?", help="experiment YAML with a sweep: block")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values: --set a.b=1 c.d=2 (repeatable)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--calibrate", action="store_true",
                   help="with --dry-run: time a few iterations of each trial shape that no stored trial prices")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--retry-failed", action="store_true")
    p.add_argument("--restart-changed", action="store_true")
    p.add_argument("--no-reuse", action="store_true")
    p.add_argument("--store", default=None, metavar="FILE")
    p.add_argument("--sync", default=None, metavar="SWEEP_DIR")
    p.add_argument("--address", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--cluster-config", default=None)
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def available_resources(address: str | None) -> tuple[float, float]:
    """CPUs and GPUs a sweep could use: the cluster's when joining one, else this machine's."""
    if address or os.environ.get("RAY_ADDRESS"):
        import ray

        ray.init(address=ray_address(address), include_dashboard=False, logging_level=logging.WARNING)
        sigterm_as_ctrl_c()
        res = ray.cluster_resources()
        return res.get("CPU", 0.0), res.get("GPU", 0.0)
    here = local_shape()
    return here.cpu, here.gpu


def _next_free(sweep_dir: Path) -> Path:
    """The same command again (no --out, no --resume) makes a new sweep beside the old one,
    `<name>-2`, `<name>-3`, ...: its trials that some sweep already finished are reused, not trained."""
    if not (sweep_dir / PLAN_FILE).exists():
        return sweep_dir
    n = 2
    while (sweep_dir.with_name(f"{sweep_dir.name}-{n}") / PLAN_FILE).exists():
        n += 1
    free = sweep_dir.with_name(f"{sweep_dir.name}-{n}")
    print(f"{sweep_dir} holds a sweep (--resume continues it); this one goes to {free}", flush=True)
    return free


def _resume_command(argv: list[str]) -> str:
    args = [a for a in argv if a != "--resume"]
    return " ".join(shlex.quote(a) for a in ["python", "sweep/run.py", *args, "--resume"])


def main(argv: list[str] | None = None) -> int:
    # `--store` reaches the store's helpers through $DML_TRIAL_STORE for this command only: a
    # second call in one process (a test, a notebook) must not inherit the first one's store.
    saved = os.environ.get("DML_TRIAL_STORE")
    try:
        return _main(argv)
    finally:
        if saved is None:
            os.environ.pop("DML_TRIAL_STORE", None)
        else:
            os.environ["DML_TRIAL_STORE"] = saved


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    typed = list(argv)  # as given: the report lists it (argv may gain the --out of a `<name>-2`)
    args = _parser().parse_args(argv)
    refused = _refused_flags(args)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    _quiet_libraries(args.verbose)
    sigterm_as_ctrl_c()
    plan, sweep_dir = None, None
    if args.store:
        os.environ["DML_TRIAL_STORE"] = str(Path(args.store).resolve())  # also where a --resume finds it
    try:
        if args.sync:
            uri, created, deleted = sync_sweep(Path(args.sync))
            print(f"MLflow: {args.sync} synced to {uri}: {created} runs recreated, {deleted} duplicates deleted")
            return 0
        plan = load_plan(args.config, args.overrides)
        sweep_dir = default_sweep_dir(plan, args.out)
        if not (args.out or args.resume or args.dry_run):
            free = _next_free(sweep_dir)
            if free != sweep_dir:  # so that the printed resume command finds this one
                sweep_dir, argv = free, [*argv, "--out", str(free)]
        if args.dry_run:
            return _dry_run(args, plan, sweep_dir)
        outcome = _run(args, typed, plan, sweep_dir)
    except ValueError as e:  # SweepError, ConfigError, DatasetError: all one line
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; continue with: {_resume_command(argv)}", file=sys.stderr)
        return 130
    except Exception as e:
        where = _driver_io_fault(e, plan)
        if where is None:
            raise
        started = sweep_dir is not None and (sweep_dir / PLAN_FILE).is_file()
        then = (f"continue with: {_resume_command(argv)}" if started
                else f"run it again: {' '.join(shlex.quote(a) for a in ['python', 'sweep/run.py', *argv])}")
        print(f"error: {where}; fix it, then {then}", file=sys.stderr)
        return EXIT_IO
    return _finished(outcome, argv)


def _refused_flags(args: argparse.Namespace) -> str:
    """The one-line refusal of options that do not go together ("" when they do)."""
    if args.calibrate and not args.dry_run:
        return "--calibrate needs --dry-run"
    for flag in ("retry_failed", "restart_changed"):
        if getattr(args, flag) and not args.resume:
            return f"--{flag.replace('_', '-')} needs --resume"
    if (args.config is None) == (args.sync is None):
        return "give a sweep YAML, or --sync SWEEP_DIR (not both)"
    return ""


def _dry_run(args: argparse.Namespace, plan: SweepPlan, sweep_dir: Path) -> int:
    check_plan(plan, download=True)
    if not (sweep_dir / POINTER_FILE).is_file():  # a new sweep's store: foreign, newer, empty, read-only
        check_store_file(default_store_path(sweep_dir))
    cpus, gpus = available_resources(args.address)
    joined = bool(args.address or os.environ.get("RAY_ADDRESS"))
    if joined:
        shapes = cluster_shapes(args.cluster_config)
    else:  # a cluster YAML given offline: judge the trial against its node types instead
        shapes = read_node_types(args.cluster_config) if args.cluster_config else [local_shape()]
    check_fits(plan.spec.resources_per_trial, shapes, plan.source)
    print(describe_plan(plan, sweep_dir, cpus, gpus, max_cells=None if args.verbose else SCREEN_CELLS))
    print(_forecast(plan, sweep_dir, cpus, gpus, joined, args.cluster_config, args.calibrate), flush=True)
    for line in pilot_forecast_lines(plan, sweep_dir):  # a seed policy's, from stored seeds of its cells
        print(line)
    from sweep.plots import planned_figures  # the dry run's alone

    print("figures the report will draw:\n" + "\n".join(f"  {line}" for line in planned_figures(plan)))
    print("dry run: every trial config, data path and the resources check out; nothing was trained")
    return 0


def _run(args: argparse.Namespace, typed: list[str], plan: SweepPlan, sweep_dir: Path) -> SweepOutcome:
    print(describe_plan(plan, sweep_dir, max_cells=None if args.verbose else SCREEN_CELLS), flush=True)
    if not args.resume:  # a new sweep's folder, then its store (foreign, newer, empty, read-only), before either is made
        _creatable(sweep_dir)
        check_store_file(default_store_path(sweep_dir))
    _keep_forecast(plan, sweep_dir)
    print(starting_line(plan, args.address), flush=True)
    from sweep.writers import record_command  # pyarrow: after the lines above are out

    try:
        undo = record_command(sweep_dir, typed)  # for the report: what was run, `--set` overrides and all
    except OSError:  # a folder that cannot be made: the sweep's own checks say so in one line
        undo = lambda: None  # noqa: E731
    try:
        return run_sweep(plan, sweep_dir, resume=args.resume, retry_failed=args.retry_failed, address=args.address,
                         cluster_config=args.cluster_config, verbose=args.verbose,
                         reuse=False if args.no_reuse else None, restart_changed=args.restart_changed,
                         store=args.store)
    except BaseException:
        if not (sweep_dir / PLAN_FILE).is_file():  # no sweep came of it: no command to list
            undo()
        raise


def _finished(outcome: SweepOutcome, argv: list[str]) -> int:
    if outcome.status == KILLED:
        print(f"interrupted; continue with: {_resume_command(argv)}", file=sys.stderr)
        return 130
    print(closing_block(outcome), flush=True)
    if outcome.failed:
        shown = ", ".join(outcome.failed[:3]) + (", ..." if len(outcome.failed) > 3 else "")
        print(f"sweep finished with failures: {len(outcome.failed)} of {outcome.final_trials} final trials failed "
              f"({shown}); report of the rest: {outcome.sweep_dir / 'report.md'}", file=sys.stderr)
        return 1
    return 0


def _forecast(plan: SweepPlan, sweep_dir: Path, cpus: float, gpus: float, joined: bool,
              cluster_config: str | None, calibrate: bool) -> str:
    """The dry run's cost forecast (`sweep.forecast`) on the resources it sees, or on the node
    types of an offline `--cluster-config`."""
    from sweep.forecast import make_forecast
    from sweep.forecast_text import describe
    from sweep.trial_slots import cluster_pool, local_pool

    request, cap = plan.spec.resources_per_trial, plan.spec.max_concurrent_trials
    pool = (cluster_pool(cluster_config, request, cap) if cluster_config and not joined
            else local_pool(cpus, gpus, request, cap, joined))
    return describe(make_forecast(plan, default_store_path(sweep_dir), pool, calibrate_missing=calibrate))


def _creatable(path: Path) -> None:
    """A one-line `PathError` naming `path` when a file stands where it or one of its folders would go
    (said before the store beside it is looked at: the folder is what the user named)."""
    from dml_core.io import PathError

    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                raise PathError(f"{path}: cannot create this directory ({folder} is a file)")
            return


def _keep_forecast(plan: SweepPlan, sweep_dir: Path) -> None:
    """Price the sweep from the trial store before it runs, print it and keep it for the report;
    never in its way (no torch, no calibration; a failure only skips it)."""
    import sqlite3

    from dml_core.data.loading import usable_cores
    from sweep.forecast import make_forecast, save
    from sweep.forecast_text import describe
    from sweep.trial_slots import local_pool

    if (sweep_dir / PLAN_FILE).exists():  # resumed: the forecast it started with stands
        return
    try:  # GPUs are counted only by torch, which the driver does not import: not here
        pool = local_pool(usable_cores(), None, plan.spec.resources_per_trial, plan.spec.max_concurrent_trials, False)
        forecast = make_forecast(plan, default_store_path(sweep_dir), pool)
        if forecast.sources:
            print(describe(forecast), flush=True)
            save(forecast, sweep_dir)
    except (ValueError, OSError, sqlite3.Error):
        return  # an unwritable sweep folder is then reported by the sweep itself


EXIT_IO = 3  # the driver's own writes failed (disk full, read-only folder or store): resumable


def _driver_io_fault(error: Exception, plan: SweepPlan | None) -> str | None:
    """`<file or store>: <why>` for a failed write of the driver's state -- an OSError (the sweep
    folder: plan, report; the trial store) or the MLflow store refusing a write -- else None (a bug: its
    traceback is kept)."""
    from alembic.util.exc import CommandError  # MLflow's schema migrations: a store of another MLflow version
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    chain: list[BaseException] = []
    while error is not None and error not in chain:  # Tune may wrap a callback's error
        chain.append(error)
        error = error.__cause__ or error.__context__
    os_error = next((e for e in chain if isinstance(e, OSError)), None)
    if os_error is not None:
        where = os_error.filename or "the sweep folder"
        return f"{where}: {os_error.strerror or first_line(os_error)}"
    error = next((e for e in chain if isinstance(e, (MlflowException, SQLAlchemyError, CommandError))), None)
    if error is not None:
        from sweep.mlflow_check import resolve_tracking_uri

        uri = resolve_tracking_uri(plan.spec.mlflow.tracking_uri) if plan is not None else "the MLflow store"
        return f"{uri}: MLflow store: {first_line(error)}"
    return None


def _quiet_libraries(verbose: int) -> None:
    """Keep the console to the sweep's own lines: MLflow's database set-up, alembic, Optuna's
    "study created" and matplotlib's font cache log at INFO; warnings still show."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    # MLflow sets its logger's level when it is first imported (later, by the tracker), from this
    # variable; a level set here beforehand would be overwritten.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    for name in ("mlflow", "alembic", "optuna", "matplotlib", "filelock"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Tune's Ctrl-C warnings advise `Tuner.restore(...)`; the sweep prints its own resume command.
    # A crashed trial's traceback is in its log file, which the console's one line names
    # (`sweep.trainable.trial_log`); Tune would log it again at ERROR, 100+ lines per attempt.
    logging.getLogger("ray.tune").setLevel(logging.WARNING if verbose else logging.CRITICAL)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def starting_line(plan: SweepPlan, address: str | None) -> str:
    """What the seconds before the first trial go to (the phase header follows once they are done)."""
    from sweep.mlflow_check import resolve_tracking_uri

    ray = f"joining Ray at {ray_address(address)}" if ray_address(address) != "local" else "starting a local Ray"
    return f"-- checking the data, {ray}, opening MLflow ({resolve_tracking_uri(plan.spec.mlflow.tracking_uri)}) ..."


def closing_block(outcome: SweepOutcome) -> str:
    from sweep.console import closing_block as block

    return block(outcome, outcome.wall_s)


if __name__ == "__main__":
    raise SystemExit(main())

"""Sweep overhead against bare Ray Tune as the number of trials grows (issue 15, "linear cost").

N cheap trials (digits, a tiny conv net, one epoch of two steps: about 0.1-0.3 s of training each)
run twice per N, on one local Ray with `--slots` CPUs (one CPU per trial):

- **project**: `sweep.runner.run_sweep` on a YAML whose `sweep:` block is a grid of N/2
  learning rates x 2 seeds (so N/2 cells, the first one the baseline): the trial store or ledger,
  MLflow (one sqlite file for the whole benchmark, its schema made before any timing), the
  console, the report -- everything `python sweep/run.py` does;
- **bare**: `ray.tune.Tuner` on the same N trial configs, run the same way as the project runs
  them -- a function trainable calling `dml_core.training.fit` in a temporary folder and
  `tune.report` per evaluation, the configs bound with `tune.with_parameters` and the grid
  carrying their indices, `reuse_actors=True`, the same resources and `max_failures` -- and
  nothing else. Its Tune is set up as a user who wants speed would write it: the same loggers as
  the project's driver, Tune's CSV and JSON loggers, with Tune's own defaults turned off through
  its documented `TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1` (`bare_loggers`). Tune's default adds a
  TensorBoard logger, whose tensorboardX imports torch into the driver inside the timed
  `Tuner.fit` (about 4 s of wall and 600 MiB of RSS here): a handicap, not Tune's cost. Passing
  any callback makes `Tuner.fit` import MLflow (its usage tag of the callbacks imports Tune's
  MLflow integration to name them: about 0.8 s of the bare driver's CPU, half of it at N = 64):
  kept, since every Tune user who passes loggers pays it; the per-N line shows each arm's threads.

Each arm runs as its own driver process that joins the benchmark's Ray, so driver CPU and peak RSS
are that arm's alone; arms alternate (project first for one N, bare first for the next) so that
load from the rest of the machine falls on both. Per arm: wall time of the run call (imports and
joining Ray excluded, equally for both), the driver process' CPU time over it, slot utilisation
(summed `fit` time of the trials / (slots x wall): `fit` is timed inside the trial processes by a
Ray worker set-up hook, the same for both arms), the most trials seen training at once (below
`--slots` when a trial process was slow to start: on a loaded machine one may take longer to
import torch than the other takes to run every trial), the time from the last trial's `fit` returning to
the run call returning, the driver's peak RSS, and the size of what the project keeps (its store or
ledger; the whole sweep folder in brackets).

    python benchmarks/bench_sweep_scale.py                    # N = 16, 64, 256
    python benchmarks/bench_sweep_scale.py --large            # ... and 1,024
    python benchmarks/bench_sweep_scale.py --sizes 64 --profile prof/   # cProfile each driver (both arms)

Each arm's `result.json` also holds its driver's CPU per thread (`thread_cpu_s`: the main thread,
Ray's threads, and the project's MLflow writer among the ended ones); the line printed per N gives
each arm's three largest and the load average (a busy machine moves every number: compare
versions in one run of each, alternating, at the same load).

Targets, each printed as a verdict for the sizes run (issue 28): project driver CPU per trial at
most 2x the bare driver's at N = 64 and N = 1,024; wall ratio at most 1.15 at every N from 16 to
1,024; project driver peak RSS at most 1.5x the bare driver's. And (issue 15): project driver CPU
per trial at N = 1,024 within 1.3x of N = 64; last trial to exit <= 5 s at N = 1,024. Written
against the public entry points only (`run_sweep(plan, sweep_dir, verbose=0)`, `load_plan`), so
it runs on any version of the sweep.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere in the checkout

SIZES = (16, 64, 256)
LARGE = 1024
WALL_TARGET, CPU_TARGET, RSS_TARGET = 1.15, 2.0, 1.5  # project / bare (issue 28)
CPU_AT = (64, LARGE)  # the sizes the CPU target is set at
CPU_GROWTH_TARGET, EXIT_TARGET_S = 1.3, 5.0  # issue 15
TRIAL_LOG_ENV = "BENCH_SWEEP_TRIAL_LOG"
MAX_FAILURES = 2  # the sweep's default, used by both arms
SEEDS = (0, 1)

# The cheap trial: digits at 12 px, 2 conv blocks of width 8, one epoch of 2 steps, no k-means,
# no checkpoint, no loader workers, one torch thread (what one CPU per trial gives).
BASE: dict[str, Any] = {
    "name": "scale",
    "seed": 0,
    "data": {"name": "digits", "image_size": 12, "num_workers": 0,
             "batch": {"classes_per_batch": 3, "samples_per_class": 4}},
    "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 8, "embedding_dim": 8},
    "loss": {"name": "multi_similarity"},
    "optimizer": {"name": "adam", "lr": 0.003},
    "train": {"epochs": 1, "iterations_per_epoch": 2, "num_threads": 1, "checkpoint": False},
    "eval": {"clustering": False},
}


def learning_rates(n: int) -> list[float]:
    """N/2 distinct learning rates (every trial a distinct config, so a trial store reuses none)."""
    cells = max(1, n // len(SEEDS))
    return [round(1e-3 * (1 + i / cells), 8) for i in range(cells)]


def trial_configs(n: int) -> list[dict[str, Any]]:
    """The N experiment configs both arms train: the sweep's grid x seeds, cell-major."""
    return [{**BASE, "seed": seed, "optimizer": {**BASE["optimizer"], "lr": lr}}
            for lr in learning_rates(n) for seed in SEEDS]


# ------------------------------------------------------------------ in the trial processes


def _time_fit() -> None:
    """Ray worker set-up hook: wrap `dml_core.training.fit` so each call appends its start and end
    (epoch seconds) to the arm's trial log. Both arms' trainables look `fit` up at call time."""
    import dml_core.training as training

    log, fit = os.environ[TRIAL_LOG_ENV], training.fit

    def timed_fit(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return fit(*args, **kwargs)
        finally:
            with open(log, "a") as f:  # one short O_APPEND write per trial: lines never interleave
                f.write(f"{start:.6f} {time.time():.6f}\n")

    training.fit = timed_fit


def bare_trial(config: dict[str, Any], *, trials: list[dict[str, Any]]) -> None:
    """The bare arm's trainable: one config, `fit` in a temporary folder, each evaluation reported."""
    from ray import tune

    from dml_core.config import config_from_dict
    from dml_core.training import fit

    cfg = config_from_dict(trials[config["trial"]])
    with tempfile.TemporaryDirectory(prefix="dml-trial-") as work:
        fit(cfg, out_dir=Path(work) / "run", report=lambda metrics, epoch, _: tune.report({**metrics, "epoch": epoch}))


# ------------------------------------------------------------------ one arm (a driver process)


def _run_project(n: int, work: Path, tracking_uri: str) -> tuple[float, Path]:
    import yaml

    from sweep.plan import load_plan
    from sweep.runner import run_sweep

    rates = learning_rates(n)
    sweep = {"name": f"scale-{n}-{work.name}", "grid": {"optimizer.lr": rates}, "seeds": list(SEEDS),
             "baseline": {"optimizer.lr": rates[0]}, "resources_per_trial": {"cpu": 1},
             "max_failures": MAX_FAILURES, "mlflow": {"tracking_uri": tracking_uri}}
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "sweep": sweep}, sort_keys=False))
    plan = load_plan(path)
    started = time.time()
    run_sweep(plan, work / "sweeps" / "scale", verbose=0)
    return started, work / "sweeps"


def bare_loggers() -> list[Any]:
    """The bare arm's Tune loggers, set up as a Tune user who wants speed would: Tune's documented
    `TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1` and its CSV and JSON loggers passed explicitly -- the
    same two loggers the project's driver runs with, and no TensorBoard logger (whose
    tensorboardX imports torch into the driver: seconds of wall and hundreds of MiB)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # read when Tuner.fit starts
    return [CSVLoggerCallback(), JsonLoggerCallback()]


def _run_bare(n: int, work: Path) -> tuple[float, Path]:
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(bare_trial, trials=trial_configs(n)), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True),
        run_config=tune.RunConfig(name="bare", storage_path=str(work / "tune"), verbose=0, callbacks=bare_loggers(),
                                  failure_config=tune.FailureConfig(max_failures=MAX_FAILURES)),
    )
    started = time.time()
    grid = tuner.fit()
    if grid.num_errors:
        raise RuntimeError(f"bare arm: {grid.num_errors} of {n} trials failed")
    return started, work / "tune"


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process' threads since it started, by name (Python's thread names, the
    kernel's for the rest: Ray's core worker threads, gRPC's), summed per name: where a driver's CPU
    goes besides its main thread; "(ended threads)" is what threads no longer alive used, such as
    the project's MLflow writer (Linux only; empty elsewhere)."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").glob("*"):
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        name = names.get(int(task.name), comm)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    if out:
        total = os.times()
        out["(ended threads)"] = max(0.0, total.user + total.system - sum(out.values()))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_arm(arm: str, n: int, work: Path, address: str, tracking_uri: str, profile: str | None) -> None:
    """One arm as this process' only job; writes `result.json` in `work`."""
    import logging

    import ray

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # Tune's legacy engine: silent at verbose 0 (as the sweep sets it)
    trial_log = work / "trials.txt"
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False,
             runtime_env={"worker_process_setup_hook": _time_fit, "env_vars": {TRIAL_LOG_ENV: str(trial_log)}})
    from ray import tune  # noqa: F401 -- imported before the clock by both arms (the bare arm's driver needs nothing else)

    profiler = None
    if profile:
        import cProfile

        # Timed by this thread's CPU clock: on a loaded machine a wall-clock profile mostly shows
        # waiting. CPU of other threads (the project's MLflow writer, Ray's) is in `thread_cpu_s`.
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    cpu0 = time.process_time()
    if arm == "project":
        started, kept = _run_project(n, work, tracking_uri)
    else:
        started, kept = _run_bare(n, work)
    ended, cpu = time.time(), time.process_time() - cpu0
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    threads = thread_cpu()
    spans = [tuple(map(float, line.split())) for line in trial_log.read_text().splitlines()]
    state = [p for p in kept.rglob("*") if p.is_file() and (p.parent.name == ".store" or p.name == "ledger.json")]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    result = {
        "arm": arm, "n": n, "wall_s": ended - started, "cpu_s": cpu, "trials_timed": len(spans),
        "peak_concurrent": max(itertools.accumulate(d for _, d in events)),  # fits at once: below the slots when a trial process was slow to start
        "busy_s": sum(e - s for s, e in spans), "last_to_exit_s": ended - max(e for _, e in spans),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "store_bytes": sum(p.stat().st_size for p in state) if arm == "project" else None,
        "folder_bytes": sum(p.stat().st_size for p in kept.rglob("*") if p.is_file()),
        "thread_cpu_s": threads,
    }
    (work / "result.json").write_text(json.dumps(result))
    ray.shutdown()


# ------------------------------------------------------------------ the benchmark (parent)


@dataclass
class Row:
    n: int
    project: dict[str, Any]
    bare: dict[str, Any]


def _spawn(arm: str, n: int, work: Path, address: str, tracking_uri: str, slots: int,
           profile_dir: str | None, timeout: float) -> dict[str, Any]:
    work.mkdir(parents=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--arm", arm, "--sizes", str(n), "--work", str(work),
           "--address", address, "--tracking-uri", tracking_uri, "--slots", str(slots)]
    if profile_dir:
        cmd += ["--profile", str(Path(profile_dir) / f"{arm}-{n}.prof")]
    with open(work / "driver.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=REPO)
    if done.returncode != 0:
        tail = (work / "driver.log").read_text()[-3000:]
        raise RuntimeError(f"{arm} arm at N={n} exited {done.returncode}; end of {work / 'driver.log'}:\n{tail}")
    result = json.loads((work / "result.json").read_text())
    if result["trials_timed"] != n:
        raise RuntimeError(f"{arm} arm at N={n}: {result['trials_timed']} trials timed, expected {n}")
    return result


def _load() -> str:
    """The 1-minute load average: the CPU the arms shared with the rest of the machine."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"


def _mib(b: float | None) -> str:
    return "-" if b is None else f"{b / 2**20:.2f}"


def print_table(rows: list[Row], slots: int) -> None:
    head = (f"{'N':>6} {'arm':<8}{'wall s':>9}{'CPU s':>8}{'CPU/trial ms':>13}{'slot use':>9}{'at once':>8}{'last->exit s':>13}"
            f"{'peak RSS MiB':>13}{'store MiB':>10}{'folder MiB':>11}")
    print(head)
    for r in rows:
        for arm, m in (("project", r.project), ("bare", r.bare)):
            use = m["busy_s"] / (slots * m["wall_s"])
            print(f"{r.n:>6} {arm:<8}{m['wall_s']:>9.1f}{m['cpu_s']:>8.1f}{1e3 * m['cpu_s'] / r.n:>13.0f}{use:>9.2f}"
                  f"{m['peak_concurrent']:>8}{m['last_to_exit_s']:>13.2f}{m['peak_rss_mib']:>13.0f}{_mib(m['store_bytes']):>10}"
                  f"{_mib(m['folder_bytes']):>11}")
        print(f"{r.n:>6} {'ratio':<8}{r.project['wall_s'] / r.bare['wall_s']:>9.2f}"
              f"{r.project['cpu_s'] / r.bare['cpu_s']:>8.2f}{'':>51}{r.project['peak_rss_mib'] / r.bare['peak_rss_mib']:>13.2f}")


def _verdict(value: float, target: float) -> str:
    return f"{'meets' if value <= target else 'misses'} the target <= {target}"


def verdicts(rows: list[Row]) -> list[str]:
    """One line per target that these sizes can say something about."""
    lines = []
    ratios = {r.n: r.project["wall_s"] / r.bare["wall_s"] for r in rows}
    worst = max(ratios, key=ratios.get)
    lines.append(f"wall ratio: worst {ratios[worst]:.2f} at N={worst} {_verdict(ratios[worst], WALL_TARGET)}")
    for r in rows:
        if r.n in CPU_AT:
            cpu = r.project["cpu_s"] / r.bare["cpu_s"]
            lines.append(f"driver CPU per trial project / bare at N={r.n}: {cpu:.2f} {_verdict(cpu, CPU_TARGET)}")
    rss = {r.n: r.project["peak_rss_mib"] / r.bare["peak_rss_mib"] for r in rows}
    worst = max(rss, key=rss.get)
    lines.append(f"driver peak RSS project / bare: worst {rss[worst]:.2f} at N={worst} {_verdict(rss[worst], RSS_TARGET)}")
    per_trial = {r.n: r.project["cpu_s"] / r.n for r in rows}
    if 64 in per_trial and LARGE in per_trial:
        growth = per_trial[LARGE] / per_trial[64]
        lines.append(f"project driver CPU per trial N={LARGE} / N=64: {growth:.2f} {_verdict(growth, CPU_GROWTH_TARGET)}")
    if LARGE in ratios:
        exit_s = next(r.project["last_to_exit_s"] for r in rows if r.n == LARGE)
        lines.append(f"last trial to exit at N={LARGE}: {exit_s:.1f} s {_verdict(exit_s, EXIT_TARGET_S)} s")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="numbers of trials (default 16 64 256)")
    ap.add_argument("--large", action="store_true", help=f"add N = {LARGE}")
    ap.add_argument("--slots", type=int, default=2, help="CPUs of the benchmark's Ray = concurrent trials (default 2)")
    ap.add_argument("--profile", default=None, metavar="DIR", help="cProfile each driver's main thread (CPU time) into DIR/<arm>-<N>.prof")
    ap.add_argument("--keep", default=None, metavar="DIR", help="keep every arm's folders under DIR")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds one arm may take")
    # One arm, run by the benchmark itself as a separate driver process.
    ap.add_argument("--arm", choices=["project", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--tracking-uri", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.arm:
        run_arm(args.arm, args.sizes[0], Path(args.work), args.address, args.tracking_uri, args.profile)
        return 0

    import logging

    import ray
    from mlflow import MlflowClient

    sizes = sorted(set(args.sizes) | ({LARGE} if args.large else set()))
    if min(sizes) < 2:
        print("bench_sweep_scale: --sizes: at least 2 trials (2 seeds per cell)", file=sys.stderr)
        return 2
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench-sweep-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri).search_experiments()  # the schema, made before any arm is timed
    # The trial processes import this checkout (the Ray workers inherit this environment).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=args.slots, include_dashboard=False, logging_level=logging.WARNING)
    address = ray.get_runtime_context().gcs_address
    print(f"bench_sweep_scale: N = {', '.join(map(str, sizes))}; {args.slots} slots (1 CPU per trial); "
          f"{os.cpu_count()} CPUs on this machine; both arms with Tune's CSV and JSON loggers only; "
          f"folders under {root}; load average {_load()}", flush=True)
    rows = []
    try:
        for i, n in enumerate(sizes):
            order = ("project", "bare") if i % 2 == 0 else ("bare", "project")
            got = {arm: _spawn(arm, n, root / f"{arm}-{n}", address, tracking_uri, args.slots, args.profile,
                               args.timeout) for arm in order}
            rows.append(Row(n, got["project"], got["bare"]))
            threads = {arm: ", ".join(f"{k} {v:.1f}" for k, v in list(got[arm]["thread_cpu_s"].items())[:3]) for arm in got}
            print(f"N={n}: project {got['project']['wall_s']:.1f} s, bare {got['bare']['wall_s']:.1f} s; driver CPU s by "
                  f"thread: project {threads['project']}; bare {threads['bare']}; load average {_load()}", flush=True)
    finally:
        ray.shutdown()
    print()
    print_table(rows, args.slots)
    for line in verdicts(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

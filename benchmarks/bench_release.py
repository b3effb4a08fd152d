"""Per-iteration training time, whole process, against a previous release's checkout.

    .venv/bin/python benchmarks/bench_release.py --release /path/to/old-checkout \
        [--config experiments/omniglot.yaml] [--workers 0 1] [--threads 1] [--pairs 3] [--short 60] [--long 300]

Each arm is `python -m dml_core.train CONFIG` run by its own tree's interpreter (this checkout's
``.venv`` and the release's ``.venv``; ``--release-python`` overrides the latter), with the same
``--set`` overrides on both (keys that both releases' configs know): one epoch of ``--short`` and
one of ``--long`` iterations, ``train.num_threads``, ``data.num_workers``, CPU, no checkpoint. A
whole-process run includes start-up (imports, data split, model) and the final evaluation, which
the two lengths share, so ``(t_long - t_short) / (long - short)`` is the cost of one training
iteration with start-up cancelled. CPU seconds are the child's and its reaped descendants' (the
loader workers), from ``RUSAGE_CHILDREN``.

Per worker count, ``--pairs`` pairs: each pair runs the four processes (both arms x both
lengths) with the arms alternating and the order reversed every other pair, so a load that drifts
hits both arms alike; the ratio (this checkout / the release) is computed per pair and the median
of the paired ratios is printed, wall and CPU, with the 1-minute load average before and after and
each arm's final loss (this checkout's numbers do not depend on the worker count; a release's may).
The verdict line compares the median CPU and wall ratios with ``--target`` (issue 28: 1.03); a pair
whose long run took no longer than its short one (the load fell in between) has no per-iteration
time and is reported as unmeasured. On a busy machine wall per iteration varies several-fold with
the load; CPU time, which counts the work done, is the figure to read there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def overrides(iters: int, workers: int, threads: int) -> list[str]:
    """The `--set` values both releases accept (`train.*` and `data.num_workers` exist in both)."""
    return ["train.epochs=1", f"train.iterations_per_epoch={iters}", f"train.num_threads={threads}",
            f"data.num_workers={workers}", "train.device=cpu", "train.checkpoint=false"]


def run_arm(python: Path, tree: Path, config: Path, sets: list[str], out: Path) -> dict[str, Any]:
    """One whole training process: wall and CPU seconds (with its workers), and its final loss."""
    cmd = [str(python), "-m", "dml_core.train", str(config), "--out", str(out), "--set", *sets]
    # The child imports dml_core from its own tree, never from this one's PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"bench_release: {tree}: {' '.join(cmd[1:4])} failed (exit {proc.returncode}): {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    final = json.loads((out / "metrics.json").read_text()).get("final", {})
    return {"wall": wall, "cpu": cpu, "loss": final.get("loss")}


def per_iteration(short: dict[str, Any], long: dict[str, Any], extra_iters: int, key: str) -> float:
    """Milliseconds per iteration with start-up cancelled: (t_long - t_short) / extra iterations."""
    return (long[key] - short[key]) / extra_iters * 1e3


def one_pair(arms: dict[str, tuple[Path, Path]], config: dict[str, Path], lengths: tuple[int, int],
             workers: int, threads: int, flip: bool, tmp: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """Both arms at both lengths, the arms alternating (reversed when `flip`)."""
    names = list(arms)[::-1] if flip else list(arms)
    runs: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in names}
    for iters in lengths:
        for name in names:
            python, tree = arms[name]
            out = Path(tempfile.mkdtemp(prefix=f"{name}-{iters}-", dir=tmp))
            runs[name][iters] = run_arm(python, tree, config[name], overrides(iters, workers, threads), out)
    return runs


def pair_row(pair: int, ms: dict[str, list[float]], loss: tuple[float, float]) -> str:
    """One pair's line: ms per iteration of each arm and their ratio, wall then CPU, and the losses.
    Every number is set off by a space: on a busy machine the wall difference between the two
    lengths can come out negative, and a minus sign must not glue two columns together."""
    cells = "".join(f" {this:>9.2f} {rel:>9.2f} {paired_ratio(this, rel):>6.3f}" for this, rel in (ms["wall"], ms["cpu"]))
    return f"  {pair + 1:<5}{'rel>' if pair % 2 else 'this>':<6}{cells}  {loss[0]:.6f}, {loss[1]:.6f}"


def bench_workers(args: argparse.Namespace, arms: dict[str, tuple[Path, Path]], config: dict[str, Path],
                  workers: int, tmp: Path) -> bool:
    """`--pairs` paired measurements at one worker count; prints them and returns the verdict."""
    lengths, extra = (args.short, args.long), args.long - args.short
    load_before = os.getloadavg()[0]
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    print(f"\n{workers} loader workers, {args.threads} torch threads: ms per iteration = (t{args.long} - t{args.short}) / {extra}")
    print(f"  {'pair':<5}{'':<6}{'this wall':>10}{'rel. wall':>10}{'ratio':>7}{'this CPU':>10}{'rel. CPU':>10}{'ratio':>7}  loss (this, release)")
    for pair in range(args.pairs):
        runs = one_pair(arms, config, lengths, workers, args.threads, pair % 2 == 1, tmp)
        ms = {key: [per_iteration(runs[arm][args.short], runs[arm][args.long], extra, key) for arm in ("this", "release")]
              for key in ("wall", "cpu")}
        for key, (this, rel) in ms.items():
            ratios[key].append(paired_ratio(this, rel))
        loss = (runs["this"][args.long]["loss"], runs["release"][args.long]["loss"])
        print(pair_row(pair, ms, loss), flush=True)
    print(f"  load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")
    return verdict(ratios, args.target)


def paired_ratio(this: float, rel: float) -> float:
    """this / release per iteration; NaN when either arm's long run took no longer than its short
    one (the load fell between the two), which leaves that arm no per-iteration time."""
    return this / rel if this > 0 and rel > 0 else math.nan


def verdict(ratios: dict[str, list[float]], target: float) -> bool:
    """Prints the medians of the paired ratios against `target`; True when wall and CPU meet it.

    NaN ratios (`paired_ratio`) are counted as unmeasured pairs, not as ratios; a series with none
    left is not met."""
    parts, met = [], True
    for key, label in (("wall", "wall"), ("cpu", "CPU")):
        valid = [r for r in ratios[key] if not math.isnan(r)]
        missing = len(ratios[key]) - len(valid)
        note = f", {missing} of {len(ratios[key])} pairs unmeasured (t_long <= t_short)" if missing else ""
        if not valid:
            parts.append(f"{label} not measured{note}")
            met = False
            continue
        median = statistics.median(valid)
        met = met and median <= target
        parts.append(f"{label} {median:.3f}x ({min(valid):.3f}-{max(valid):.3f}{note})")
    print(f"  this / release, medians of paired ratios: {', '.join(parts)}; target <= {target:.2f}x: "
          f"{'met' if met else 'NOT met'}")
    return met


def arm_paths(args: argparse.Namespace) -> tuple[dict[str, tuple[Path, Path]], dict[str, Path]]:
    """(interpreter, tree) and the config file of each arm; a missing one is a one-line exit 2."""
    release = Path(args.release).resolve()
    python = Path(args.release_python) if args.release_python else release / ".venv" / "bin" / "python"
    arms = {"this": (Path(sys.executable), REPO), "release": (python, release)}
    config = {name: (tree / args.config).resolve() for name, (_, tree) in arms.items()}
    for name, (interp, tree) in arms.items():
        for path, what in ((interp, "interpreter"), (config[name], "config")):
            if not path.exists():
                print(f"bench_release: --release: {what} {path} not found ({name} arm)", file=sys.stderr)
                raise SystemExit(2)
    return arms, config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", required=True, help="a checkout of the previous release, with its .venv")
    p.add_argument("--release-python", help="the release's interpreter (default RELEASE/.venv/bin/python)")
    p.add_argument("--config", default="experiments/omniglot.yaml", help="config path, relative to each tree")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="loader worker counts to measure")
    p.add_argument("--threads", type=int, default=1, help="train.num_threads of both arms")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--short", type=int, default=60, help="iterations of the short run")
    p.add_argument("--long", type=int, default=300, help="iterations of the long run")
    p.add_argument("--target", type=float, default=1.03, help="ratio to beat (issue 28: 1.03)")
    args = p.parse_args(argv)
    if not 1 <= args.short < args.long:
        print(f"bench_release: --long: must exceed --short ({args.short}), got {args.long}", file=sys.stderr)
        return 2
    arms, config = arm_paths(args)
    print(f"this checkout {REPO} against {args.release}; {args.config}; {args.pairs} pairs per worker count")
    with tempfile.TemporaryDirectory(prefix="bench_release_") as tmp:
        for workers in args.workers:
            bench_workers(args, arms, config, workers, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

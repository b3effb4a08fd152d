"""Benchmark `dml_core.evaluation` against pytorch-metric-learning and a bare faiss search.

    .venv/bin/python benchmarks/bench_eval.py --sizes 10000 60000 [--skip-pml] [--repeats 4] [--threads T]
    .venv/bin/python benchmarks/bench_eval.py --sizes 60000 --ks 1 10 100 1000 --methods bare ours

For each N: random L2-normalised 512-d embeddings, one random centre per class plus noise, about
N/5 classes with labels drawn at random (so some classes hold a single point, as lone queries),
stored once in a temporary .npy file. Every method then runs in its own child process, which
loads the file, times only the method (wall-clock and CPU seconds), and reports its peak resident
memory: the kernel's high-water mark VmHWM (faiss allocates outside Python, so tracemalloc would
not see it; `getrusage(RUSAGE_SELF).ru_maxrss` would not do either, because Linux carries the
parent's peak over fork + exec into the child's ru_maxrss). The `load-only` child gives the
floor: interpreter, imports and the data itself.

Methods:
- ``bare``        faiss IndexFlatIP (IndexFlatL2 with --metric l2), one exact search with the
                  same k + 1 as `evaluate` needs (k = max(max K, max R), + 1 for the query
                  itself), no metrics: the time to beat.
- ``ours``        `evaluate(..., clustering=False)`: R@K, MAP@R, R-precision.
- ``pml-mbc``     AccuracyCalculator(k="max_bin_count"): precision@1, MAP@R, R-precision.
- ``pml-default`` AccuracyCalculator(k=None): the same, but searches all N - 1 neighbours.
- ``ours-kmeans`` / ``pml-nmi``: NMI (and our F1) from faiss k-means, k = number of classes,
                  timed separately since it is a different cost (niter x N x classes x d).
- ``kmeans-1iter`` k-means stopped after one iteration: the unit cost of an iteration (faiss
                  stops early at convergence, which these synthetic classes reach quickly).
Timings on a shared machine are noisy: with ``--repeats R`` (default 4, even) the children alternate,
in reverse order every other round, and every ratio is the median of PAIRED ratios over blocks of
two rounds (base, method, method, base: the block's method seconds over its base seconds), so a
load that drifts steadily moves both sides of a pair alike; the table's seconds are medians over
the rounds. Both arms search with the same k (`search_depth`, which tests/benchmarks check against
what `evaluate` asks faiss for) and the same faiss OpenMP thread count: faiss's default, or
``--threads T`` set in every child; each child reports its count and the table prints it. CPU seconds (user + system, all threads) are reported
beside wall seconds, as they depend far less on what else the machine is running, and the 1-minute
load average is printed before and after each size. The last lines give `ours` against `bare`: the
paired wall and CPU ratios with their range, the CPU seconds `ours` spends beyond the search, and
the verdict against the target (<= 1.10x bare, wall and CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = {"recall_at_1": "precision_at_1", "map_at_r": "mean_average_precision_at_r", "r_precision": "r_precision"}
PML_RETRIEVAL = tuple(SHARED.values())
PML_SEED = 1234  # faiss.Kmeans' default seed, which PML does not override
TARGET = 1.10  # issue 28: R@K + MAP@R + R-precision at most 1.10x bare faiss exact top-k


# ----------------------------------------------------------------------------- data
def make_data(n: int, dim: int, class_ratio: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_classes = max(2, n // class_ratio)
    labels = rng.integers(0, n_classes, n)
    x = rng.standard_normal((n_classes, dim), dtype=np.float32)[labels]
    x += spread * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def search_depth(labels: np.ndarray, ks: list[int]) -> int:
    """k that `evaluate` searches: max(max K, max R) with R = class size - 1, capped at N - 1."""
    return min(max(max(ks), int(np.bincount(labels).max()) - 1), len(labels) - 1)


# ----------------------------------------------------------------------------- methods (run in children)
def run_load_only(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    return {}


def run_bare(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    import faiss

    index = (faiss.IndexFlatIP if args.metric == "cosine" else faiss.IndexFlatL2)(x.shape[1])
    index.add(x)
    index.search(x, search_depth(y, args.ks) + 1)
    return {}


def run_ours(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    from dml_core.evaluation import evaluate

    return evaluate(x, y, k=args.ks, clustering=False, metric=args.metric)


def run_ours_kmeans(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    from dml_core.evaluation.clustering import clustering_metrics

    return clustering_metrics(x, y, niter=args.kmeans_iters, seed=PML_SEED)


def run_kmeans_1iter(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    """One Lloyd iteration plus the final assignment: two N x classes searches, i.e. the price of
    one iteration x 2. Faiss stops k-means early once the objective stops changing (these
    synthetic classes converge in ~2 iterations), so this gives the worst case's unit cost."""
    from dml_core.evaluation.clustering import kmeans_assign

    kmeans_assign(x, len(np.unique(y)), niter=1, seed=PML_SEED)
    return {}


def _pml(k: Any, include: tuple[str, ...]) -> Callable[[np.ndarray, np.ndarray], dict[str, float]]:
    import torch
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=include, k=k, device=torch.device("cpu"))
    return calc.get_accuracy


def _from_pml(out: dict[str, float]) -> dict[str, float]:
    ours = {ours: out[theirs] for ours, theirs in SHARED.items() if theirs in out}
    if "NMI" in out:
        ours["nmi"] = out["NMI"]
    return ours


def run_pml_mbc(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    return _from_pml(_pml("max_bin_count", PML_RETRIEVAL)(x, y))


def run_pml_default(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    return _from_pml(_pml(None, PML_RETRIEVAL)(x, y))


def run_pml_nmi(x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, float]:
    if args.kmeans_iters != 20:  # PML hard-codes FaissKMeans(niter=20)
        raise SystemExit("pml-nmi needs --kmeans-iters 20")
    return _from_pml(_pml("max_bin_count", ("NMI",))(x, y))


METHODS: dict[str, Callable[[np.ndarray, np.ndarray, argparse.Namespace], dict[str, float]]] = {
    "load-only": run_load_only,
    "bare": run_bare,
    "ours": run_ours,
    "pml-mbc": run_pml_mbc,
    "pml-default": run_pml_default,
    "ours-kmeans": run_ours_kmeans,
    "kmeans-1iter": run_kmeans_1iter,
    "pml-nmi": run_pml_nmi,
}
# Which methods' seconds are compared with which (retrieval vs the bare search; NMI vs NMI).
RETRIEVAL = ("bare", "ours", "pml-mbc", "pml-default")
CLUSTERING = ("ours-kmeans", "pml-nmi", "kmeans-1iter")


def child_main(method: str, data: Path, args: argparse.Namespace) -> None:
    # Imports that a method needs are part of its memory, not of its time: do them first.
    import faiss

    if method == "ours":
        from dml_core.evaluation import evaluate  # noqa: F401 -- the package loads it on first use
    if method in ("ours-kmeans", "kmeans-1iter"):
        import dml_core.evaluation.clustering  # noqa: F401
    if method.startswith("pml"):
        import pytorch_metric_learning.utils.accuracy_calculator  # noqa: F401
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    x, y = np.load(data / "x.npy"), np.load(data / "y.npy")  # .npy loads without a transient copy
    floor_mib = _peak_mib()
    cpu_start, start = _cpu_seconds(), time.perf_counter()
    metrics = METHODS[method](x, y, args)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    result = {"seconds": seconds, "cpu": cpu, "peak_mib": _peak_mib(), "floor_mib": floor_mib, "metrics": metrics,
              "threads": faiss.omp_get_max_threads()}
    print(json.dumps(result))


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mib() -> float:
    """This process's peak resident memory in MiB (Linux /proc; ru_maxrss elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- parent
def run_child(method: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", method, str(data), "--kmeans-iters", str(args.kmeans_iters)]
    cmd += ["--ks", *map(str, args.ks), "--metric", args.metric, "--threads", str(args.threads or 0)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def skip_reason(method: str, n: int, args: argparse.Namespace) -> str | None:
    if method.startswith("pml") and args.skip_pml:
        return "--skip-pml"
    if method == "pml-default" and n > args.pml_default_max:
        # k = None: PML searches and keeps all N - 1 neighbours of every query (ids, labels,
        # float64 precision matrices), ~7 GB measured here at N = 10,000, growing with N^2.
        return (
            f"skipped: k=None keeps N x (N-1) neighbour arrays, ~{7 * (n / 10_000) ** 2:.0f} GB at "
            f"this N (extrapolated from ~7 GB at 10,000), beyond this machine's memory"
        )
    if method == "pml-nmi" and args.kmeans_iters != 20:
        return "PML's k-means is fixed at 20 iterations"
    return None


def round_order(methods: list[str], round_: int) -> list[str]:
    """The order of the timed children in round `round_`: alternating so that load from other
    processes hits each method alike, reversed every other round, since on a machine whose load
    drifts a fixed order would put the same method always later."""
    return methods if round_ % 2 == 0 else methods[::-1]


def bench_size(n: int, args: argparse.Namespace, workdir: Path) -> None:
    x, y = make_data(n, args.dim, args.class_ratio, args.spread, args.seed)
    data = workdir / f"n{n}"
    data.mkdir()
    np.save(data / "x.npy", x)
    np.save(data / "y.npy", y)
    counts = np.bincount(y)
    print(
        f"\n=== N={n:,}, d={args.dim}, {np.count_nonzero(counts):,} classes (size 1..{counts.max()}, "
        f"{np.sum(counts == 1)} lone), K = {args.ks}, search k = {search_depth(y, args.ks)} (+1 self), k-means k = "
        f"{np.count_nonzero(counts)}, {args.kmeans_iters} iterations",
        flush=True,
    )
    methods = [m for m in METHODS if not args.methods or m in args.methods or m == "load-only"]
    results: dict[str, dict[str, Any]] = {}
    for method in methods:
        reason = skip_reason(method, n, args)
        if reason:
            results[method] = {"skipped": reason}
    runs: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()[0]
    for round_ in range(args.repeats):
        for method in round_order(methods, round_):
            if "skipped" in results.get(method, {}) or "error" in results.get(method, {}):
                continue
            out = run_child(method, data, args)
            if "error" in out:
                results[method] = out
            else:
                runs.setdefault(method, []).append(out)
            print(f"  round {round_ + 1} {method}: {out.get('seconds', out.get('error'))}", flush=True)
    for method, done in runs.items():
        results.setdefault(method, summarise(done))
    print(f"  load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on "
          f"{os.cpu_count()} cores; {args.repeats} alternating rounds, medians; faiss threads "
          + ", ".join(f"{m} {sorted({r['threads'] for r in done})}" for m, done in runs.items()))
    report(results, runs)


def summarise(done: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's rounds: median seconds, largest peak memory, its metrics (equal every round)."""
    return {"seconds": statistics.median(r["seconds"] for r in done), "cpu": statistics.median(r["cpu"] for r in done),
            "peak_mib": max(r["peak_mib"] for r in done), "floor_mib": max(r["floor_mib"] for r in done),
            "metrics": done[0]["metrics"]}


def paired(runs: dict[str, list[dict[str, Any]]], method: str, base: str, key: str) -> list[float]:
    """``method / base`` of `key` per block of two consecutive rounds (rounds where both ran).

    Rounds alternate their order (`round_order`), so a block runs base, method, method, base (or
    the reverse): summed over the block, a load that rises or falls steadily adds as much to one
    side as to the other. A ratio per single round would not cancel it: the method that runs
    second in a round pays the drift, and with an odd number of rounds the median of per-round
    ratios is one where it ran second. A trailing odd round is left out."""
    mine, theirs = runs.get(method, []), runs.get(base, [])
    blocks = min(len(mine), len(theirs)) // 2
    return [(mine[2 * i][key] + mine[2 * i + 1][key]) / (theirs[2 * i][key] + theirs[2 * i + 1][key])
            for i in range(blocks)]


def report(results: dict[str, dict[str, Any]], runs: dict[str, list[dict[str, Any]]]) -> None:
    def ratio(method: str, base: str) -> str:
        wall, cpu = paired(runs, method, base, "seconds"), paired(runs, method, base, "cpu")
        return f"{statistics.median(wall):.2f}x ({statistics.median(cpu):.2f}x)" if wall else ""

    # peak MiB: the child's whole peak RSS; of which method: above the RSS it had after its imports
    # and loading the data (torch alone is ~700 MiB for the PML children).
    # Ratios are medians of paired two-round-block ratios of wall-clock seconds, and in brackets of CPU seconds.
    print(
        f"  {'method':<12} {'seconds':>8} {'cpu s':>8} {'vs bare':>15} {'vs ours':>15} "
        f"{'peak MiB':>9} {'of which method':>16}"
    )
    for method, res in results.items():
        if "seconds" not in res:
            print(f"  {method:<12} {res.get('skipped') or res.get('error')}")
            continue
        vs_bare = ratio(method, "bare") if method in RETRIEVAL else ""
        base = "ours-kmeans" if method in CLUSTERING else "ours"
        vs_ours = ratio(method, base) if method not in ("load-only", "kmeans-1iter") else ""
        own = res["peak_mib"] - res["floor_mib"]
        print(
            f"  {method:<12} {res['seconds']:>8.2f} {res['cpu']:>8.2f} {vs_bare:>15} {vs_ours:>15} "
            f"{res['peak_mib']:>9.0f} {own:>16.0f}"
        )
    ours = {**results.get("ours", {}).get("metrics", {}), **results.get("ours-kmeans", {}).get("metrics", {})}
    print("  metrics (ours): " + ", ".join(f"{k}={v:.4f}" for k, v in ours.items()))
    for other in ("pml-mbc", "pml-default", "pml-nmi"):
        theirs = results.get(other, {}).get("metrics")
        if theirs:
            diffs = {k: abs(ours[k] - v) for k, v in theirs.items() if k in ours}
            print(f"  max |ours - {other}| over {sorted(diffs)}: {max(diffs.values()):.2e}")
    verdict(runs)


def verdict(runs: dict[str, list[dict[str, Any]]]) -> None:
    """`ours` against `bare`: paired ratios, what it spends beyond the search, the target met or not."""
    wall, cpu = paired(runs, "ours", "bare", "seconds"), paired(runs, "ours", "bare", "cpu")
    if not wall:
        return
    extra = statistics.median(a["cpu"] - b["cpu"] for a, b in zip(runs["ours"], runs["bare"]))
    met = statistics.median(wall) <= TARGET and statistics.median(cpu) <= TARGET
    print(f"  ours / bare over {len(wall)} paired blocks of 2 rounds: wall {statistics.median(wall):.3f}x "
          f"({min(wall):.3f}-{max(wall):.3f}), CPU {statistics.median(cpu):.3f}x ({min(cpu):.3f}-{max(cpu):.3f}); "
          f"CPU beyond the search {extra:+.2f} s")
    print(f"  target ours <= {TARGET:.2f}x bare (wall and CPU medians): {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--class-ratio", type=int, default=5, help="N / number of classes")
    parser.add_argument("--spread", type=float, default=2.5, help="noise scale around class centres")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8], help="Recall@K list")
    parser.add_argument("--kmeans-iters", type=int, default=20)
    parser.add_argument(
        "--metric", choices=["cosine", "l2"], default="cosine",
        help="ours and bare: IndexFlatIP on the unit rows, or IndexFlatL2 as PML uses",
    )
    parser.add_argument("--repeats", type=int, default=4,
                        help="alternating rounds, even; ratios are medians over paired blocks of 2 rounds")
    parser.add_argument("--threads", type=int, default=0, help="faiss OpenMP threads in every child (0: faiss's default)")
    parser.add_argument("--skip-pml", action="store_true")
    parser.add_argument("--pml-default-max", type=int, default=10_000, help="largest N for PML k=None")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), help="subset to run")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child[0], Path(args.child[1]), args)
        return
    if args.repeats < 2 or args.repeats % 2:
        print(f"bench_eval: --repeats: must be even and >= 2 (ratios pair blocks of 2 rounds), got {args.repeats}",
              file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        for n in args.sizes:
            bench_size(n, args, Path(tmp))


if __name__ == "__main__":
    main()

"""One command that checks a GPU machine end to end and prints one pass/fail table.

Rows (each isolated: a row that fails or crashes is reported and the next one still runs):

  1. train     `python -m dml_core.train experiments/quickstart.yaml` with train.device=cuda and
               train.amp=bf16: exits 0, metrics.json says finished.
  2. sweep     the quickstart sweep with sweep.resources_per_trial.gpu=0.25 (four trials per GPU):
               exits 0, every trial in the trial store finished, MLflow (read back from its store) has
               one FINISHED child run per trial under the sweep's parent, and trials overlapped.
  3. eval      60,000 x 512 SOP-like embeddings (clustered, ~5 per class), `evaluate` with the
               torch backend on the GPU against faiss on the CPU: equal metrics, both times.
  4. bench     `benchmarks/bench_throughput.py --device cuda`: trainer / plain-loop ratio >= 0.9.
  5. memory    peak GPU memory per trial (`gpu_mem_peak_mib`, logged by the trainer on CUDA) from
               the MLflow children of row 2: four of them fit in the GPU.

Budget: under 5 minutes on one current GPU (16 CPU cores): the quickstart is tiny, row 3's faiss
CPU side is the slowest part (k-means is run for `--kmeans-iters` iterations, default 5).

    python benchmarks/gpu_check.py            # or: make gpu-check
    python benchmarks/gpu_check.py --on-cpu --eval-n 3000   # rehearse every row on a CPU machine

Without CUDA (and without --on-cpu) it prints one line saying so and exits 0. Exit status: 0 when
every row passed (or no GPU), 1 otherwise. `--on-cpu` swaps cuda for cpu (no bf16, sweep gpu=0)
to test the script itself; its timings say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "experiments" / "quickstart.yaml"
RETRIEVAL_TOL = 1e-4  # R@K / MAP@R / R-precision: float32 rounding only (random data, no ties)
CLUSTER_TOL = 5e-3  # NMI / F1: a near-equidistant point may take another k-means path on the GPU


@dataclass
class Row:
    name: str
    passed: bool
    detail: str
    seconds: float = 0.0


@dataclass
class Context:
    work: Path
    on_cpu: bool
    eval_n: int
    kmeans_iters: int
    timeout: int
    state: dict[str, Any] = field(default_factory=dict)  # e.g. row 2's MLflow children for row 5

    @property
    def device(self) -> str:
        return "cpu" if self.on_cpu else "cuda"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        env.setdefault("RAY_AUTH_MODE", "disabled")
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{self.work / 'mlflow.db'}"
        return env


def _run(ctx: Context, args: list[str], log: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=ctx.env(), capture_output=True, text=True,
                          timeout=ctx.timeout)
    (ctx.work / log).write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    return done


def _tail(done: subprocess.CompletedProcess) -> str:
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1][:160] if lines else f"exit {done.returncode}"


# ------------------------------------------------------------------ rows


def row_train(ctx: Context) -> tuple[bool, str]:
    out = ctx.work / "train"
    sets = [f"train.device={ctx.device}"] + ([] if ctx.on_cpu else ["train.amp=bf16"])
    done = _run(ctx, ["-m", "dml_core.train", str(QUICKSTART), *sum((["--set", s] for s in sets), []),
                      "--out", str(out)], "train.log")
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {_tail(done)}"
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics.get("final", {})
    ok = metrics.get("status") == "finished" and "recall_at_1" in final
    mem = f", peak {final['gpu_mem_peak_mib']:.0f} MiB" if "gpu_mem_peak_mib" in final else ""
    return ok, f"status {metrics.get('status')}, R@1 {final.get('recall_at_1', float('nan')):.3f}{mem}"


def _max_overlap(spans: list[tuple[int, int]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def row_sweep(ctx: Context) -> tuple[bool, str]:
    from mlflow.tracking import MlflowClient

    out = ctx.work / "sweep"
    gpu = 0 if ctx.on_cpu else 0.25
    done = _run(ctx, ["sweep/run.py", str(QUICKSTART), "--set", f"sweep.resources_per_trial.gpu={gpu}",
                      "--out", str(out), "--no-reuse"], "sweep.log")  # train every trial: this checks the GPU
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {_tail(done)}"
    from sweep.store import load_records

    records = load_records(out)
    trials = [t.model_dump() for t in records.trials]
    parent = records.meta.mlflow_parent_run_id
    client = MlflowClient(ctx.env()["MLFLOW_TRACKING_URI"])
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    children = client.search_runs(experiment_ids, filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                                  max_results=10_000)
    ctx.state["children"] = children
    finished_trials = sum(t.get("status") == "FINISHED" for t in trials)
    finished_runs = sum(r.info.status == "FINISHED" for r in children)
    overlap = _max_overlap([(r.info.start_time, r.info.end_time or r.info.start_time) for r in children])
    ok = bool(trials) and finished_trials == len(trials) == len(children) == finished_runs and (ctx.on_cpu or overlap >= 2)
    return ok, (f"{finished_trials}/{len(trials)} trials finished, MLflow {finished_runs}/{len(children)} "
                f"children FINISHED, up to {overlap} at once")


def _sop_like(n: int, d: int, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    n_classes = max(2, n // 5)
    labels = rng.permutation(np.arange(n) % n_classes)
    x = rng.standard_normal((n_classes, d), dtype=np.float32)[labels]
    x += 2.5 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def row_eval(ctx: Context) -> tuple[bool, str]:
    import torch

    from dml_core.evaluation import evaluate

    x, y = _sop_like(ctx.eval_n, 512)
    kw = dict(k=(1, 10, 100, 1000) if ctx.eval_n > 2000 else (1, 10), kmeans_iters=ctx.kmeans_iters, seed=0)
    t0 = time.perf_counter()
    cpu = evaluate(x, y, backend="faiss", use_gpu=False, **kw)
    t_cpu = time.perf_counter() - t0
    dev = torch.device(ctx.device)
    emb = torch.from_numpy(x).to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    gpu = evaluate(emb, y, backend="torch", **kw)
    t_gpu = time.perf_counter() - t0
    diffs = {k: abs(cpu[k] - gpu[k]) for k in cpu}
    ok = all(d <= (CLUSTER_TOL if k in ("nmi", "f1") else RETRIEVAL_TOL) for k, d in diffs.items())
    worst = max(diffs, key=diffs.get)
    return ok, (f"N={ctx.eval_n}: faiss-cpu {t_cpu:.1f}s, torch-{dev.type} {t_gpu:.1f}s; R@1 {cpu['recall_at_1']:.4f} "
                f"vs {gpu['recall_at_1']:.4f}, NMI {cpu.get('nmi', 0):.4f} vs {gpu.get('nmi', 0):.4f}; "
                f"max |diff| {diffs[worst]:.1e} ({worst})")


def row_bench(ctx: Context) -> tuple[bool, str]:
    args = ["benchmarks/bench_throughput.py"] + (["--smoke"] if ctx.on_cpu else ["--device", "cuda"])
    done = _run(ctx, args, "bench_throughput.log")
    if done.returncode != 0:
        return False, f"exit {done.returncode}: {_tail(done)}"
    rows = re.findall(r"^(MS.*?)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)$", done.stdout, re.M)
    worst = min(min(float(r[3]), float(r[4])) for r in rows) if rows else 0.0
    detail = "; ".join(f"{r[0]}: {float(r[1]):.0f} vs {float(r[2]):.0f} img/s = {r[3]}x (paired {r[4]}x)" for r in rows)
    return bool(rows) and (ctx.on_cpu or worst >= 0.9), detail or _tail(done)


def row_memory(ctx: Context) -> tuple[bool, str]:
    children = ctx.state.get("children")
    if not children:
        return False, "no MLflow children from the sweep row"
    if ctx.on_cpu:
        return True, f"{len(children)} trials (CPU rehearsal: no GPU memory to measure)"
    import torch

    peaks = [r.data.metrics.get("gpu_mem_peak_mib") for r in children]
    if any(p is None for p in peaks):
        return False, f"{sum(p is None for p in peaks)}/{len(peaks)} trials logged no gpu_mem_peak_mib"
    total = torch.cuda.get_device_properties(0).total_memory / 2**20
    return 4 * max(peaks) < total, (f"per trial max {max(peaks):.0f} MiB, min {min(peaks):.0f} MiB "
                                    f"(x4 = {4 * max(peaks):.0f} of {total:.0f} MiB)")


ROWS: list[tuple[str, Callable[[Context], tuple[bool, str]]]] = [
    ("1 train cuda+bf16", row_train),
    ("2 sweep gpu=0.25", row_sweep),
    ("3 eval torch vs faiss", row_eval),
    ("4 bench_throughput", row_bench),
    ("5 peak GPU mem/trial", row_memory),
]


def run_rows(ctx: Context, only: Optional[set[str]] = None) -> list[Row]:
    rows = []
    for name, fn in ROWS:
        if only and name.split()[0] not in only:
            continue
        t0 = time.perf_counter()
        try:
            passed, detail = fn(ctx)
        except Exception as e:  # one broken row must not cost the table
            (ctx.work / f"row{name.split()[0]}.traceback").write_text(traceback.format_exc())
            passed, detail = False, f"{type(e).__name__}: {str(e).splitlines()[0][:150] if str(e) else ''}"
        rows.append(Row(name, passed, detail, time.perf_counter() - t0))
        print(f"  {'PASS' if passed else 'FAIL'}  {name}  ({rows[-1].seconds:.0f}s)", flush=True)
    return rows


def table(rows: list[Row], header: str) -> str:
    width = max(len(r.name) for r in rows)
    lines = [header, f"| {'check':<{width}} | result | time | detail |", f"|{'-' * (width + 2)}|--------|------|--------|"]
    lines += [f"| {r.name:<{width}} | {'PASS' if r.passed else 'FAIL'}   | {r.seconds:>3.0f}s | {r.detail} |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--on-cpu", action="store_true", help="rehearse every row on the CPU (tests the script)")
    ap.add_argument("--eval-n", type=int, default=60_000)
    ap.add_argument("--kmeans-iters", type=int, default=5)
    ap.add_argument("--rows", default="", help="comma-separated row numbers to run (default: all)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per subprocess")
    ap.add_argument("--work", default=None, help="folder for logs, run dir, sweep dir, mlflow.db (default: a temp dir)")
    args = ap.parse_args(argv)

    import torch

    if not args.on_cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch; nothing to check on this machine (use --on-cpu to rehearse)")
        return 0
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work, args.on_cpu, args.eval_n, args.kmeans_iters, args.timeout)
    where = "CPU rehearsal (--on-cpu)" if args.on_cpu else torch.cuda.get_device_name(0)
    print(f"gpu_check on {where}, torch {torch.__version__} (CUDA {torch.version.cuda}); logs in {work}", flush=True)
    started = time.perf_counter()
    rows = run_rows(ctx, {r.strip() for r in args.rows.split(",") if r.strip()} or None)
    header = (f"gpu_check {time.strftime('%Y-%m-%d', time.gmtime())} on {where}, "
              f"torch {torch.__version__}, {time.perf_counter() - started:.0f}s total")
    print()
    print(table(rows, header))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""`benchmarks/gpu_check.py`: one line and exit 0 without CUDA; a failing row does not cost the table."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # hides any GPU from torch
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]


def test_a_crashing_row_is_reported_and_the_next_row_still_runs(tmp_path, monkeypatch):
    gc = load()

    def crash(ctx):
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    monkeypatch.setattr(gc, "ROWS", [("1 a", crash), ("2 b", lambda ctx: (True, "fine")), ("3 c", lambda ctx: (False, "bad"))])
    ctx = gc.Context(tmp_path, on_cpu=True, eval_n=10, kmeans_iters=1, timeout=10)
    rows = gc.run_rows(ctx)
    assert [(r.name, r.passed) for r in rows] == [("1 a", False), ("2 b", True), ("3 c", False)]
    assert rows[0].detail == "RuntimeError: CUDA error: out of memory"
    assert (tmp_path / "row1.traceback").exists()
    text = gc.table(rows, "header")
    assert text.splitlines()[0] == "header" and "| FAIL" in text and "| PASS" in text


def test_overlap_counts_trials_running_at_once():
    gc = load()
    assert gc._max_overlap([(0, 10), (1, 5), (2, 3), (6, 9), (11, 12)]) == 3
    assert gc._max_overlap([(0, 1), (1, 2)]) == 1  # one ends as the next starts


def test_eval_row_agrees_on_cpu(tmp_path):
    gc = load()
    ctx = gc.Context(tmp_path, on_cpu=True, eval_n=1500, kmeans_iters=3, timeout=10)
    passed, detail = gc.row_eval(ctx)
    assert passed, detail
    assert "max |diff|" in detail

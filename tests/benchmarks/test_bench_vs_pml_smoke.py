"""`benchmarks/bench_vs_pml.py`: a smoke run of all three arms, and the PML arm's own data pipeline."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_vs_pml.py"
ARMS = ("PML MS + miner", "dml_core MS", "dml_core MS + EE n=2")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_vs_pml", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def table_row(out: str, arm: str) -> tuple[float, ...]:
    row = re.search(rf"^{re.escape(arm)}\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)\s", out, re.M)
    assert row, f"no table row for {arm!r}:\n{out}"
    return tuple(map(float, row.groups()))


@pytest.mark.slow
def test_smoke_run_with_shared_data_pml_tracks_our_ms_arm(omniglot_root):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--pml-data", "shared", "--root", str(omniglot_root)],
                          cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "70 train / 66 test classes (1400 / 1320 images)" in out
    rows = {arm: table_row(out, arm) for arm in ARMS}
    for r1, map_r, pml_p1, pml_map in rows.values():
        # 66 unseen classes of 20 drawings: chance R@1 is ~0.014.
        assert 0.05 < r1 <= 1 and 0 < map_r < 1
        assert (r1, map_r) == pytest.approx((pml_p1, pml_map), abs=1e-4)  # the two evaluators
    # Same batches, crops and initial weights: only the loss code differs, which agrees to float
    # precision, so three steps leave the same model up to rounding.
    assert rows["PML MS + miner"][:2] == pytest.approx(rows["dml_core MS"][:2], abs=2e-3)
    refit = re.search(r"re-embedding the trained model:\s+R@1 (\S+), MAP@R (\S+)", out)
    assert refit and float(refit[1].rstrip(",")) == 0 and float(refit[2]) == 0


def test_independent_pipeline_has_pk_batches_and_renders_test_images_like_dml_core(bench, omniglot_root):
    args = bench.parse_args(["--smoke", "--root", str(omniglot_root)])
    cfg = bench.experiment_config(args, seed=0, expansion="none")
    loader, test = bench.pml_data(cfg, "independent")
    x, y = next(iter(loader))
    assert x.shape == (64, 1, 28, 28)
    assert sorted(torch.bincount(y)[torch.bincount(y) > 0].tolist()) == [4] * 16  # P x K = 16 x 4

    ours = bench.build_datasets(cfg.data).test
    assert len(test) == len(ours) == 1320
    for i in (0, 457, 1319):
        theirs_x, theirs_y = test[i]
        ours_x, ours_y = ours[i]
        assert theirs_y == ours_y
        # PIL vs tensor resampling: at most one uint8 step apart, i.e. 2/255 after [-1, 1] scaling.
        assert (theirs_x - ours_x).abs().max().item() <= 2 / 255 + 1e-6


def test_bad_root_is_a_one_line_error(tmp_path):
    missing = tmp_path / "missing"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--root", str(missing)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(f"--root: Omniglot folder not found: {missing}")

"""`--calibrate`: a trial shape's cost timed in this process, for a forecast with no stored trial of its recipe."""
from __future__ import annotations

import time
from pathlib import Path

from dml_core.config import ExperimentConfig

CALIBRATION_ITERS = 3  # timed iterations per trial shape, after one untimed epoch of as many


def calibrate(cfg: ExperimentConfig, device: str) -> tuple[float, float, float]:
    """Time `CALIBRATION_ITERS` training iterations (after as many untimed) and one evaluation of
    the trial `cfg` in this process, on ``device``. Returns (seconds per trained image per pixel,
    its start-up without the imports a new worker process adds (`import_seconds`), seconds per
    evaluation): `sweep.forecast` makes its rate of them."""
    from dml_core.config import config_from_dict
    from dml_core.training.trainer import Trainer

    raw = cfg.to_dict()
    raw["train"].update(iterations_per_epoch=CALIBRATION_ITERS, epochs=2, checkpoint=False, device=device)
    trial = config_from_dict(raw, "calibration")
    started = time.perf_counter()
    trainer = Trainer(trial)
    setup = time.perf_counter() - started
    trainer.train_epoch(0)  # warm-up: allocator, kernels, workers
    t0 = time.perf_counter()
    trainer.train_epoch(1)
    per_iter = (time.perf_counter() - t0) / CALIBRATION_ITERS
    t0 = time.perf_counter()
    trainer.evaluate()
    per_eval = time.perf_counter() - t0
    return per_iter / (trial.data.batch.size * trial.data.image_size ** 2), setup, per_eval


def import_seconds() -> float:
    """What a fresh trial process spends importing the trainer (torch, torchvision, dml_core): this
    process has them already, so a new interpreter is timed."""
    import subprocess
    import sys

    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import dml_core.training.trainer"], check=True, capture_output=True,
                   cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - started

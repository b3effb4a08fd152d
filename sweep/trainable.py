"""The Ray Tune function that runs one trial: `dml_core.training.fit` plus reporting.

Each evaluation is forwarded with `ray.tune.report(metrics, checkpoint=tune.Checkpoint)`; when
Tune restarts the trial (a retry after a crash, or `--resume` after an interrupted sweep) it hands
back the latest checkpoint and `fit(resume=...)` continues from it.

A NaN/inf loss is a property of the configuration, not a transient crash, so retrying it would
only burn compute: the trial reports its search metric as NaN (Optuna then records the sample as
failed instead of learning from it) with the reason under `TRIAL_ERROR`, and ends. The driver
records such a trial as FAILED ("non-finite loss ...") -- see `sweep.tracking`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from ray import tune

from sweep.plan import TrialSpec, trial_config

# Result key that carries a trial's failure reason when it ends without raising.
TRIAL_ERROR = "trial_error"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # free when Tune's staging dir is on the same disk
    except OSError:
        shutil.copy2(src, dst)


class _TuneReporter:
    """The `report` callback of `fit`: metrics and checkpoint to Tune."""

    def __init__(self) -> None:
        self.last_epoch = 0

    def __call__(self, metrics: dict[str, float], epoch: int, checkpoint_path: Optional[Path]) -> None:
        self.last_epoch = epoch
        result = {**metrics, "epoch": epoch}
        if checkpoint_path is None:
            tune.report(result)
            return
        # Tune persists the directory's content during report(), so a scratch dir suffices.
        with tempfile.TemporaryDirectory(prefix="dml-ckpt-") as tmp:
            _link_or_copy(Path(checkpoint_path), Path(tmp) / Path(checkpoint_path).name)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(tmp))


def run_trial(config: dict[str, Any], *, base: dict[str, Any], source: str, metrics: tuple[str, ...]) -> None:
    """Tune entry point, bound by `tune.with_parameters` to the sweep's base config, its source
    (for messages) and the metrics Tune ranks by. `config` = {"trial": TrialSpec dict} plus, in the
    search phase, {"params": dotted key -> sampled value}."""
    from dml_core.training import NonFiniteLossError, fit  # late: keeps `import sweep` light

    trial = TrialSpec.from_dict(config["trial"])
    cfg = trial_config(base, trial, config.get("params"), source)
    reporter = _TuneReporter()
    with tempfile.TemporaryDirectory(prefix="dml-trial-") as work:
        resume = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            restored = checkpoint.to_directory(os.path.join(work, "restored"))
            resume = next(Path(restored).glob("*.pt"))
        try:
            # A finished checkpoint (Tune's state lagging a killed driver) makes fit a no-op.
            fit(cfg, out_dir=Path(work) / "run", report=reporter, resume=resume)
        except NonFiniteLossError as e:
            reason = str(e) if str(e).startswith("non-finite") else f"non-finite loss: {e}"
            tune.report({**{m: float("nan") for m in metrics}, "epoch": reporter.last_epoch + 1, TRIAL_ERROR: reason})

"""The Ray Tune function that runs one trial: `dml_core.training.fit` plus reporting.

Each evaluation is forwarded with `ray.tune.report(metrics)`. The trial's checkpoint is not handed
to Tune: it is copied (atomically) to `<sweep dir>/checkpoints/`, under the trial's key
(`sweep.store.trial_checkpoint`), right before the evaluation is reported. Whatever starts the
trial again -- Tune's retry after a crash, or the new Tune experiment of `--resume` -- finds it
there and `fit(resume=...)` continues from it; it is read with `weights_only=True`, so a file
planted there cannot run code. A resumed trial first replays the evaluations its checkpoint holds
(flagged `replayed`): the driver may have stopped after the checkpoint was written but before it
logged that evaluation, and the tracking callback logs only the epochs it does not have yet.

A NaN/inf loss is a property of the configuration, not a transient crash, so retrying it would
only burn compute: the trial reports its search metric as NaN (Optuna then records the sample as
failed instead of learning from it) with the reason under `TRIAL_ERROR`, and ends. The driver
records such a trial as FAILED ("non-finite loss ...") -- see `sweep.tune_callback`.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from ray import tune

from dml_core.io import atomic_write_bytes, make_dir
from sweep.store import trial_checkpoint
from sweep.plan import TrialSpec, trial_config

# Result key that carries a trial's failure reason when it ends without raising.
TRIAL_ERROR = "trial_error"
# Result flag of an evaluation re-sent from the checkpoint of a resumed trial (not a metric).
REPLAYED = "replayed"
LOG_DIR = "logs"
# A trial's scratch folder in the system's temporary folder: `dml-trial-<pid>-...` (`dml-folds-`
# for a fold search sample), the pid of the process that made it, so that one left by a killed
# process (`kill -9` of the driver takes its trials with it) is known as nobody's.
_SCRATCH = re.compile(r"dml-(trial|folds)-(\d+)-")


def scratch_dir(kind: str = "trial") -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"dml-{kind}-{os.getpid()}-")


def clean_stale_scratch(tmp: str | Path | None = None) -> list[Path]:
    """Remove the scratch folders (`scratch_dir`) of this user whose process is gone: a trial
    killed with its driver leaves its folder (and the checkpoint in it) behind. Called by each
    trial as it starts (every node) and by the driver before Ray starts. Returns what it removed."""
    removed = []
    root = Path(tmp or tempfile.gettempdir())
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _SCRATCH.match(path.name)
        try:
            if match is None or path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if not _alive(int(match.group(2))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that pid: not ours to judge
    return True


def trial_log(sweep_dir: str | Path, key: str) -> Path:
    """The file that keeps the tracebacks of the trial with ledger key `key` (every attempt): the
    console prints one line per failure, naming this file (`sweep.console`)."""
    return Path(sweep_dir) / LOG_DIR / trial_checkpoint(sweep_dir, key).with_suffix(".log").name


def _log_traceback(path: Path) -> None:
    import datetime
    import traceback

    make_dir(path.parent)
    with path.open("a", encoding="utf-8") as f:
        f.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')}\n{traceback.format_exc()}\n")


class _TuneReporter:
    """The `report` callback of `fit`: the checkpoint to the sweep folder, the metrics to Tune."""

    def __init__(self, keep: Path) -> None:
        self.keep = keep  # the trial's checkpoint in the sweep directory
        self.last_epoch = 0

    def __call__(self, metrics: dict[str, float], epoch: int, checkpoint_path: Optional[Path]) -> None:
        if checkpoint_path is not None:
            make_dir(self.keep.parent)
            with open(checkpoint_path, "rb") as src:
                atomic_write_bytes(self.keep, lambda dst: shutil.copyfileobj(src, dst))
        self.last_epoch = epoch
        tune.report({**metrics, "epoch": epoch})

    def replay(self, history: list[dict[str, Any]]) -> None:
        for metrics in history:
            self.last_epoch = int(metrics["epoch"])
            tune.report({**metrics, "epoch": self.last_epoch, REPLAYED: True})


def run_trial(config: dict[str, Any], *, base: dict[str, Any], source: str, metrics: tuple[str, ...],
              sweep_dir: str, specs: list[TrialSpec]) -> None:
    """Tune entry point, bound by `tune.with_parameters` to the sweep's base config, its source
    (for messages), the metrics Tune ranks by, the sweep directory (every node sees it) and the
    phase's trial specs (sent once through Ray's object store). `config` = {"trial": index into
    `specs`} plus, in the search phase, {"params": dotted key -> sampled value}. A crash's
    traceback goes to `trial_log` (every attempt) before Tune sees it."""
    trial = specs[config["trial"]]
    key = trial.ledger_key(tune.get_context().get_trial_id())
    try:
        _run_trial(trial, config, base, source, metrics, sweep_dir, key)
    except Exception:
        _log_traceback(trial_log(sweep_dir, key))
        raise


def _run_trial(trial: TrialSpec, config: dict[str, Any], base: dict[str, Any], source: str, metrics: tuple[str, ...],
               sweep_dir: str, key: str) -> None:
    from dml_core.training import NonFiniteLossError, fit  # late: keeps `import sweep` light
    from dml_core.training.checkpoint import load_checkpoint

    cfg = trial_config(base, trial, config.get("params"), source)
    if cfg.data.folds is not None:
        return run_folds(cfg, metrics)
    keep = trial_checkpoint(sweep_dir, key)
    reporter = _TuneReporter(keep)
    resume = None
    if keep.is_file():
        resume = keep
        # A finished checkpoint (the driver stopped before the trial's end reached the store)
        # makes fit a no-op: the replay is then what reports the trial's results.
        reporter.replay(load_checkpoint(keep).get("history", []))
    clean_stale_scratch()
    with scratch_dir() as work:
        try:
            fit(cfg, out_dir=Path(work) / "run", report=reporter, resume=resume)
        except NonFiniteLossError as e:
            reason = str(e) if str(e).startswith("non-finite") else f"non-finite loss: {e}"
            tune.report({**{m: float("nan") for m in metrics}, "epoch": reporter.last_epoch + 1, TRIAL_ERROR: reason})


def fold_results(per_fold: list[dict[str, float]], metrics: tuple[str, ...]) -> dict[str, float]:
    """One result for k folds: every metric all folds report, as its fold mean, plus the ranked
    `metrics` of each fold as `fold<i>_<metric>` and `folds` = k."""
    shared = set.intersection(*(set(m) for m in per_fold)) - {"epoch"}
    out = {k: sum(m[k] for m in per_fold) / len(per_fold) for k in sorted(shared)}
    for i, m in enumerate(per_fold):
        out |= {f"fold{i}_{k}": m[k] for k in metrics if k in m}
    return {**out, "folds": len(per_fold), "epoch": max(m.get("epoch", 0) for m in per_fold)}


def run_folds(cfg: Any, metrics: tuple[str, ...]) -> None:
    """A Reality-Check search sample (`sweep.search.folds`): `fit` once per fold -- trained on the
    other folds' classes, evaluated on this fold's -- then ONE report, the fold means (what the
    search ranks by) with each fold's score. A killed fold trial starts again from fold 0: it
    keeps no checkpoint."""
    from dml_core.training import NonFiniteLossError, fit

    per_fold = []
    clean_stale_scratch()
    with scratch_dir("folds") as work:
        for fold in range(cfg.data.folds):
            fold_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"fold": fold})})
            try:
                per_fold.append(fit(fold_cfg, out_dir=Path(work) / f"fold{fold}").metrics)
            except NonFiniteLossError as e:
                reason = f"fold {fold}: " + (str(e) if str(e).startswith("non-finite") else f"non-finite loss: {e}")
                tune.report({**{m: float("nan") for m in metrics}, "epoch": 1, TRIAL_ERROR: reason})
                return
    tune.report(fold_results(per_fold, metrics))

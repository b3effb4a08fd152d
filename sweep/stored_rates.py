"""What the trial store's finished trials say a recipe costs: per image-pixel, fixed, in a new worker, alone on its cores.

A stored trial's wall time (Tune's `time_total_s` at its last evaluation: the quantity the
report measures) is split into a part that grows with the images it trained and a fixed part
that does not (the worker's imports, the data index, the model build, the training loop's first
steps, the last evaluation's checkpoint): the per-epoch cost is the slope of its evaluations'
`time_s` (evaluations at its cadence included), or, where every trial of a recipe evaluated once,
a line fitted through trials of different epoch counts, or, with a single epoch count, its time
per epoch with the loop's fixed part in it (said in the source line). Trials of the same phase
as the planned ones are preferred: a final trial evaluates the test split, a search trial its
holdout. A phase's first trials, one per slot, start new worker processes; what they took more
than their recipe's line is the new-worker extra. Each stored sweep's trials ran side by side:
their times are divided by the contention they ran at (`contention`), so a forecast prices them
at the contention of the sweep it prices.
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from dml_core.config import ExperimentConfig, config_from_dump, get_dotted
from sweep.plan import plan_of
from sweep.records import FINISHED, TrialRecord
from sweep.spec import SweepError
from sweep.trial_slots import local_pool

# The config fields that set the work of one training step (dotted prefixes); any other field
# (seed, epochs, lr, image size, the split's size, evaluation cadence) is either scaled for or
# changes no cost.
COST_FIELDS = ("data.name", "data.batch", "data.num_workers", "data.cache_features", "data.train_transform",
               "model", "loss.name", "expansion", "optimizer.name", "train.amp", "train.num_threads",
               "train.device", "eval.clustering")
_HARDWARE = re.compile(r"([\d.]+) CPU, ([\d.]+) GPU")


def recipe(config: dict[str, Any]) -> str:
    """A digest of the `COST_FIELDS` of a resolved config: trials with the same one cost the same per image."""
    blob = json.dumps({f: get_dotted(config, f) for f in COST_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def stored_device(record: TrialRecord) -> str:
    """Where a stored trial trained: CUDA runs report their peak GPU memory (`gpu_mem_peak_mib`)."""
    seen = [record.metrics, *record.history]
    return "cuda" if any("gpu_mem_peak_mib" in m for m in seen) else "cpu"


def iterations_per_epoch(cfg: ExperimentConfig) -> int:
    """Batches per epoch, as the trainer counts them (`dml_core.training.trainer.epoch_iterations`),
    from the training split's index (no pixels, no torch)."""
    if cfg.train.iterations_per_epoch:
        return cfg.train.iterations_per_epoch
    from dml_core.data.index import data_index

    counts, batch = data_index(cfg.data).images_per_class, cfg.data.batch
    if cfg.train.epoch_length == "classes":
        return max(1, len(counts) * batch.samples_per_class // batch.size)
    return max(1, sum(counts) // batch.size)


def contention(running: int, threads: int, cpus: float) -> float:
    """How many times slower each of `running` CPU trials of `threads` threads runs on `cpus`
    cores than alone: 1 while they fit the cores, then the threads per core (the OS shares them).
    0 cores: not known, 1."""
    return max(1.0, running * threads / cpus) if cpus > 0 else 1.0


@dataclass
class Rate:
    """The cost of one recipe on one device type, alone on its cores (contention 1)."""

    per_pixel_image_s: float  # seconds per trained image per pixel of image area (stored: evaluations at their cadence included)
    overhead_s: float  # a trial's fixed part in a worker that ran a trial before: what does not grow with epochs
    fresh_s: float = 0.0  # what a trial in a new worker process adds (imports, the first steps' warm-up)
    per_eval_s: float = 0.0  # calibrated rates time an evaluation apart
    device: str = "cpu"
    trials: int = 0  # stored trials it comes from; 0 = calibrated
    sweeps: list[str] = field(default_factory=list)
    spread: tuple[float, float] = (1.0, 1.0)  # the stored trials' own rates, min and max / the median
    how: str = ""  # how the per-epoch cost was found (stored rates)
    ran_at: float = 1.0  # the stored trials' median contention, divided out of the rate
    cadence: float = 0.0  # the stored trials' median `eval_every` (their per-epoch cost holds evaluations at it)
    phase: str = ""  # the phase of the stored trials, when not the planned one's

    @property
    def calibrated(self) -> bool:
        return self.trials == 0

    def seconds(self, pixel_images: float, evaluations: int) -> float:
        """One trial in a worker that ran one before, alone on its cores."""
        return self.overhead_s + self.per_pixel_image_s * pixel_images + self.per_eval_s * evaluations


@dataclass(frozen=True)
class Observed:
    """One stored trial in its recipe's units, its times divided by the contention it ran at."""

    sweep: str
    folder: str
    phase: str
    key: tuple[str, str]  # (recipe, device)
    wall: float
    unit: float  # images x pixels of one epoch (x folds)
    epochs: int
    slope: Optional[float]  # seconds per epoch between its first and last evaluation; None with one
    last_epoch: int
    last_s: float  # from the training loop's start to its last evaluation
    load: float
    cadence: int  # `train.eval_every`; 0 for a fold search sample (one report)


def stored_trials(store_path: Path) -> list[tuple[str, str, TrialRecord]]:
    """(sweep name, sweep folder, record) of every finished trial that trained in its own sweep
    (a reused one repeats another's numbers); read-only, and nothing when the store does not exist."""
    if not store_path.is_file():
        return []
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT s.name, s.dir, t.record FROM trials t JOIN sweeps s ON s.id = t.sweep "
                            "WHERE t.status = ? AND t.reused = 0", (FINISHED,)).fetchall()
    except sqlite3.DatabaseError as e:
        raise SweepError(f"{store_path}: cannot read the trial store ({e})") from None
    finally:
        conn.close()
    return [(name, folder, TrialRecord.model_validate_json(record)) for name, folder, record in rows]


def _times(record: TrialRecord) -> Optional[tuple[float, Optional[float], int, float]]:
    """(wall, slope per epoch between the first and last evaluation or None, last evaluated epoch,
    its `time_s`) of a stored trial; None without a timed evaluation."""
    timed = [h for h in record.history if h.get("time_s") is not None and h.get("epoch")]
    if not timed:
        return None
    first, last = timed[0], timed[-1]
    slope = ((last["time_s"] - first["time_s"]) / (last["epoch"] - first["epoch"])
             if last["epoch"] > first["epoch"] else None)
    return float(record.wall_s or last["time_s"]), slope, int(last["epoch"]), float(last["time_s"])


def _overhead(record: TrialRecord) -> float:
    """Its wall time less its own per-epoch cost x epochs: a new worker's trial has the most."""
    times, epochs = _times(record), get_dotted(record.config, "train.epochs") if record.config else None
    if times is None or not epochs:
        return 0.0
    wall, slope, last_epoch, last_s = times
    return wall - (slope if slope is not None else last_s / last_epoch) * epochs


def observe(sweep: str, folder: str, record: TrialRecord, load: float) -> Optional[Observed]:
    """`record` in its recipe's units; None when it lacks what is needed (no timed evaluation, or
    its data is not readable here)."""
    times = _times(record)
    if times is None or not record.config:
        return None
    try:
        cfg = config_from_dump(record.config)
        unit = float(iterations_per_epoch(cfg) * cfg.data.batch.size * cfg.data.image_size ** 2)
    except (ValueError, OSError):
        return None
    wall, slope, last_epoch, last_s = times
    if cfg.data.folds:  # one report per fold-set: the whole run is the unit
        unit, slope, last_epoch, last_s = unit * cfg.data.folds, None, cfg.train.epochs, wall
    key = (recipe(record.config), stored_device(record))
    return Observed(sweep, folder, record.phase, key, wall / load, unit, cfg.train.epochs,
                    None if slope is None else slope / load, last_epoch, last_s / load, load,
                    0 if cfg.data.folds else cfg.train.eval_every)


class _Sweeps:
    """How many trials each stored sweep ran at once and on how many cores (its plan and the
    hardware its records name); a sweep whose folder or plan is gone: the slots the forecast has."""

    def __init__(self, fallback_slots: int) -> None:
        self.fallback, self.slots = fallback_slots, {}

    def running(self, folder: str, record: TrialRecord, phase_trials: int) -> tuple[int, float]:
        found = _HARDWARE.search(record.hardware or "")
        cpus, gpus = (float(found[1]), float(found[2])) if found else (0.0, 0.0)
        if folder not in self.slots:
            try:
                spec = plan_of(folder).spec
                self.slots[folder] = local_pool(cpus, gpus, spec.resources_per_trial, spec.max_concurrent_trials,
                                                False).slots if cpus else None
            except (SweepError, OSError, ValueError):
                self.slots[folder] = None
        slots = self.slots[folder] or self.fallback
        return max(1, min(slots, phase_trials)), cpus


def observed_trials(records: Sequence[tuple[str, str, TrialRecord]], wanted: set[tuple[str, str]],
                    slots: int = 1) -> list[tuple[Observed, bool]]:
    """The stored trials of the `wanted` (recipe, device) pairs, each with whether it started a
    new worker process: per sweep and phase, as many trials as ran at once at its start (its
    slots, or `slots` when its folder is gone), of any recipe (the cells share the workers), those
    with the largest fixed part."""
    groups: dict[tuple[str, str], list[tuple[str, TrialRecord]]] = {}
    for name, folder, record in records:
        groups.setdefault((folder, record.phase), []).append((name, record))
    sweeps, out = _Sweeps(slots), []
    for (folder, _), rows in groups.items():
        rows.sort(key=lambda row: _overhead(row[1]), reverse=True)
        for i, (name, record) in enumerate(rows):
            if not record.config or (recipe(record.config), stored_device(record)) not in wanted:
                continue
            running, cpus = sweeps.running(folder, record, len(rows))
            threads = int(get_dotted(record.config, "train.num_threads") or 1)
            load = contention(running, threads, cpus) if stored_device(record) == "cpu" else 1.0
            seen = observe(name, folder, record, load)
            if seen is not None:
                out.append((seen, i < running))
    return out


def per_epoch_cost(rows: Sequence[Observed], warm: Sequence[Observed]) -> tuple[float, list[float], str]:
    """Seconds per image-pixel of one recipe's trials `rows` (`warm`: those in a reused worker),
    the trials' own values it comes from (their spread), and how it was found."""
    slopes = [o.slope / o.unit for o in rows if o.slope is not None]
    if slopes:
        return statistics.median(slopes), slopes, "per-epoch cost from the slope between evaluations"
    steady = warm or rows
    own = [o.last_s / (o.last_epoch * o.unit) for o in steady]
    work = [o.unit * o.epochs for o in steady]
    if len(set(work)) >= 2:
        slope = float(np.polyfit(work, [o.wall for o in steady], 1)[0])
        if slope > 0:
            return slope, own, f"per-epoch cost fitted over {len(set(work))} epoch counts"
    return (statistics.median(own), own,
            "one evaluation per trial at one epoch count: the training loop's fixed part is priced per epoch"
            + ("" if warm else ", a new worker's slow first steps too (no trial in a reused worker)"))


def _fit(rows: list[Observed], fresh: list[bool], fresh_s: Optional[float]) -> Rate:
    warm = [o for o, new in zip(rows, fresh) if not new]
    per, own, how = per_epoch_cost(rows, warm)
    if warm:
        fixed = statistics.median(max(0.0, o.wall - per * o.unit * o.epochs) for o in warm)
    else:  # only new-worker trials: their fixed part less what a new worker adds
        fixed = max(0.0, statistics.median(o.wall - per * o.unit * o.epochs for o in rows) - (fresh_s or 0.0))
    return Rate(per, fixed, fresh_s=fresh_s or 0.0, device=rows[0].key[1], trials=len(rows),
                sweeps=sorted({o.sweep for o in rows}), spread=(min(own) / per, max(own) / per), how=how,
                ran_at=statistics.median(o.load for o in rows), cadence=statistics.median(o.cadence for o in rows))


def stored_rates(records: Sequence[tuple[str, str, TrialRecord]], wanted: set[tuple[str, str, str]],
                 slots: int = 1) -> dict[tuple[str, str, str], Rate]:
    """A `Rate` per wanted (recipe, device, phase) that stored trials give: from trials of that
    phase where some exist, else of any phase (`Rate.phase` says which).

    The new-worker extra is one for all recipes: per stored sweep and phase, the median of its
    new-worker trials' excess over their recipe's line less that of its other trials."""
    seen = observed_trials(records, {(r, d) for r, d, _ in wanted}, slots)
    by_key: dict[tuple[str, str, str], list[tuple[Observed, bool]]] = {}
    for o, new in seen:
        by_key.setdefault((*o.key, o.phase), []).append((o, new))
    lines = {k: _fit([o for o, _ in v], [new for _, new in v], None).per_pixel_image_s for k, v in by_key.items()}
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for o, new in seen:
        excess = o.wall - lines[(*o.key, o.phase)] * o.unit * o.epochs
        groups.setdefault((o.folder, o.phase), ([], []))[0 if new else 1].append(excess)
    extras = [statistics.median(a) - statistics.median(b) for a, b in groups.values() if a and b]
    fresh_s = max(0.0, statistics.median(extras)) if extras else None
    rates = {}
    for r, d, phase in wanted:
        same = by_key.get((r, d, phase))
        chosen = same or [x for (kr, kd, _), v in sorted(by_key.items()) if (kr, kd) == (r, d) for x in v]
        if chosen:
            rates[(r, d, phase)] = _fit([o for o, _ in chosen], [new for _, new in chosen], fresh_s)
            if not same:
                rates[(r, d, phase)].phase = "/".join(sorted({o.phase for o, _ in chosen}))
    return rates

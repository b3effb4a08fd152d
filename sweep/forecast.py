"""What a sweep will cost before it runs: trial-hours and wall time per phase and in total.

A trial's cost is modelled as ``overhead + per_image x area x images + per_eval x evaluations``,
plus ``fresh`` for the first trials of each phase, one per slot, which start new worker processes:
``images`` are the images it trains on (epochs x iterations per epoch x batch, x folds), the
iterations per epoch following the training split's size when `train.iterations_per_epoch` is
unset; ``area`` is `data.image_size` squared (a conv net's cost per image grows with its pixels).
The rates come from, in this order:

1. stored trials of the same *recipe* on the same device type: finished trials in the trial
   store (any sweep, reused ones not counted twice) whose config agrees on every field that sets
   the work of a step (`COST_FIELDS`: dataset, model, loss, expansion, batch, threads, workers,
   precision); epochs, seeds, learning rates, image size and the split's size may differ, and are
   scaled for. Each stored trial gives a wall time per epoch (the slope of its evaluations'
   `time_s`, evaluations included) and its start-up (the rest of its wall time); the forecast
   takes the medians of the trials that reused a worker (`fresh`: what the others took more) and
   says how far the trials spread around them;
2. with `--calibrate`, where no stored trial exists: a few timed iterations and one evaluation of
   each distinct trial shape in this process, on this machine's device (stated "calibrated on
   cpu" or "... cuda"), `fresh` timed as a new interpreter's imports: a short run on a busy
   machine is the weaker estimate.

A trial with neither is counted as unknown. Wall time: the trials of a phase spread over the
slots the resources give (`resources_per_trial` against this machine, the cluster joined, or
each node type of `--cluster-config` at its `max_workers`, `max_concurrent_trials` capping),
longest first; the phases run one after the other. Search trials are costed at their full
epochs (ASHA may stop some early: then it is an upper bound), a seed policy at its largest
number of seeds.

The forecast a sweep started with is kept in `<sweep dir>/forecast.json`; the report puts it
beside the measured trial time (`sweep.forecast_text.beside_measured`). The timing of
`--calibrate` is `sweep.calibration`'s, the slots and wall time `sweep.trial_slots`'s, the words
`sweep.forecast_text`'s.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from dml_core.config import ExperimentConfig, config_from_dump, get_dotted
from sweep.calibration import CALIBRATION_ITERS
from sweep.labels import fmt_duration
from sweep.plan import FINAL, SEARCH, SweepPlan, trial_config
from sweep.records import FINISHED, TrialRecord
from sweep.spec import Resources, SweepError
from sweep.trial_slots import Pool, makespan

FORECAST_FILE = "forecast.json"
# The config fields that set the work of one training step (dotted prefixes); any other field
# (seed, epochs, lr, image size, the split's size, evaluation cadence) is either scaled for or
# changes no cost.
COST_FIELDS = ("data.name", "data.batch", "data.num_workers", "data.cache_features", "data.train_transform",
               "model", "loss.name", "expansion", "optimizer.name", "train.amp", "train.num_threads",
               "train.device", "eval.clustering")


def recipe(config: dict[str, Any]) -> str:
    """A digest of the `COST_FIELDS` of a resolved config: trials with the same one cost the same per image."""
    blob = json.dumps({f: get_dotted(config, f) for f in COST_FIELDS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def planned_device(cfg: ExperimentConfig, request: Resources) -> str:
    """Where a trial will train: `train.device`, `auto` meaning CUDA when the trial holds a GPU
    (Ray hides the devices of a trial that asks for none)."""
    if cfg.train.device != "auto":
        return cfg.train.device
    return "cuda" if request.gpu > 0 else "cpu"


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


@dataclass(frozen=True)
class Work:
    """What one planned trial trains, in the units the rates are in."""

    phase: str
    cell: str
    recipe: str
    device: str
    images_per_epoch: float  # iterations x batch x fits
    epochs: int
    area: float  # image_size ** 2
    evaluations: int

    @classmethod
    def of(cls, phase: str, cell: str, cfg: ExperimentConfig, request: Resources) -> "Work":
        fits = cfg.data.folds or 1
        last = cfg.train.epochs
        evals = sum(1 for e in range(1, last + 1)
                    if e == last or (e % cfg.train.eval_every == 0 and e >= cfg.train.eval_from_epoch))
        return cls(phase, cell, recipe(cfg.to_dict()), planned_device(cfg, request),
                   float(iterations_per_epoch(cfg) * cfg.data.batch.size * fits), cfg.train.epochs,
                   float(cfg.data.image_size ** 2), evals * fits)


@dataclass
class Rate:
    """The cost of one recipe on one device type."""

    per_pixel_image_s: float  # seconds per trained image per pixel of image area (evaluations included for stored rates)
    overhead_s: float  # a trial's start-up in a worker that ran a trial before: what does not grow with epochs
    fresh_s: float = 0.0  # what a trial in a new worker process adds (imports, first-epoch warm-up)
    per_eval_s: float = 0.0  # calibrated rates time an evaluation apart
    device: str = "cpu"
    trials: int = 0  # stored trials it comes from; 0 = calibrated
    sweeps: list[str] = field(default_factory=list)
    spread: tuple[float, float] = (1.0, 1.0)  # the stored trials' own rates, min and max / the median

    @property
    def calibrated(self) -> bool:
        return self.trials == 0

    def seconds(self, work: Work) -> float:
        return (self.overhead_s + self.per_pixel_image_s * work.area * work.images_per_epoch * work.epochs
                + self.per_eval_s * work.evaluations)


def planned_work(plan: SweepPlan) -> list[tuple[Work, ExperimentConfig]]:
    """Every trial the plan may run (search samples at the base values of the searched
    parameters, which set no cost; a seed policy at its largest seed count), with its config."""
    request = plan.spec.resources_per_trial
    out = []
    for trial in plan.final_trials():
        cfg = trial_config(plan.base, trial, None, plan.source)
        out.append((Work.of(FINAL, trial.cell, cfg, request), cfg))
    if plan.spec.search:
        for cell in plan.cells:
            trial = plan.search_trial(cell)
            cfg = trial_config(plan.base, trial, None, plan.source)
            out += [(Work.of(SEARCH, cell.id, cfg, request), cfg)] * plan.spec.search.num_samples
    return out


# ---------------------------------------------------------------------------- rates from the store


def stored_trials(store_path: Path) -> list[tuple[str, TrialRecord]]:
    """(sweep name, record) of every finished trial that trained in its own sweep (a reused one
    repeats another's numbers); read-only, and nothing when the store does not exist."""
    if not store_path.is_file():
        return []
    conn = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT s.name, t.record FROM trials t JOIN sweeps s ON s.id = t.sweep "
                            "WHERE t.status = ? AND t.reused = 0", (FINISHED,)).fetchall()
    except sqlite3.DatabaseError as e:
        raise SweepError(f"{store_path}: cannot read the trial store ({e})") from None
    finally:
        conn.close()
    return [(name, TrialRecord.model_validate_json(record)) for name, record in rows]


def record_rate(record: TrialRecord) -> Optional[tuple[float, float, float]]:
    """(seconds per trained image per pixel, start-up seconds, images x pixels trained) of one
    stored trial; None when it lacks what is needed (no timed evaluation, or its data is not
    readable here)."""
    timed = [h for h in record.history if h.get("time_s") is not None and h.get("epoch")]
    if not timed or not record.config:
        return None
    try:
        cfg = config_from_dump(record.config)
        images = iterations_per_epoch(cfg) * cfg.data.batch.size
    except (ValueError, OSError):
        return None
    first, last = timed[0], timed[-1]
    if cfg.data.folds:  # one report per fold-set: the whole run is the unit
        per_epoch, epochs = float(record.wall_s or last["time_s"]) / cfg.train.epochs, cfg.train.epochs
        images *= cfg.data.folds
    elif last["epoch"] > first["epoch"]:
        per_epoch, epochs = (last["time_s"] - first["time_s"]) / (last["epoch"] - first["epoch"]), last["epoch"]
    else:
        per_epoch, epochs = last["time_s"] / last["epoch"], last["epoch"]
    wall = float(record.wall_s if record.wall_s else last["time_s"])
    work = images * cfg.data.image_size ** 2
    return per_epoch / work, max(0.0, wall - per_epoch * epochs), work * epochs


def stored_rates(records: Sequence[tuple[str, TrialRecord]], wanted: set[tuple[str, str]],
                 slots: int = 1) -> dict[tuple[str, str], Rate]:
    """A `Rate` per (recipe, device) of `wanted` that some stored trials of it give.

    Each phase of a sweep is a new Tune experiment: its first trials, one per slot, start new
    worker processes (torch imported, the first epochs slower), the later ones reuse them. So per
    sweep and phase the `slots` trials with the largest start-up count as new-worker trials (this
    machine's slots, the stored sweep's most likely; any recipe: the cells share the workers), the
    others give the per-image cost and the start-up of a reused worker; the difference in start-up
    is `fresh_s`. One median start-up for both kinds, over a sweep of two new-worker and two
    reused trials, put 5.5 s on every trial where the reused ones took 0.3 s."""
    groups: dict[tuple[str, str], list[tuple[float, tuple[str, str], tuple[float, float, float]]]] = {}
    for sweep, record in records:
        key = (recipe(record.config), stored_device(record)) if record.config else None
        rate = record_rate(record) if key in wanted else None
        if rate is not None:  # new workers are a sweep's, whatever the recipe: grouped by sweep and phase
            groups.setdefault((sweep, record.phase), []).append((rate[1], key, rate))
    found: dict[tuple[str, str], tuple[list, list, set[str]]] = {}  # key -> (reused, new worker, sweeps)
    extras = []
    for (sweep, _), rows in groups.items():
        rows.sort(key=lambda r: r[0], reverse=True)
        if len(rows) > slots:
            extras.append(statistics.median(r[0] for r in rows[:slots]) - statistics.median(r[0] for r in rows[slots:]))
        for i, (_, key, rate) in enumerate(rows):
            warm, fresh, sweeps = found.setdefault(key, ([], [], set()))
            (fresh if i < slots else warm).append(rate)
            sweeps.add(sweep)
    fresh_s = max(0.0, statistics.median(extras)) if extras else 0.0
    rates = {}
    for key, (warm, fresh, sweeps) in found.items():
        # Trials that reused a worker set the pace (a new process' first epochs run slower), else
        # the new-worker ones with their extra start-up taken off.
        steady = warm or [(per, max(0.0, overhead - fresh_s), work) for per, overhead, work in fresh]
        per = statistics.median(r[0] for r in steady)
        rates[key] = Rate(per, statistics.median(r[1] for r in steady), fresh_s=fresh_s, device=key[1],
                          trials=len(warm) + len(fresh), sweeps=sorted(sweeps),
                          spread=(min(r[0] for r in steady) / per, max(r[0] for r in steady) / per))
    return rates


# ---------------------------------------------------------------------------- the forecast


@dataclass
class PhaseCost:
    trials: int
    trial_s: float  # summed over the trials with an estimate
    wall_s: float
    unknown: int  # trials of no stored recipe and not calibrated


@dataclass
class Forecast:
    phases: dict[str, PhaseCost]
    pool: Pool
    sources: list[str]  # one line per rate used: where it comes from, how sure
    unknown_cells: list[str]

    @property
    def total(self) -> PhaseCost:
        ph = list(self.phases.values())
        return PhaseCost(sum(p.trials for p in ph), sum(p.trial_s for p in ph), sum(p.wall_s for p in ph),
                         sum(p.unknown for p in ph))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Forecast":
        return cls({k: PhaseCost(**v) for k, v in d["phases"].items()}, Pool(**d["pool"]), list(d["sources"]),
                   list(d["unknown_cells"]))


def describe_source(rate: Rate, shape: str) -> str:
    if rate.calibrated:
        return (f"{shape}: calibrated on {rate.device} ({CALIBRATION_ITERS} timed iterations and one evaluation on this "
                f"machine, a start-up of {fmt_duration(rate.overhead_s)}, {fmt_duration(rate.fresh_s)} more in a new worker; "
                f"one short run: the least sure estimate)")
    lo, hi = rate.spread
    return (f"{shape}: from {rate.trials} stored trial{'s' * (rate.trials != 1)} of this recipe on {rate.device} "
            f"(sweep{'s' * (len(rate.sweeps) != 1)} {', '.join(rate.sweeps)}); their per-image cost spans "
            f"{(lo - 1) * 100:+.0f} % .. {(hi - 1) * 100:+.0f} % of the median")


def make_forecast(plan: SweepPlan, store_path: Path, pool: Pool, calibrate_missing: bool = False) -> Forecast:
    """The forecast of `plan` from the trial store at `store_path` (and calibration, if asked)."""
    work = planned_work(plan)
    wanted = {(w.recipe, w.device) for w, _ in work}
    rates = stored_rates(stored_trials(store_path), wanted, max(1, pool.slots))
    names = {}  # (recipe, device) -> the first cell of it, to name the shape for people
    for w, cfg in work:
        names.setdefault((w.recipe, w.device), (w.cell, cfg))
    if calibrate_missing and wanted - rates.keys():
        from sweep.calibration import calibrate, import_seconds

        cold, imports = None, import_seconds()
        for key in sorted(wanted - rates.keys()):
            per_pixel_image_s, setup_s, per_eval_s = calibrate(names[key][1], key[1])
            rates[key] = Rate(per_pixel_image_s, setup_s, per_eval_s=per_eval_s, device=key[1])
            # The first shape's start-up builds its data cold; the later shapes' reuse this
            # process' caches and would read too low.
            cold = rates[key].overhead_s if cold is None else cold
            rates[key].overhead_s, rates[key].fresh_s = cold, imports
    phases: dict[str, PhaseCost] = {}
    for phase in (SEARCH, FINAL):
        mine = [w for w, _ in work if w.phase == phase]
        if not mine:
            continue
        priced = sorted(((rates[(w.recipe, w.device)].seconds(w), rates[(w.recipe, w.device)].fresh_s)
                         for w in mine if (w.recipe, w.device) in rates), reverse=True)
        # A phase starts new worker processes: its first trials, one per slot (longest first), pay for them.
        known = [s + (fresh if i < pool.slots else 0.0) for i, (s, fresh) in enumerate(priced)]
        phases[phase] = PhaseCost(len(mine), sum(known), makespan(known, pool.slots), len(mine) - len(known))
    multi = len(wanted) > 1
    sources = [describe_source(rates[k], f"cells like {names[k][0]}" if multi else "every trial")
               for k in sorted(rates, key=lambda k: names[k][0])]
    unknown = sorted({names[k][0] for k in wanted - rates.keys()})
    return Forecast(phases, pool, sources, unknown)


def save(forecast: Forecast, sweep_dir: Path) -> None:
    """Keep the forecast a sweep starts with (a resumed sweep keeps its first one)."""
    from dml_core.io import atomic_write_json, make_dir

    path = Path(sweep_dir) / FORECAST_FILE
    if not path.exists():
        make_dir(path.parent)
        atomic_write_json(path, {"made": time.strftime("%Y-%m-%d %H:%M:%S"), **forecast.to_json()})


def load(sweep_dir: Path) -> Optional[Forecast]:
    path = Path(sweep_dir) / FORECAST_FILE
    if not path.is_file():
        return None
    try:
        return Forecast.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError):
        return None  # a hand-edited or older file: the report goes on without it

"""What a sweep will cost before it runs: trial-hours and wall time per phase and in total.

A trial's cost is modelled as ``fixed + per_image x area x images + per_eval x evaluations``,
plus ``fresh`` for the first trials of each phase, one per slot, which start new worker processes,
all times the contention the phase runs at: ``images`` are the images it trains on (epochs x
iterations per epoch x batch, x folds), the iterations per epoch following the training split's
size when `train.iterations_per_epoch` is unset; ``area`` is `data.image_size` squared (a conv
net's cost per image grows with its pixels). The rates come from, in this order:

1. stored trials of the same *recipe* on the same device type (`sweep.stored_rates`): finished
   trials in the trial store (any sweep, reused ones not counted twice) whose config agrees on
   every field that sets the work of a step (`COST_FIELDS`: dataset, model, loss, expansion,
   batch, threads, workers, precision); epochs, seeds, learning rates, image size and the
   split's size may differ, and are scaled for. Their per-epoch cost, fixed part and new-worker
   extra, at contention 1 (their times divided by the contention they ran at);
2. with `--calibrate`, where no stored trial exists: a few timed iterations and one evaluation of
   each distinct trial shape in this process, on this machine's device (stated "calibrated on
   cpu" or "... cuda"), `fresh` timed as a new interpreter's imports: a short run on a busy
   machine is the weaker estimate.

A trial with neither is counted as unknown. Contention: a phase runs as many trials at once as
its slots (or its trials, if fewer); CPU trials whose threads exceed the cores each run that many
times slower (`stored_rates.contention`). Other work on the machine is not seen. Wall time: the
trials of a phase spread over the slots the resources give (`resources_per_trial` against this
machine, the cluster joined, or each node type of `--cluster-config` at its `max_workers`,
`max_concurrent_trials` capping), longest first; the phases run one after the other. Search
trials are costed at their full epochs (ASHA may stop some early: then it is an upper bound), a
seed policy at its largest number of seeds.

The forecast a sweep started with is kept in `<sweep dir>/forecast.json`; the report puts it
beside the measured trial time (`sweep.forecast_text.beside_measured`): both are Tune's
`time_total_s` of each trial at its last evaluation, summed. The timing of `--calibrate` is
`sweep.calibration`'s, the slots and wall time `sweep.trial_slots`'s, the words
`sweep.forecast_text`'s.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from dml_core.config import ExperimentConfig
from sweep.calibration import CALIBRATION_ITERS
from sweep.labels import fmt_duration
from sweep.plan import FINAL, SEARCH, SweepPlan, trial_config
from sweep.spec import Resources
from sweep.stored_rates import Rate, contention, iterations_per_epoch, recipe, stored_rates, stored_trials
from sweep.trial_slots import Pool, makespan

FORECAST_FILE = "forecast.json"


def planned_device(cfg: ExperimentConfig, request: Resources) -> str:
    """Where a trial will train: `train.device`, `auto` meaning CUDA when the trial holds a GPU
    (Ray hides the devices of a trial that asks for none)."""
    if cfg.train.device != "auto":
        return cfg.train.device
    return "cuda" if request.gpu > 0 else "cpu"


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
    threads: int = 1
    cadence: int = 0  # `train.eval_every`; 0 for a fold search sample

    @classmethod
    def of(cls, phase: str, cell: str, cfg: ExperimentConfig, request: Resources) -> "Work":
        fits = cfg.data.folds or 1
        last = cfg.train.epochs
        evals = sum(1 for e in range(1, last + 1)
                    if e == last or (e % cfg.train.eval_every == 0 and e >= cfg.train.eval_from_epoch))
        return cls(phase, cell, recipe(cfg.to_dict()), planned_device(cfg, request),
                   float(iterations_per_epoch(cfg) * cfg.data.batch.size * fits), cfg.train.epochs,
                   float(cfg.data.image_size ** 2), evals * fits, cfg.train.num_threads or 1,
                   0 if cfg.data.folds else cfg.train.eval_every)


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


# ---------------------------------------------------------------------------- the forecast


@dataclass
class PhaseCost:
    trials: int
    trial_s: float  # summed over the trials with an estimate
    wall_s: float
    unknown: int  # trials of no stored recipe and not calibrated
    load: float = 1.0  # the contention its CPU trials are priced at (`stored_rates.contention`)


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
                         sum(p.unknown for p in ph), max((p.load for p in ph), default=1.0))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Forecast":
        return cls({k: PhaseCost(**v) for k, v in d["phases"].items()}, Pool(**d["pool"]), list(d["sources"]),
                   list(d["unknown_cells"]))


def describe_source(rate: Rate, shape: str, cadence: int = 0) -> str:
    """Where `rate` comes from and how sure it is; `cadence`: the planned trials' `eval_every`."""
    if rate.calibrated:
        return (f"{shape}: calibrated on {rate.device} ({CALIBRATION_ITERS} timed iterations and one evaluation on this "
                f"machine, a start-up of {fmt_duration(rate.overhead_s)}, {fmt_duration(rate.fresh_s)} more in a new worker; "
                f"one short run: the least sure estimate)")
    lo, hi = rate.spread
    other = f"; from {rate.phase} trials, which evaluate another split" if rate.phase else ""
    ran = f"; their times / {rate.ran_at:.2g}, the contention they ran at" if rate.ran_at > 1 else ""
    if cadence and rate.cadence and cadence != rate.cadence:  # evaluation and training are one slope
        ran += f"; they evaluated every {rate.cadence:g} epochs, these every {cadence}: priced at theirs"
    return (f"{shape}: from {rate.trials} stored trial{'s' * (rate.trials != 1)} of this recipe on {rate.device} "
            f"(sweep{'s' * (len(rate.sweeps) != 1)} {', '.join(rate.sweeps)}); their per-image cost spans "
            f"{(lo - 1) * 100:+.0f} % .. {(hi - 1) * 100:+.0f} % of the median; {rate.how}; fixed "
            f"{fmt_duration(rate.overhead_s)} a trial, {fmt_duration(rate.fresh_s)} more in a new worker{other}{ran}")


def _calibrated(missing: set[tuple[str, str]], configs: dict[tuple[str, str], ExperimentConfig]) -> dict[tuple[str, str], Rate]:
    """`--calibrate`'s rate of each (recipe, device) in `missing`, timed here."""
    from sweep.calibration import calibrate, import_seconds

    rates, cold, imports = {}, None, import_seconds()
    for key in sorted(missing):
        per_pixel_image_s, setup_s, per_eval_s = calibrate(configs[key], key[1])
        # The first shape's start-up builds its data cold; the later shapes' reuse this
        # process' caches and would read too low.
        cold = setup_s if cold is None else cold
        rates[key] = Rate(per_pixel_image_s, cold, fresh_s=imports, per_eval_s=per_eval_s, device=key[1])
    return rates


def _phase_cost(mine: list[Work], rates: dict[tuple[str, str, str], Rate], pool: Pool) -> PhaseCost:
    """The phase's trials at the contention of its slots filled (or of its trials, if fewer); a
    phase starts new worker processes: its first trials, one per slot (longest first), pay for them."""
    running = min(len(mine), pool.slots)
    loads = [contention(running, w.threads, pool.cpus) if w.device == "cpu" else 1.0 for w in mine]
    priced = sorted(((rates[k].seconds(w.images_per_epoch * w.area * w.epochs, w.evaluations) * load,
                      rates[k].fresh_s * load) for w, load in zip(mine, loads)
                     if (k := (w.recipe, w.device, w.phase)) in rates), reverse=True)
    known = [s + (fresh if i < pool.slots else 0.0) for i, (s, fresh) in enumerate(priced)]
    return PhaseCost(len(mine), sum(known), makespan(known, pool.slots), len(mine) - len(known), max(loads))


def make_forecast(plan: SweepPlan, store_path: Path, pool: Pool, calibrate_missing: bool = False) -> Forecast:
    """The forecast of `plan` from the trial store at `store_path` (and calibration, if asked)."""
    work = planned_work(plan)
    wanted = {(w.recipe, w.device, w.phase) for w, _ in work}
    rates = stored_rates(stored_trials(store_path), wanted, max(1, pool.slots))
    names = {}  # (recipe, device) -> the first cell of it, to name the shape for people
    for w, cfg in work:
        names.setdefault((w.recipe, w.device), (w.cell, cfg))
    missing = {(r, d) for r, d, ph in wanted - rates.keys()}
    if calibrate_missing and missing:
        timed = _calibrated(missing, {k: names[k][1] for k in missing})
        rates |= {k: timed[k[:2]] for k in wanted - rates.keys()}
    phases = {ph: _phase_cost([w for w, _ in work if w.phase == ph], rates, pool)
              for ph in (SEARCH, FINAL) if any(w.phase == ph for w, _ in work)}
    shapes, sources = len(names) > 1, []
    for r, d, ph in sorted(rates, key=lambda k: (names[k[:2]][0], k[2])):
        shape = f"cells like {names[(r, d)][0]}" if shapes else "every trial"
        if not rates[(r, d, ph)].calibrated and len(phases) > 1:
            shape = f"{ph} trials of {shape}" if shapes else f"every {ph} trial"
        line = describe_source(rates[(r, d, ph)], shape,
                               max(w.cadence for w, _ in work if (w.recipe, w.device, w.phase) == (r, d, ph)))
        sources += [line] if line not in sources else []  # a calibrated rate serves every phase
    unknown = sorted({names[k][0] for k in missing - {k[:2] for k in rates}})
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

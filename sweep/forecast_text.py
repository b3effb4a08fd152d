"""A cost forecast in words: the dry run's block, each rate's source, and the report's sentence beside the measured time."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from sweep.labels import fmt_duration
from sweep.plan import SEARCH
from sweep.records import TrialRecord

if TYPE_CHECKING:  # the forecast's shapes; forecast.py words each rate's source itself
    from sweep.forecast import Forecast


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} trial-hours ({fmt_duration(seconds)})"


def describe(forecast: Forecast) -> str:
    """The dry run's forecast block."""
    if not forecast.sources:
        return ("  forecast: no stored trial of this sweep's recipe in the trial store; --calibrate times a few "
                "iterations of each trial shape here")
    pool, load = forecast.pool, forecast.total.load
    lines = [f"  forecast on {pool.where}: {pool.slots} trial{'s' * (pool.slots != 1)} at once"]
    if pool.cpus:  # what the stored trials' times are scaled to; a busy machine's other work is not seen
        lines[0] += (f", priced at that contention on {pool.cpus:g} CPU cores (each CPU trial "
                     f"{'as fast as alone' if load <= 1 else f'{load:.2g}x its time alone'}; other work on them not counted)")
    for name, p in [*forecast.phases.items(), ("total", forecast.total)]:
        part = f" ({p.unknown} of them not estimated)" if p.unknown else ""
        lines.append(f"    {name:<6} {p.trials:>4} trials{part}: {_hours(p.trial_s)}, wall {fmt_duration(p.wall_s)}")
    lines += [f"    how sure: {s}" for s in forecast.sources]
    if forecast.unknown_cells:
        lines.append(f"    not estimated (no stored trial of their recipe): cells like {', '.join(forecast.unknown_cells)}; "
                     "--calibrate times them here")
    if SEARCH in forecast.phases:
        lines.append("    search trials are costed at their full epochs (early stopping only shortens them)")
    return "\n".join(lines)



def beside_measured(forecast: Forecast, records: Sequence[TrialRecord]) -> str:
    """One sentence for the report: the forecast trial time per phase beside what the trials took."""
    parts = []
    for phase, p in forecast.phases.items():
        ran = [r for r in records if r.phase == phase and not r.reused and r.wall_s]
        measured = sum(float(r.wall_s or 0) for r in ran)
        # A ratio only when the same trials are on both sides (none answered from the store, all priced).
        whole = p.trial_s > 0 and len(ran) == p.trials and not p.unknown
        ratio = f", measured / forecast {measured / p.trial_s:.2f}" if whole else ""
        parts.append(f"{phase} forecast {fmt_duration(p.trial_s)} for {p.trials - p.unknown} trials, "
                     f"measured {fmt_duration(measured)} over the {len(ran)} that trained here{ratio}")
    return "Cost: " + "; ".join(parts) + "."

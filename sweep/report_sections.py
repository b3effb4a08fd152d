"""What a sweep's report says, section by section, as document blocks (`sweep.document`) around the values of a `ReportView`.

The markdown and the HTML report render this one list of blocks, so they never say different
things. What was run comes first after the headlines: the command of each session (`commands.txt`,
with its `--set` overrides; `sweep.writers.record_command`), the git commit, and the recipe -- the
base config's fields that differ from their defaults, with the swept and searched ones saying so.
Each trial row links its MLflow run (`#/runs/<id>`, which MLflow's UI opens in its experiment).
Every number and name in the tables comes formatted from `sweep.report_view`; this module says
the words around them.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sweep.baseline import describe_baseline
from sweep.labels import metric_label
from sweep.plots import Figure
from sweep.report_view import CLIPPED, ReportView
from sweep.results import PAPERS_SELECTION_METRIC
from sweep.selection import Z
from sweep.stats import ALPHA, CONFIDENCE, t_multiplier
from sweep.document import Block, Bullets, Heading, Para, Table


COMMANDS_FILE = "commands.txt"  # one line per driver session: `<UTC time>  <command>`
DASHBOARD_INSTALL = ".venv/bin/pip install -e '.[dashboard]'"


def report_blocks(view: ReportView, figures: list[Figure], sweep_dir: Path) -> list[Block]:
    results = view.results
    plan = results.plan
    blocks: list[Block] = [Heading(f"Sweep `{plan.name}`", 1), Para(_summary(view))]
    from sweep.forecast import load as load_forecast  # the cost forecast the sweep started with
    from sweep.forecast_text import beside_measured

    if (forecast := load_forecast(sweep_dir)) is not None:
        blocks.append(Para(beside_measured(forecast, results.records.trials)))
    if results.primary:
        blocks += [Heading("Headlines"), Bullets(results.summary.headlines)]
    # On the first screen: a search that picked within noise says so before any table.
    blocks += [Para(f"**Search, {s.label}:** {s.note}") for s in results.search_unseparated[:5]]
    if len(results.search_unseparated) > 5:
        blocks.append(Para(f"... and {len(results.search_unseparated) - 5} more cells whose search could not separate "
                           "candidates (the Search section)."))
    blocks += _what_ran_section(view, sweep_dir)
    blocks += _policy_section(view)
    blocks += _cells_section(view)
    if plan.spec.baseline:
        blocks += _comparison_section(view)
    if plan.spec.search:
        blocks += _search_section(view, sweep_dir)
    sections: dict[str, list[Figure]] = defaultdict(list)
    for f in figures:
        sections[f.title].append(f)
    for title, figs in sections.items():
        blocks += [Heading(title), *figs]
    blocks += _trials_section(view)
    return blocks


def _summary(view: ReportView) -> str:
    results = view.results
    plan, metric = results.plan, results.metric
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in results.records.trials:
        counts[(r.phase, r.status)] += 1
    tally = "; ".join(f"{ph} " + ", ".join(f"{n} {st.lower()}" for (p, st), n in sorted(counts.items()) if p == ph)
                      for ph in ("search", "final") if any(p == ph for p, _ in counts))
    which = {"last": "its **last** evaluation (the model as trained)",
             "best": f"its **best** evaluation by {view.metric.label} (optimistic: the epoch is chosen on the test split)",
             "best_on_test": f"its evaluation of best {metric_label(PAPERS_SELECTION_METRIC)} -- **test-set selection**, "
                             "the papers' choice (the epoch is chosen on the test split; optimistic)"}[results.evaluation]
    seeds = f"from {plan.seeds} by the seed policy below" if results.policy else f"{plan.seeds}"
    return (f"Source `{plan.source}`; {len(plan.cells)} cells x seeds {seeds}; primary metric "
            f"{view.metric.label} (`{metric}`, {plan.spec.mode}). **Units: metrics that are fractions are in %, "
            f"differences in percentage points; {CONFIDENCE:.0%} intervals are clipped to the metric's range "
            f"([0, 100] %, ±100 points), a clipped bound is marked {CLIPPED}.** "
            f"Trials: {tally or 'none yet'}. Wall time {view.wall_time} "
            f"(driver, all sessions); trial time {view.trial_time} (sum over trials). "
            f"Each final trial enters the statistics with {which}; set `sweep.report.evaluation: last|best|best_on_test` "
            "or `python sweep/report.py DIR --evaluation best`.")


def _what_ran_section(view: ReportView, sweep_dir: Path) -> list[Block]:
    """The commands (with their `--set` overrides), the code's commit and the resolved recipe."""
    results = view.results
    path = sweep_dir / COMMANDS_FILE
    commands = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    commit = results.records.meta.git_commit
    blocks: list[Block] = [Heading("What was run")]
    if commands:
        blocks += [Para("Commands (one per driver session; `--set` overrides the YAML):"),
                   Bullets([f"`{c}`" for c in commands])]
    else:
        blocks.append(Para(f"Command not recorded (a sweep started by an earlier version, or from Python); "
                           f"the YAML as run is `{sweep_dir / 'sweep.yaml'}`."))
    blocks.append(Para(f"Code: git commit `{commit}`; source `{results.plan.source}`; the resolved YAML "
                       f"`sweep.yaml` in the sweep folder."))
    blocks += [Para("Recipe: the base experiment's fields that differ from their defaults (and the components "
                    "it uses); a swept or searched field says so."),
               Table(["field", "value", "default"], view.recipe_rows)]
    return blocks


def _policy_section(view: ReportView) -> list[Block]:
    """A seed policy's rule, procedure and where each comparison stopped."""
    if view.policy is None:
        return []
    rule, procedure, rows = view.policy
    return [Heading("Seed policy"), Para(f"Rule: {rule}."),
            Para(f"Procedure: {procedure}. Each comparison's interval is the repeated {CONFIDENCE:.0%} CI of "
                 "the look where it stopped: it holds whatever the stopping; the per-cell intervals are plain Student-t "
                 "over the seeds each cell ran (descriptive)."),
            Table(["comparison", "seeds", "look", "stopped because"], rows)]


def _equivalence_note(view: ReportView) -> str:
    margin = view.results.plan.spec.equivalence_margin
    if margin is None:
        return ""
    unit = view.metric.suffix
    return (f"; equivalent within ±{margin:g}{unit} when the interval contains 0 and lies inside the margin, "
            f"\"better, within ±{margin:g}{unit}\" (or worse) when it excludes 0 and lies inside it (two one-sided tests, TOST, "
            "each at half the interval's error rate)")


def _cells_section(view: ReportView) -> list[Block]:
    cells = view.results.cells
    key = "; ".join(f"{c.label} = `{c.id}`" for c in cells if c.label != c.id)
    clipped = any(c.stats[m.metric].clipped for c in cells for m in view.shown)
    return [Heading(f"Per cell (mean [{CONFIDENCE:.0%} CI] over seeds)"),
            Para("Student-t interval over seeds (`scipy.special.stdtrit`); with few seeds it is wide."
                 + (f" {CLIPPED} the interval reaches past the metric's range and is clipped to it." if clipped else "")
                 + (f" Cells: {key}." if key else "")),
            Table(["cell", "seeds", *(m.heading for m in view.shown)], view.cell_rows)]


def _comparison_section(view: ReportView) -> list[Block]:
    results = view.results
    pairs = max((c.pairs for c in results.primary), default=0)
    caveat = (f"With {pairs} seed pairs the interval is the mean difference ± {t_multiplier(pairs):.2f} standard errors: "
              "wide, and the test has little power" if pairs >= 2 else "With one seed pair there is no interval and no test")
    if results.policy:
        caveat = "Under the seed policy the interval is the repeated CI of the look where the comparison stopped (see Seed policy)"
    unit = view.metric.diff_unit or "difference"
    return [Heading(f"Paired comparison with the baseline ({describe_baseline(results.plan.spec.baseline, prose=True)}) on "
                    f"{view.metric.label}"),
            Para("Differences are cell - baseline, paired by seed; `pairs` = seeds that finished in both cells; p from "
                 f"a two-sided paired t-test (the p of `scipy.stats.ttest_rel`). {caveat}; p-values are not corrected for the "
                 f"number of cells compared. Verdict (`sweep.stats.verdict`): better/worse when p < {ALPHA:.2g} and the "
                 f"interval excludes 0{_equivalence_note(view)}, else inconclusive."),
            Table(["comparison", "pairs", f"mean diff ({unit})", f"{CONFIDENCE:.0%} CI", "p", "verdict"], view.comparison_rows)]


def _search_section(view: ReportView, sweep_dir: Path) -> list[Block]:
    """What the search chose per cell, with the resolution of its scores (`sweep.selection`)."""
    spec = view.results.plan.spec.search
    folds, heading = spec.folds, view.search_metric.heading
    on = "held-out training classes" if spec.holdout is not None else "the test split"
    if folds:
        on = f"{folds} class-disjoint folds of the training classes, scored by the fold mean"
    head = ["cell", "finished", "kept params", f"search {heading}{' (fold mean)' if folds else ''} ± {Z} SE",
            "queries" + (" (one fold)" if folds else ""), "separated"] + ([f"{heading} per fold"] if folds else [])
    journal = sweep_dir / "optuna.journal"
    return [Heading(f"Search (per cell, on {on})"),
            *([Para(view.search_budget)] if view.search_budget else []),
            Para(f"Each sample's score has a scoring noise: a recall p over n held-out queries has a binomial "
                 f"standard error, sqrt(p' (1 - p') / (n + 4)) with p' = (p n + 2) / (n + 4) (Agresti-Coull; an upper "
                 "bound for MAP@R and R-precision; with folds, the fold spread when larger). The kept value is the best sample "
                 f"when no other sample is within {Z} standard errors of the difference; otherwise the search "
                 "**could not separate candidates**, and the tied sample nearest the base config's value is kept "
                 "(the rule: `sweep/selection.py`)."),
            Table(head, view.search_rows),
            *(Para(n) for n in view.results.search_notes),
            Para(f"Optuna studies: `{journal}`, one per cell, named by cell id; browse them with optuna-dashboard "
                 f"(install: `{DASHBOARD_INSTALL}`, then `.venv/bin/optuna-dashboard {journal}`) or "
                 "`optuna.load_study(study_name=CELL_ID, storage=sweep.search.study_storage(DIR))`.")]


def _trials_section(view: ReportView) -> list[Block]:
    results = view.results
    trials = results.trial_rows
    holdout = results.plan.spec.search and results.plan.spec.search.holdout is not None
    reused = sum(bool(r.get("reused_from")) for r in trials)
    note = (f" {reused} of {len(trials)} trials were reused from the trial store (trained by the sweep named in "
            "their status, not again here); the statistics treat them like any other trial." if reused else "")
    return [Heading("Trials"),
            Para(f"Search trials show their search score ({view.search_metric.label} on "
                 f"{'held-out training classes' if holdout else 'the test split'}), final trials their "
                 f"test-split score; each trial links its MLflow run." + note),
            Table(["trial", "phase", "status", f"search {view.search_metric.heading}" if results.plan.spec.search else "search",
                   f"test {view.metric.heading}", "epoch", "params", "MLflow", "error"], view.trial_rows)]

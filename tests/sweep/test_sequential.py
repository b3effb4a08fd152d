"""The seed policy's procedure (repeated confidence intervals with alpha spending): its error
rates under optional stopping, by simulation, and the pure "which trials next" decision."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sweep.plan import Cell
from sweep.records import FAILED, FINAL, FINISHED, TrialRecord
from sweep.sequential import (DECIDED, EQUIVALENT, MAX, NOTHING, OPEN, WIDTH, Design, PolicyView, Quantity, next_round,
                              quantities, sequential_test)
from sweep.spec import SeedPolicy
from sweep.stats import PairedComparison, verdict

SIMULATIONS = 4000  # per setting: the 95 % binomial band around 0.05 is +-0.007
MARGIN = 0.5  # in units of the per-seed difference's standard deviation (sigma = 1)


def simulate(design: Design, delta: float, rng: np.random.Generator, sigma: float = 1.0, failures: float = 0.0,
             tails: str = "normal") -> tuple[np.ndarray, list[str]]:
    """Thousands of paired comparisons of true difference `delta` under `design`; returns
    whether each reported interval covers `delta`, and each verdict in words."""
    shape = (SIMULATIONS, design.looks[-1])
    noise = rng.standard_normal(shape) if tails == "normal" else rng.standard_t(3, shape) / math.sqrt(3)
    x = delta + sigma * noise
    x[rng.random(shape) < failures] = np.nan  # failed trials drop out of the pairing
    r = sequential_test(design, x)
    assert r.closed.all()  # every comparison ends, at the latest at `max`
    covers = (r.low <= delta) & (delta <= r.high)
    words = [verdict(PairedComparison(list(range(n)), m, lo, hi, math.nan), "max", margin=design.margin)
             for n, m, lo, hi in zip(r.n, r.mean, r.low, r.high)]
    return covers, words


def rate(words: list[str], word: str) -> float:
    return sum(w.startswith(word) for w in words) / len(words)


@pytest.mark.parametrize("spending", ["pocock", "obrien_fleming", "bonferroni"])
@pytest.mark.parametrize("step", [1, 3])
def test_error_rates_hold_under_optional_stopping(spending: str, step: int) -> None:
    """`until: decided` with an equivalence margin: the comparison stops at the first look whose
    interval excludes 0 or lies within +-margin. Coverage of the reported 95 % interval >= 0.94;
    no true difference: "better" <= 0.05; true difference twice the margin: "equivalent" <= 0.05."""
    policy = SeedPolicy(start=3, max=12, step=step, until="decided", spending=spending)
    design = Design.from_policy(policy, "loss", margin_points=MARGIN)  # loss: raw units, no % scaling
    assert sum(design.alphas) == pytest.approx(0.05) and all(a > 0 for a in design.alphas)
    rng = np.random.default_rng(16)
    covers, words = simulate(design, 0.0, rng)
    assert covers.mean() >= 0.94 and rate(words, "better") <= 0.05 and rate(words, "worse") <= 0.05
    covers, words = simulate(design, 2 * MARGIN, rng)
    assert covers.mean() >= 0.94 and rate(words, "equivalent") <= 0.05
    # Not vacuous: a large true difference is found "better", mostly before the last look.
    covers, words = simulate(design, 2.0, rng)
    assert covers.mean() >= 0.94 and rate(words, "better") > 0.9


def test_equivalence_is_reached_and_stays_rare_at_twice_the_margin() -> None:
    """With a margin the noise can resolve (2 sigma), no difference ends "equivalent" most of the
    time, and a true difference of twice the margin still almost never does."""
    design = Design.from_policy(SeedPolicy(start=3, max=12, until="decided"), "loss", margin_points=2.0)
    rng = np.random.default_rng(7)
    covers, words = simulate(design, 0.0, rng)
    assert rate(words, "equivalent") > 0.8 and covers.mean() >= 0.94
    covers, words = simulate(design, 4.0, rng)
    assert rate(words, "equivalent") <= 0.05 and covers.mean() >= 0.94


@pytest.mark.parametrize("tails,failures", [("normal", 0.1), ("t3", 0.0)])
def test_coverage_with_a_width_rule_failures_and_heavy_tails(tails: str, failures: float) -> None:
    """`until: {ci_half_width}` stops on the interval's own width, which depends on the sample
    standard deviation; failed seeds (10 %) drop out; heavy-tailed differences (t with 3 df)."""
    design = Design.from_policy(SeedPolicy(start=3, max=12, until={"ci_half_width": 1.0}), "loss")
    for delta in (0.0, 1.0):
        covers, _ = simulate(design, delta, np.random.default_rng(3), failures=failures, tails=tails)
        assert covers.mean() >= 0.94


def test_naive_optional_stopping_fails_the_same_check() -> None:
    """The check can fail: a plain 95 % t-interval at every look ("add seeds until p < 0.05")
    calls noise "better" far more often than 5 % of the time."""
    policy = SeedPolicy(start=3, max=12, until="decided")
    design = Design.from_policy(policy, "loss")
    naive = Design(design.looks, tuple(0.05 for _ in design.looks), decided=True)
    rng = np.random.default_rng(5)
    covers, words = simulate(naive, 0.0, rng)
    assert rate(words, "better") + rate(words, "worse") > 0.15 and covers.mean() < 0.9
    covers, words = simulate(design, 0.0, rng)
    assert rate(words, "better") + rate(words, "worse") <= 0.05


def test_a_rule_stops_a_row_at_its_first_look_and_keeps_that_interval() -> None:
    design = Design.from_policy(SeedPolicy(start=2, max=4, until={"decided": True, "ci_half_width": 100.0}), "loss")
    values = np.array([
        [1.0, -1.0, 0.2, 9.9],  # undecided at 2 seeds, but within the width: stops at look 0
        [np.nan, 1.0, np.nan, np.nan],  # never 2 values: open until the last look
    ])
    r = sequential_test(design, values)
    assert r.look.tolist() == [0, 2] and r.reason.tolist() == [WIDTH, MAX] and r.n.tolist() == [2, 1]
    assert r.mean[0] == 0 and r.high[0] < 100 and math.isnan(r.low[1])
    partial = sequential_test(Design(design.looks, design.alphas, decided=True), values[:1], reached=np.array([1]))
    assert partial.reason.tolist() == [OPEN] and not partial.closed[0]


# --------------------------------------------------------------------------- which trials next


def record(cell: str, seed: int, value: float | None) -> TrialRecord:
    status = FAILED if value is None else FINISHED
    return TrialRecord(trial_id=f"{cell}{seed}", key=f"{cell}/seed={seed}", phase=FINAL, cell=cell, seed=seed,
                       status=status, metrics={} if value is None else {"recall_at_1": value})


CELLS = [Cell(None, {"model.embedding_dim": d}, {}) for d in (8, 16, 32)]
BASE, MID, BIG = (c.id for c in CELLS)


def view(until: object = "decided", margin: float | None = None) -> PolicyView:
    return PolicyView.of(SeedPolicy(start=2, max=4, until=until), CELLS, {"model.embedding_dim": 8}, "recall_at_1", margin)


def test_quantities_pair_each_cell_with_its_baseline() -> None:
    assert quantities(CELLS, {"model.embedding_dim": 8}) == [Quantity(MID, BASE), Quantity(BIG, BASE)]
    assert quantities(CELLS, None) == [Quantity(c.id) for c in CELLS]


def test_next_round_adds_seeds_only_where_a_comparison_is_open() -> None:
    v = view()
    assert v.next_round([]) == [(c, s) for c in (MID, BASE, BIG) for s in (0, 1)]  # the first look
    # MID differs from BASE by exactly 10 points on both seeds (zero spread): decided at look 1.
    # BIG's differences straddle 0: open, so BIG and BASE get seed 2, MID does not.
    first = [record(BASE, 0, 0.50), record(BASE, 1, 0.52), record(MID, 0, 0.60), record(MID, 1, 0.62),
             record(BIG, 0, 0.49), record(BIG, 1, 0.53)]
    assert v.next_round(first) == [(BASE, 2), (BIG, 2)]
    mid, big = v.assess(first)
    assert (mid.reason, mid.look, mid.closed) == (DECIDED, 0, True) and verdict(mid.comparison, "max") == "better"
    assert (big.reason, big.closed) == (OPEN, False)
    # A failed trial ends its seed: the look is complete without it, and the next one is due.
    second = first + [record(BASE, 2, 0.51), record(BIG, 2, None)]
    assert v.next_round(second) == [(BASE, 3), (BIG, 3)]
    third = second + [record(BASE, 3, 0.5), record(BIG, 3, 0.52)]
    assert v.next_round(third) == []  # the last look (4 seeds) closes every comparison
    mid, big = v.assess(third)
    assert mid.look == 0 and mid.comparison.seeds == [0, 1]  # MID keeps the interval it stopped at
    assert big.reason == MAX and big.comparison.seeds == [0, 1, 3] and big.seeds_run == 4


def test_equivalence_and_width_rules_close_comparisons() -> None:
    same = [record(c, s, 0.5 + 0.01 * s) for c in (BASE, MID, BIG) for s in (0, 1)]  # every difference 0
    v = view(margin=0.5)
    mid, big = v.assess(same)
    assert mid.reason == big.reason == EQUIVALENT and v.next_round(same) == []
    assert verdict(mid.comparison, "max", margin=v.design.margin, margin_text="0.5") == "equivalent within ±0.5"
    # Without a margin identical cells are never decided: seeds run to `max`.
    assert view().next_round(same) == [(c, 2) for c in (MID, BASE, BIG)]
    # A cell-mean width rule without a baseline: each cell on its own.
    own = PolicyView.of(SeedPolicy(start=2, max=4, until={"ci_half_width": 15.0}), CELLS, None, "recall_at_1", None)
    noisy = same[:4] + [record(BIG, 0, 0.2), record(BIG, 1, 0.9)]
    assert own.next_round(noisy) == [(BIG, 2)]
    # Under `until: decided` a cell in no comparison (arm c: the baseline maps only b -> a) has
    # nothing to decide: its first seeds, no more.
    arms = [Cell(a, {}, {}) for a in "abc"]
    decided = PolicyView.of(SeedPolicy(start=2, max=4, until="decided"), arms, {"arm": {"b": "a"}}, "recall_at_1", None)
    assert decided.quantities == [Quantity("arm=b", "arm=a"), Quantity("arm=c")]
    spread = [record(f"arm={a}", s, v) for a in "abc" for s, v in ((0, 0.1), (1, 0.9))]
    assert decided.next_round(spread) == [("arm=b", 2), ("arm=a", 2)] and decided.assess(spread)[-1].reason == NOTHING


# --------------------------------------------------------------------------- the YAML


def test_seed_policy_in_the_sweep_block() -> None:
    from sweep.spec import SweepError, parse_sweep

    grid = {"grid": {"model.embedding_dim": [8, 16]}, "baseline": {"model.embedding_dim": 8}}
    spec = parse_sweep({**grid, "seeds": {"start": 3, "max": 12, "until": "decided"}, "equivalence_margin": 0.5}, "x.yaml")
    assert spec.policy.seeds == list(range(12)) and spec.policy.looks == list(range(3, 13)) and spec.policy.until.decided
    assert spec.equivalence_margin == 0.5
    spec = parse_sweep({"seeds": {"start": 3, "max": 12, "step": 4, "until": {"ci_half_width": 1.0}}}, "x.yaml")
    assert spec.policy.looks == [3, 7, 11, 12] and spec.policy.until.ci_half_width == 1.0
    assert parse_sweep({"seeds": [0, 1]}, "x.yaml").policy is None  # the plain list keeps working
    for block, message in [
        ({"seeds": {"start": 3, "max": 12, "until": "decided"}}, "sweep.seeds.until: decided needs a baseline"),
        ({"seeds": {"start": 3, "max": 2, "until": "decided"}, **grid}, "sweep.seeds: max (2) is below start (3)"),
        ({"seeds": {"start": 1, "max": 2, "until": "decided"}, **grid}, "sweep.seeds.start:"),
        ({"seeds": {"start": 3, "max": 5, "until": "soon"}, **grid}, "sweep.seeds.until: 'soon': write `decided`"),
        ({"seeds": {"start": 3, "max": 5, "until": {}}, **grid}, "sweep.seeds.until: set `decided` or `ci_half_width`"),
        ({"seeds": {"start": 3, "max": 5, "until": "decided", "spending": "x"}, **grid}, "sweep.seeds.spending:"),
        ({"equivalence_margin": 0}, "sweep.equivalence_margin:"),
    ]:
        with pytest.raises(SweepError) as e:
            parse_sweep(block, "x.yaml")
        assert str(e.value).startswith(f"x.yaml: {message}"), str(e.value)


# --------------------------------------------------------------------------- the report


def test_report_of_a_policy_sweep_names_rule_procedure_and_verdicts(tmp_path) -> None:
    """A seed-policy sweep's report (from records): the rule and procedure, where each comparison
    stopped, its repeated CI in the headline, and "equivalent within ±1 points" for a copy of the
    baseline."""
    import csv

    from scipy import stats

    from sweep.plan import load_plan
    from sweep.report import headlines, write_report
    from sweep_testlib import sweep_from_records, write_yaml

    sweep = {"arms": {"base": {}, "same": {}, "gap": {"optimizer.lr": 1e-7}}, "baseline": {"arm": "base"},
             "seeds": {"start": 2, "max": 3, "until": "decided"}, "equivalence_margin": 1.0}
    plan = load_plan(write_yaml(tmp_path / "p.yaml", sweep))
    base = {0: 0.80, 1: 0.82, 2: 0.81}
    gap = {0: 0.50, 1: 0.70, 2: 0.62}  # far below, but too noisy to decide at 2 seeds: round 2 ran
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, {"arm=base": base, "arm=same": {0: 0.80, 1: 0.82},
                                                               "arm=gap": gap})
    write_report(sweep_dir)
    md = (sweep_dir / "report.md").read_text()
    assert "## Seed policy" in md and "looks at 2, 3 seeds per cell" in md and "equivalent within ±1 points); at most 3" in md
    assert "repeated confidence intervals (Jennison & Turnbull 1989" in md
    assert "| same vs base | 2 | 1 of 2 | equivalent |" in md and "| gap vs base | 3 | 2 of 2 |" in md
    design = Design.from_policy(plan.spec.policy, "recall_at_1", 1.0)
    diffs = 100 * (np.array([gap[s] for s in (0, 1, 2)]) - np.array([base[s] for s in (0, 1, 2)]))
    low, high = stats.t.interval(1 - design.alphas[1], 2, loc=diffs.mean(), scale=stats.sem(diffs))
    lines = headlines(sweep_dir)
    assert f"gap vs base: R@1 {diffs.mean():+.1f} points (95% repeated CI {low:+.1f} to {high:+.1f}, " in lines[1]
    assert lines[1].endswith(", 3 seed pairs): " + lines[1].rsplit("): ", 1)[1])
    assert lines[0].startswith("same vs base: R@1 +0.0 points (95% repeated CI +0.0 to +0.0, ")
    assert lines[0].endswith("2 seed pairs): equivalent within ±1 points.")
    rows = list(csv.DictReader((sweep_dir / "comparisons.csv").open()))
    assert {r["procedure"] for r in rows} == {"repeated CI"} and {r["margin"] for r in rows} == {"0.01"}


# --------------------------------------------------------------------------- the MLflow parent after a resume


def test_the_parent_run_after_a_switch_to_a_policy_holds_only_what_the_report_shows(tmp_path, tracking_uri: str) -> None:
    """A 5-seed sweep logs `...vs_base.p` on its parent; resumed as a seed policy, its report has
    a repeated CI and no p: the parent then holds exactly the report's metrics (MLflow cannot
    delete one, so `publish` replaced the run), its trial runs, artifacts and params moved along."""
    from sweep.parent_run import parent_metrics, publish
    from sweep.results import SweepResults
    from sweep.runner import plan_labels
    from sweep.store import SweepLog, load_records
    from sweep.tracking import Tracker, TrialRuns, sync_runs
    from sweep.plan import load_plan
    from sweep_testlib import sweep_from_records, write_yaml

    fixed = {"arms": {"base": {}, "gap": {"optimizer.lr": 1e-7}}, "baseline": {"arm": "base"}, "seeds": [0, 1, 2, 3, 4]}
    plan = load_plan(write_yaml(tmp_path / "fixed.yaml", fixed))
    values = {"arm=base": {s: 0.80 + 0.01 * s for s in range(5)}, "arm=gap": {s: 0.70 + 0.013 * s * (-1) ** s for s in range(5)}}
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, values)
    tracker = Tracker(tracking_uri, "policy_switch")
    runs = TrialRuns(SweepLog.open(sweep_dir), tracker, plan.name, plan_labels(plan), "search_")
    runs.open_parent(plan, sweep_dir)
    sync_runs(runs)
    first = publish(runs, SweepResults.build(plan, load_records(sweep_dir)))
    tracker.log_files(first, [sweep_dir / "plan.txt"])
    assert "recall_at_1.gap_vs_base.p" in tracker.client.get_run(first).data.metrics

    switched = load_plan(write_yaml(tmp_path / "policy.yaml", {**fixed, "seeds": {"start": 2, "max": 5, "until": "decided"}}))
    results = SweepResults.build(switched, load_records(sweep_dir))
    assert results.primary[0].repeated and math.isnan(results.primary[0].test.p_value)
    parent = publish(runs, results)
    run = tracker.client.get_run(parent)
    shown = {k for k, v in parent_metrics(results).items() if math.isfinite(v)}
    assert set(run.data.metrics) == shown and not any(k.endswith(".p") for k in run.data.metrics)
    assert run.data.tags["mlflow.note.content"].startswith("- gap vs base: R@1 ")
    assert "repeated CI" in run.data.tags["mlflow.note.content"] and "p = " not in run.data.tags["mlflow.note.content"]
    # The replacement is the sweep's parent now: found by its id, holding the trials, params and files.
    assert parent != first and tracker.client.get_run(first).info.lifecycle_stage == "deleted"
    assert tracker.find_parent(runs.log.sweep_id) == parent == SweepLog.open(sweep_dir).meta.mlflow_parent_run_id
    assert run.data.tags["sweep.replaces"] == first and run.data.params == tracker.client.get_run(first).data.params
    assert sum(len(v) for v in tracker.children(parent).values()) == 10 and not tracker.children(first)
    assert {a.path for a in tracker.client.list_artifacts(parent)} >= {"plan.txt"}
    # A report that drops nothing keeps the run.
    assert publish(runs, results) == parent


# --------------------------------------------------------------------------- a policy you can watch


def test_each_look_prints_open_comparisons_and_the_end_says_undecided_with_a_forecast() -> None:
    from sweep.console import policy_end_lines, policy_look_lines
    from sweep.sequential import MARGIN as GOAL_MARGIN, seeds_needed

    v = view(margin=0.5)
    labels = {BASE: "d8", MID: "d16", BIG: "d32"}
    seen: dict = {}
    first = [record(BASE, 0, 0.50), record(BASE, 1, 0.52), record(MID, 0, 0.60), record(MID, 1, 0.62),
             record(BIG, 0, 0.49), record(BIG, 1, 0.53)]
    assert policy_look_lines(v, v.assess([]), labels, "max", seen) == []  # no look complete yet
    mid, big = policy_look_lines(v, v.assess(first), labels, "max", seen)
    assert mid == ("   look 1/3 (2 seeds) d16 vs d8: R@1 +10.0 points (95% repeated CI +10.0 to +10.0, 2 seed pairs): "
                   "better, no more seeds")
    big_ci = v.assess(first)[1].comparison
    half = 100 * (big_ci.high - big_ci.low) / 2
    assert big == (f"   look 1/3 (2 seeds) d32 vs d8: R@1 +0.0 points (95% repeated CI {-half:+.1f} to {half:+.1f}, "
                   f"2 seed pairs): open, ±{half:.1f} points now, needs ±0.50 points to lie within ±0.50 points; "
                   "next look at 3 seeds")
    assert policy_look_lines(v, v.assess(first), labels, "max", seen) == []  # nothing new: nothing printed
    done = first + [record(BASE, 2, 0.51), record(BIG, 2, None), record(BASE, 3, 0.5), record(BIG, 3, 0.52)]
    (last,) = policy_look_lines(v, v.assess(done), labels, "max", seen)
    assert last.startswith("   look 3/3 (4 seeds) d32 vs d8: R@1 +0.7 points (95% repeated CI ") and ": at the maximum, ±" in last
    head, forecast_line = policy_end_lines(v, v.assess(done), labels)
    assert head.startswith("-- d32 vs d8: undecided at the maximum of 4 seeds: R@1 +0.7 points (95% repeated CI ")
    diffs = [0.49 - 0.50, 0.53 - 0.52, 0.52 - 0.5]  # seed 2 of d32 failed
    expected = seeds_needed(v.policy, float(np.std(diffs, ddof=1)), GOAL_MARGIN, 0.005)
    assert forecast_line.startswith(f"   seed forecast: with the spread of 3 paired differences (sd {100 * np.std(diffs, ddof=1):.1f} "
                                    f"points), equivalence within ±0.50 points (the margin) would take about {expected} seeds per cell")
    assert expected > 4

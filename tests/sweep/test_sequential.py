"""The seed policy's procedure (repeated confidence intervals with alpha spending): its error
rates under optional stopping, by simulation, and the pure "which trials next" decision."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from sweep.plan import Cell
from sweep.records import FAILED, FINAL, FINISHED, TrialRecord
from sweep.sequential import (DECIDED, EQUIVALENT, MAX, NOTHING, OPEN, WIDTH, Design, PolicyView, Quantity, quantities,
                              sequential_test)
from sweep.spec import SeedPolicy
from sweep.stats import OUTLIER_ALPHA, PairedComparison, outlier_test, verdict

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


DESIGNS = [(spending, step) for spending in ("pocock", "obrien_fleming", "bonferroni") for step in (1, 3)]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "conclusions.md"


def per_seed(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Paired differences of mean 0 and (about) unit spread, per seed, in the documented settings."""
    if kind == "t3":  # heavy symmetric tails, variance 1
        return rng.standard_t(3, shape) / math.sqrt(3)
    if kind == "outlier":  # 1 seed in 10 off by 6 sigma either way
        return rng.standard_normal(shape) + 6.0 * (rng.random(shape) < 0.1) * rng.choice([-1.0, 1.0], shape)
    if kind == "collapse":  # 1 seed in 10 collapses 6 sigma below the rest; mean 0: left-skewed
        return rng.standard_normal(shape) - 6.0 * (rng.random(shape) < 0.1) + 0.6
    if kind == "skewed":  # a continuous left skew (skewness -2): 1 - Exp(1)
        return 1.0 - rng.exponential(1.0, shape)
    return rng.standard_normal(shape)


# Each documented row: per-seed differences, true difference, and whether the naive procedure
# (a plain 95 % interval at every look) is used instead of the repeated CI.
SETTINGS = {
    "normal, no difference": ("normal", 0.0, False),
    "normal, twice the margin": ("normal", 2 * MARGIN, False),
    "normal, 2 sigma": ("normal", 2.0, False),
    "t (3 df), no difference": ("t3", 0.0, False),
    "outlier seeds, no difference": ("outlier", 0.0, False),
    "one collapsed seed, no difference": ("collapse", 0.0, False),
    "left-skewed, no difference": ("skewed", 0.0, False),
    "normal, no difference, naive": ("normal", 0.0, True),
}
COLUMNS = ["coverage", "better", "worse", "equivalent", "flagged"]


def documented(table: str) -> dict[str, dict[str, tuple[float, float]]]:
    """The table after `<!-- <table> -->` in the docs: its rows' first cell -> column -> (low, high)
    as printed (`0.959-0.976`, or one number for both)."""
    after = DOCS.read_text().split(f"<!-- {table} -->", 1)[1].lstrip("\n").splitlines()
    lines = list(itertools.takewhile(lambda line: line.startswith("|"), after))
    header = [h.strip().strip('"') for h in lines[0].strip("|").split("|")]
    out = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = {h: tuple(float(v) for v in (c.split("-") * 2)[:2]) for h, c in zip(header[1:], cells[1:])}
    return out


def error_rates(kind: str, delta: float, naive: bool, spending: str, step: int) -> dict[str, float]:
    """One row of the table for one design: 4000 comparisons, `{start: 3, max: 12, until: decided}`,
    margin 0.5 sigma."""
    design = Design.from_policy(SeedPolicy(start=3, max=12, step=step, until="decided", spending=spending), "loss",
                                margin_points=MARGIN)
    assert sum(design.alphas) == pytest.approx(0.05) and all(a > 0 for a in design.alphas)
    if naive:  # "add seeds until p < 0.05", no margin
        design = Design(design.looks, tuple(0.05 for _ in design.looks), decided=True)
    x = delta + per_seed(kind, (SIMULATIONS, design.looks[-1]), np.random.default_rng(16))
    r = sequential_test(design, x)
    assert r.closed.all()  # every comparison ends, at the latest at `max`
    seen = np.where(np.arange(x.shape[1]) < np.array(design.looks)[r.look][:, None], x, np.nan)
    equivalent = (r.low > -MARGIN) & (r.high < MARGIN) & (design.margin is not None)
    return {"coverage": float(((r.low <= delta) & (delta <= r.high)).mean()),
            "better": float(((r.low > 0) & ~equivalent).mean()), "worse": float(((r.high < 0) & ~equivalent).mean()),
            "equivalent": float(equivalent.mean()), "flagged": float((outlier_test(seen)[0] < OUTLIER_ALPHA).mean())}


def test_the_documented_error_rates_reproduce() -> None:
    """docs/conclusions.md's table of error rates under optional stopping, row by row: each
    figure (the range over the six designs: three spending functions, step 1 and 3) reproduces
    within 0.01 (3 binomial standard errors at 4000 comparisons). The repeated CI holds (coverage
    >= 0.95) for normal, heavy-tailed and outlier seeds; it does not for left-skewed seeds -- the
    documented assumption -- and the naive procedure fails the same check, so the check can fail."""
    rows = documented("error rates")
    assert set(rows) == set(SETTINGS)
    for name, (kind, delta, naive) in SETTINGS.items():
        rates = [error_rates(kind, delta, naive, spending, step) for spending, step in DESIGNS]
        for column, (low, high) in rows[name].items():
            got = (min(r[column] for r in rates), max(r[column] for r in rates))
            assert got == pytest.approx((low, high), abs=0.01), (name, column, got)
    assert min(rows[name]["coverage"][0] for name in list(SETTINGS)[:5]) >= 0.95
    assert max(rows[name]["coverage"][1] for name in list(SETTINGS)[5:]) < 0.94
    assert rows["normal, 2 sigma"]["better"][0] > 0.99 and rows["normal, twice the margin"]["equivalent"][1] <= 0.01


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
    from sweep.labels import plan_labels
    from sweep.store import SweepLog, load_records
    from sweep.tracker import Tracker
    from sweep.trial_runs import TrialRuns, parent_fields, sync_runs
    from sweep.plan import load_plan
    from sweep_testlib import sweep_from_records, write_yaml

    fixed = {"arms": {"base": {}, "gap": {"optimizer.lr": 1e-7}}, "baseline": {"arm": "base"}, "seeds": [0, 1, 2, 3, 4]}
    plan = load_plan(write_yaml(tmp_path / "fixed.yaml", fixed))
    values = {"arm=base": {s: 0.80 + 0.01 * s for s in range(5)}, "arm=gap": {s: 0.70 + 0.013 * s * (-1) ** s for s in range(5)}}
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, values)
    tracker = Tracker(tracking_uri, "policy_switch")
    runs = TrialRuns(SweepLog.open(sweep_dir), tracker, plan.name, plan_labels(plan), "search_")
    runs.open_parent(parent_fields(plan, sweep_dir, runs.log))
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


def test_a_look_is_one_assessment_and_the_round_it_leaves() -> None:
    v = view()
    first = [record(BASE, 0, 0.50), record(BASE, 1, 0.52), record(MID, 0, 0.60), record(MID, 1, 0.62),
             record(BIG, 0, 0.49), record(BIG, 1, 0.53)]
    done = first + [record(BASE, 2, 0.51), record(BIG, 2, None), record(BASE, 3, 0.5), record(BIG, 3, 0.52)]
    for records in ([], first, done):
        look = v.look(iter(records))  # read once, as the driver's records are
        assert repr(look.assessments) == repr(v.assess(records)) and look.todo == v.next_round(records)  # repr: NaN != NaN
        assert look.forecasts == v.forecasts(v.assess(records))
    assert v.look(first).todo == [(BASE, 2), (BIG, 2)] and v.look(done).todo == []
    # Only a quantity that stopped at the maximum has a forecast: d32 vs d8, undecided at 4 seeds.
    assert not v.look(first).forecasts and [q.cell for q in v.look(done).forecasts] == [BIG]


def test_a_round_prints_its_looks_and_only_the_last_one_the_end() -> None:
    from sweep.policy_lines import policy_end_lines, policy_look_lines, round_lines

    v = view(margin=0.5)
    labels = {BASE: "d8", MID: "d16", BIG: "d32"}
    first = [record(BASE, 0, 0.50), record(BASE, 1, 0.52), record(MID, 0, 0.60), record(MID, 1, 0.62),
             record(BIG, 0, 0.49), record(BIG, 1, 0.53)]
    done = first + [record(BASE, 2, 0.51), record(BIG, 2, None), record(BASE, 3, 0.5), record(BIG, 3, 0.52)]
    assert round_lines(v, v.look(first), labels, "max", {}, done=False) == policy_look_lines(v, v.assess(first), labels, "max", {})
    end = policy_end_lines(v, v.look(done), labels)
    assert len(end) == 2 and round_lines(v, v.look(done), labels, "max", {}, done=True)[-2:] == end


def test_each_look_prints_open_comparisons_and_the_end_says_undecided_with_a_forecast() -> None:
    from sweep.policy_lines import policy_end_lines, policy_look_lines
    from sweep.seed_forecast import MARGIN as GOAL_MARGIN, seeds_needed

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
    head, forecast_line = policy_end_lines(v, v.look(done), labels)
    assert head.startswith("-- d32 vs d8: undecided at the maximum of 4 seeds: R@1 +0.7 points (95% repeated CI ")
    diffs = [0.49 - 0.50, 0.53 - 0.52, 0.52 - 0.5]  # seed 2 of d32 failed
    expected = seeds_needed(v.policy, float(np.std(diffs, ddof=1)), GOAL_MARGIN, 0.005)
    assert forecast_line.startswith(f"   seed forecast: with the spread of 3 paired differences (sd {100 * np.std(diffs, ddof=1):.1f} "
                                    f"points), equivalence within ±0.50 points (the margin) would take about {expected} seeds per cell")
    assert expected > 4


# --------------------------------------------------------------------------- how many seeds


def test_last_look_alpha_is_the_designs() -> None:
    from sweep.seed_forecast import last_look_alpha

    for spending, step in DESIGNS:
        for start in (2, 3, 5):
            policy = SeedPolicy(start=start, max=start, step=step, until="decided", spending=spending)
            maxes = np.arange(start, 40)
            expected = [Design.from_policy(SeedPolicy(start=start, max=int(m), step=step, until="decided", spending=spending),
                                           "loss").alphas[-1] for m in maxes]
            assert last_look_alpha(policy, maxes) == pytest.approx(expected, rel=1e-9)


FORECASTS = {"pocock, equivalence": ("pocock", "margin", 0.0), "obrien_fleming, difference": ("obrien_fleming", "difference", MARGIN)}


def forecast_rates(spending: str, goal: str, delta: float) -> dict[str, float]:
    """The forecast for sigma 1 and a target of 0.5 sigma (the margin, or a true difference of
    0.5 sigma), and what the policy then does: `{start: 3, step: 3}` with `max` = the forecast
    decides (equivalent, or better) in what share of 2000 simulated comparisons; with 0.7 x the
    forecast; and from the spread of a 12-seed pilot instead of the true one."""
    from sweep.seed_forecast import seeds_needed

    def decided(max_: int, rows: int, rng: np.random.Generator) -> np.ndarray:
        policy = SeedPolicy(start=3, max=max_, step=3, until="decided", spending=spending)
        design = Design.from_policy(policy, "loss", margin_points=MARGIN if goal == "margin" else None)
        r = sequential_test(design, delta + rng.standard_normal((rows, max_)))
        return (r.reason == EQUIVALENT) if goal == "margin" else (r.reason == DECIDED) & (r.mean > 0)

    policy = SeedPolicy(start=3, max=12, step=3, until="decided", spending=spending)
    rng = np.random.default_rng(2)
    m = seeds_needed(policy, 1.0, goal, 0.5)
    pilots = np.array([seeds_needed(policy, float(s), goal, 0.5)
                       for s in rng.standard_normal((300, 12)).std(axis=1, ddof=1)])
    by_pilot = np.concatenate([decided(int(p), int((pilots == p).sum()), rng) for p in np.unique(pilots)])
    return {"forecast": m, "decided by then": decided(m, 2000, rng).mean(), "by 0.7 x forecast": decided(round(0.7 * m), 2000, rng).mean(),
            "pilot forecast / forecast": float(np.median(pilots)) / m, "decided by the pilot's forecast": by_pilot.mean()}


def test_the_seed_forecast_is_what_the_policy_then_needs() -> None:
    """docs/conclusions.md's seed-forecast table reproduces: a policy whose `max` is the forecast
    (from the true spread) decides in about its planned 80 % of comparisons (a little more: its
    earlier looks add to the last one), and clearly less with 30 % fewer seeds -- the forecast is
    neither padded nor short; from a 12-seed pilot's spread the forecast is about as large and
    the decision rate lower (the spread of 12 seeds is uncertain)."""
    rows = documented("seed forecast")
    assert set(rows) == set(FORECASTS)
    for name, setting in FORECASTS.items():
        got = forecast_rates(*setting)
        for column, (low, high) in rows[name].items():
            assert got[column] == pytest.approx(low, abs=0.5 if column == "forecast" else 0.03), (name, column, got[column])
        assert got["decided by then"] >= 0.8 > got["by 0.7 x forecast"]


def test_the_dry_run_forecasts_seeds_from_stored_pilot_seeds_of_the_same_cells(tmp_path) -> None:
    """A 3-seed pilot of two arms is in the trial store; `--dry-run` of the same cells under a
    seed policy prints each comparison's forecast from the pilot's paired differences."""
    import os
    import subprocess
    import sys

    from sweep.pending import identity
    from sweep.plan import load_plan
    from sweep.records import TrialRecord
    from sweep.sweep_folder import create_sweep_dir
    from sweep.seed_forecast import MARGIN as GOAL_MARGIN, seeds_needed
    from sweep_testlib import REPO_ROOT, write_yaml

    arms = {"arms": {"base": {}, "wide": {"model.embedding_dim": 32}}, "baseline": {"arm": "base"}}
    pilot = load_plan(write_yaml(tmp_path / "pilot.yaml", {**arms, "seeds": [0, 1, 2]}))
    log = create_sweep_dir(pilot, tmp_path / "root" / "pilot")
    scores = {("arm=base", 0): 0.80, ("arm=base", 1): 0.82, ("arm=base", 2): 0.79,
              ("arm=wide", 0): 0.81, ("arm=wide", 1): 0.85, ("arm=wide", 2): 0.79}
    for spec in pilot.final_trials():
        log.add(TrialRecord(trial_id=spec.key, key=spec.key, phase=FINAL, cell=spec.cell, seed=spec.seed, status=FINISHED,
                            metrics={"recall_at_1": scores[(spec.cell, spec.seed)]},
                            content_key=identity(pilot, spec).content_key))
    policy = {**arms, "seeds": {"start": 3, "max": 12, "until": "decided"}, "equivalence_margin": 1.0}
    path = write_yaml(tmp_path / "policy.yaml", policy)
    proc = subprocess.run([sys.executable, "sweep/run.py", str(path), "--dry-run", "--out", str(tmp_path / "root" / "new")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert proc.returncode == 0, proc.stderr
    diffs = [100 * (scores[("arm=wide", s)] - scores[("arm=base", s)]) for s in range(3)]  # in points
    sd = float(np.std(diffs, ddof=1))
    expected = seeds_needed(load_plan(path).spec.policy, sd / 100, GOAL_MARGIN, 0.01)
    assert f"  seed forecast from the seeds of these cells already in {tmp_path / 'root' / '.store' / 'trials.sqlite'}:" in proc.stdout
    assert (f"  wide vs base (max 12): seed forecast: with the spread of 3 paired differences (sd {sd:.1f} points), "
            f"equivalence within ±1.0 points (the margin) would take about {expected} seeds per cell") in proc.stdout
    assert expected > 12 and not (tmp_path / "root" / "new").exists()


def test_raising_max_after_an_undecided_end_inflates_false_decisions() -> None:
    """The documented reason a design change on `--resume` is refused: comparisons undecided at
    `max: 12` continued to 24 seeds (the looks past 12 of a `max: 24` design) call a zero
    difference better or worse more often than the 12-seed design did, up to above alpha."""
    text = DOCS.read_text()
    before, after = [], []
    for spending, step in DESIGNS:
        x = np.random.default_rng(16).standard_normal((20000, 24))
        short, long = (Design.from_policy(SeedPolicy(start=3, max=m, step=step, until="decided", spending=spending), "loss")
                       for m in (12, 24))
        decided = sequential_test(short, x[:, :12]).reason == DECIDED
        later = [k for k, n in enumerate(long.looks) if n > 12]
        more = Design(tuple(long.looks[k] for k in later), tuple(long.alphas[k] for k in later), decided=True)
        before.append(decided.mean())
        after.append((decided.sum() + (sequential_test(more, x[~decided]).reason == DECIDED).sum()) / len(x))
    assert all(a > b for a, b in zip(after, before)) and max(after) > 0.05
    shown = f"from {min(before):.3f}-{max(before):.3f} to {min(after):.3f}-{max(after):.3f}"
    assert shown in text, shown


def test_a_width_rule_ends_wider_than_planned_with_its_own_forecast() -> None:
    """`until: {ci_half_width}` without a baseline: a cell still wider than planned at `max` says
    so (not "undecided": it has nothing to decide) and gets the width forecast of its own values."""
    from sweep.policy_lines import policy_end_lines
    from sweep.seed_forecast import HALF_WIDTH, seeds_needed

    own = PolicyView.of(SeedPolicy(start=2, max=4, until={"ci_half_width": 5.0}), CELLS, None, "recall_at_1", None)
    scores = {BASE: [0.5, 0.5, 0.5, 0.5], MID: [0.6, 0.6, 0.6, 0.6], BIG: [0.2, 0.9, 0.4, 0.7]}
    records = [record(c, s, v) for c, vs in scores.items() for s, v in enumerate(vs)]
    head, line = policy_end_lines(own, own.look(records), {BASE: "d8", MID: "d16", BIG: "d32"})
    assert head.startswith("-- d32: wider than ±5.0 points at the maximum of 4 seeds: R@1 55.0 (95% repeated CI ")
    assert head.endswith(", 4 seeds)")
    expected = seeds_needed(own.policy, float(np.std(scores[BIG], ddof=1)), HALF_WIDTH, 0.05)
    assert line == (f"   seed forecast: with the spread of 4 values (sd {100 * np.std(scores[BIG], ddof=1):.1f} points), "
                    f"an interval within ±5.0 points would take about {expected} seeds per cell as `max` (about even odds; a new "
                    "sweep -- raising `max` on --resume inflates false decisions; docs/conclusions.md)")


def test_a_seed_far_from_the_others_gets_a_note_beside_the_verdict(tmp_path) -> None:
    """One collapsed seed among five: the headline (console, report, MLflow) carries the one-line
    note naming it; the same comparison without the collapse has none."""
    from sweep.plan import load_plan
    from sweep.report import headlines, write_report
    from sweep_testlib import sweep_from_records, write_yaml

    sweep = {"arms": {"base": {}, "new": {"optimizer.lr": 1e-7}}, "baseline": {"arm": "base"}, "seeds": [0, 1, 2, 3, 4]}
    plan = load_plan(write_yaml(tmp_path / "p.yaml", sweep))
    base = {0: 0.800, 1: 0.810, 2: 0.805, 3: 0.795, 4: 0.802}
    new = {0: 0.812, 1: 0.818, 2: 0.815, 3: 0.809, 4: 0.50}  # seed 4 collapsed
    collapsed = sweep_from_records(tmp_path / "collapsed", plan, {"arm=base": base, "arm=new": new})
    write_report(collapsed)
    (line,) = headlines(collapsed)
    diffs = np.array([[new[s] - base[s] for s in range(5)]])
    p = float(outlier_test(diffs)[0][0])
    assert p < OUTLIER_ALPHA and line.endswith(
        f": inconclusive. Note: seed 4 (-30.2 points) lies far from the other seeds (outlier test p = {p:.2g}); "
        "the interval assumes roughly normal differences.")
    assert line in (collapsed / "report.md").read_text()
    steady = sweep_from_records(tmp_path / "steady", plan, {"arm=base": base, "arm=new": {**new, 4: 0.81}})
    write_report(steady)
    assert "Note:" not in headlines(steady)[0]


def test_a_difference_clear_of_zero_inside_the_margin_stops_as_decided_not_equivalent() -> None:
    """The report's "stopped because" said "equivalent" where the verdict reads "better, within
    ±m": the policy's reason now says what the verdict says (issue 25: one word everywhere)."""
    v = view(margin=50.0)  # wide: every difference below lies well inside it
    better = [record(BASE, s, 0.50 + 0.01 * s) for s in (0, 1)] + [record(MID, s, 0.52 + 0.01 * s + 0.001 * (s % 2))
                                                                     for s in (0, 1)]
    mid = next(a for a in v.assess(better) if a.quantity.cell == MID)
    c = mid.comparison
    assert c.low > 0 and mid.reason == DECIDED
    assert verdict(c, "max", margin=v.design.margin, margin_text="50").startswith("better, within")

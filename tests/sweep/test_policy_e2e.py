"""Seed policies on real sweeps (digits, Ray Tune, MLflow): rounds stop when the rule is met, only
open comparisons get seeds, and identical arms end "equivalent within the margin"."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from sweep.plan import load_plan
from sweep.records import FINISHED, KILLED
from sweep.store import load_records
from sweep.report import headlines
from sweep.policy_lines import policy_look_lines
from sweep.labels import fmt_duration
from sweep.run import closing_block
from sweep.phases import SweepInterrupted
from sweep.labels import plan_labels
from sweep.runner import run_sweep
from sweep.sequential import Design, PolicyView
from sweep.table import build_table
from sweep.table_render import to_latex, to_markdown
from sweep_testlib import REPO_ROOT, sweep_from_records, write_yaml

pytestmark = pytest.mark.slow

TINY = ["train.epochs=2", "train.eval_every=2", "train.iterations_per_epoch=5", "model.conv_width=16",
        "model.conv_blocks=2", "eval.clustering=false"]


def first_look_meeting_the_rule(design: Design, diffs: list[float], width: float | None, decided: bool,
                                margin: float | None) -> int:
    """The rule, recomputed from the trial records with scipy's t-interval at each look's level."""
    for k, (n, alpha) in enumerate(zip(design.looks, design.alphas)):
        x = [d for d in diffs[:n] if math.isfinite(d)]
        if len(x) < 2:
            continue
        mean, sem = sum(x) / len(x), stats.sem(x)
        half = 0.0 if sem == 0 else stats.t.ppf(1 - alpha / 2, len(x) - 1) * sem
        low, high = mean - half, mean + half
        if width is not None and half <= width:
            return k
        if decided and (low > 0 or high < 0 or (margin is not None and -margin < low and high < margin)):
            return k
    return len(design.looks) - 1


def seeds_by_cell(sweep_dir: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for t in load_records(sweep_dir).final():
        assert t.status == FINISHED, t.error
        out.setdefault(t.cell, {})[t.seed] = t.value("recall_at_1")
    return out


def rounds_run(sweep_dir: Path) -> int:
    """One Tune experiment per round: final, final-2, ..."""
    return len([p for p in sweep_dir.iterdir() if p.is_dir() and (p.name == "final" or p.name.startswith("final-"))])


def test_quickstart_with_a_seed_policy_stops_when_its_rule_is_met(ray_local: None, tracking_uri: str, tmp_path: Path) -> None:
    width = 15.0  # points of R@1
    policy = f"sweep.seeds={{start: 2, max: 3, until: {{ci_half_width: {width}}}}}"
    plan = load_plan(REPO_ROOT / "experiments/quickstart.yaml",
                     [*TINY, "sweep.search=null", policy, "sweep.name=quickstart_policy", f"sweep.mlflow.tracking_uri={tracking_uri}"])
    outcome = run_sweep(plan, tmp_path / "sweep")
    assert outcome.status == FINISHED
    seeds = seeds_by_cell(outcome.sweep_dir)
    base, ee = seeds["expansion.n_inner_pts=0"], seeds["expansion.n_inner_pts=2"]
    design = Design.from_policy(plan.spec.policy, "recall_at_1")
    diffs = [100 * (ee[s] - base[s]) if s in ee and s in base else math.nan for s in plan.seeds]
    stop = first_look_meeting_the_rule(design, diffs, width, False, None)
    # The rule decides how many seeds ran: no fewer (it was not met before), no more (it was met).
    assert sorted(base) == sorted(ee) == plan.seeds[: design.looks[stop]]
    assert rounds_run(outcome.sweep_dir) == stop + 1
    report = (outcome.sweep_dir / "report.md").read_text()
    assert f"until each interval is within ±{width:g} points" in report
    assert "repeated confidence intervals (Jennison & Turnbull 1989" in report and "Pocock-type spending" in report
    assert f"| MS+EE n=2 vs MS | {design.looks[stop]} | {stop + 1} of 2 |" in report  # labels name the method

    # The paper's table over this real sweep and a variant at embedding dimension 32 (from records).
    variant = load_plan(REPO_ROOT / "experiments/quickstart.yaml",
                        [*TINY, "sweep.search=null", "sweep.seeds=[0, 1]", "sweep.name=quickstart_dim32",
                         "model.embedding_dim=32"])
    values = {"expansion.n_inner_pts=0": {0: 0.9, 1: 0.91}, "expansion.n_inner_pts=2": {0: 0.8, 1: 0.83}}
    sweep_from_records(tmp_path / "dim32", variant, values)
    table = build_table([outcome.sweep_dir, tmp_path / "dim32"], ["expansion.n_inner_pts"], ["model.embedding_dim"],
                        ["recall_at_1"], {"expansion.n_inner_pts": 0})
    assert table.cols == [(64,), (32,)]  # command-line order
    for (row, col, _), e in table.entries.items():
        values = seeds["expansion.n_inner_pts=%d" % row[0]] if col == (64,) else None
        if values is not None:  # the real sweep's cells: every number from its records
            assert e.ci.n == len(values) and e.ci.mean == pytest.approx(sum(values.values()) / len(values))
    ee64 = table.entries[((2,), (64,), "recall_at_1")]
    assert ee64.comparison.procedure == "repeated CI"  # the policy's own comparison, not a t-test on adaptive seeds
    assert table.entries[((2,), (32,), "recall_at_1")].comparison.procedure == "paired t"
    assert "| MS |" in to_markdown(table) and r"\toprule" in to_latex(table)


def test_identical_arms_end_equivalent_and_a_real_gap_does_not(ray_local: None, tracking_uri: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Arms `same` (the base config again) and `gap` (a learning rate too small to learn in 10
    steps) against `base`, until decided with a 1-point margin: `same` is equivalent at the first
    look and gets no more seeds; `gap` is not equivalent. The driver is stopped before its second
    round; `--resume` goes on from the records. The console shows each look's interval per
    comparison, and the closing time is the resumed session's, with the total beside it."""
    sweep: dict[str, Any] = {
        "name": "equivalence", "arms": {"base": {}, "same": {}, "gap": {"optimizer.lr": 1.0e-7}},
        "baseline": {"arm": "base"}, "seeds": {"start": 2, "max": 3, "until": "decided"},
        "equivalence_margin": 1.0, "mlflow": {"tracking_uri": tracking_uri},
    }
    plan = load_plan(write_yaml(tmp_path / "eq.yaml", sweep))
    decide = PolicyView.next_round
    calls: list[list[tuple[str, int]]] = []

    def stop_before_round_two(view: PolicyView, records: Any) -> list[tuple[str, int]]:
        calls.append(decide(view, records))
        if len(calls) == 2 and calls[-1]:
            raise SweepInterrupted("final")  # what a lost driver leaves: round 1 recorded, round 2 not started
        return calls[-1]

    monkeypatch.setattr(PolicyView, "next_round", stop_before_round_two)
    first = run_sweep(plan, tmp_path / "sweep")
    monkeypatch.undo()
    if first.status == KILLED:
        assert {(t.cell, t.seed) for t in load_records(first.sweep_dir).final()} == set(calls[0])
        outcome = run_sweep(plan, tmp_path / "sweep", resume=True)
        assert {(t.cell, t.seed) for t in load_records(first.sweep_dir).final()} == set(calls[0]) | set(calls[1])
    else:
        outcome = first  # decided at the first look: no second round to resume
    assert outcome.status == FINISHED
    seeds = seeds_by_cell(outcome.sweep_dir)
    lines = {line.split(":")[0]: line for line in headlines(outcome.sweep_dir)}
    assert lines["same vs base"].endswith("equivalent within ±1 points."), lines
    assert "equivalent" not in lines["gap vs base"], lines
    design = Design.from_policy(plan.spec.policy, "recall_at_1", 1.0)
    expected = {}
    for arm in ("same", "gap"):
        cell, base = seeds[f"arm={arm}"], seeds["arm=base"]
        diffs = [100 * (cell[s] - base[s]) if s in cell and s in base else math.nan for s in plan.seeds]
        expected[arm] = design.looks[first_look_meeting_the_rule(design, diffs, None, True, 1.0)]
        assert sorted(cell) == plan.seeds[: expected[arm]]  # seeds only while its comparison was open
    assert expected["same"] == 2 and sorted(seeds["arm=base"]) == plan.seeds[: max(expected.values())]
    assert rounds_run(outcome.sweep_dir) == 1 + (expected["gap"] > 2)

    # What the console showed, look by look: each line is the policy's own interval for that look.
    printed = capsys.readouterr().out.splitlines()
    records = [r for r in load_records(outcome.sweep_dir).final()]
    view = PolicyView.of(plan.spec.policy, plan.cells, plan.spec.baseline, plan.spec.metric, 1.0)
    labels = plan_labels(plan)
    seen: dict[Any, int] = {}
    for n in (2, 3):  # the records of each look, in order: what the driver saw after each round
        upto = [r for r in records if r.seed < n]
        for line in policy_look_lines(view, view.assess(upto), labels, "max", seen):
            assert line in printed, (line, printed)
    same_line = next(line for line in printed if line.startswith("   look 1/2 (2 seeds) same vs base: "))
    assert same_line.endswith("equivalent within ±1.0 points, no more seeds")
    gap_lines = [line for line in printed if line.startswith("   look ") and " gap vs base: " in line]
    assert gap_lines[0].startswith("   look 1/2 (2 seeds) gap vs base: R@1 ") and "95% repeated CI" in gap_lines[0]
    gap = view.assess(records)[1]
    undecided = [line for line in printed if line.startswith("-- gap vs base: undecided at the maximum of 3 seeds: ")]
    assert bool(undecided) == (gap.reason == "max seeds")
    if undecided:  # the forecast follows it
        assert printed[printed.index(undecided[0]) + 1].startswith("   seed forecast: with the spread of ")
    head = closing_block(outcome).splitlines()[0]
    meta = load_records(outcome.sweep_dir).meta
    if first.status == KILLED:  # this session's time, the total over both beside it
        assert meta.sessions == 2 and outcome.wall_s < meta.wall_s
        assert head.startswith(f"-- done in {fmt_duration(outcome.wall_s)} ({fmt_duration(meta.wall_s)} over 2 runs): ")
    else:
        assert head.startswith(f"-- done in {fmt_duration(outcome.wall_s)}: ")

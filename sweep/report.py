"""The report of a sweep, from its directory alone: `python sweep/report.py sweeps/<name>`.

    python sweep/report.py sweeps/<name>                     # rewrite the report of a (running) sweep
    python sweep/report.py sweeps/<name> --evaluation best   # statistics on each trial's best evaluation

One results object (`sweep.results.SweepResults`: typed plan + typed trial records, indexed
once) and its view (`sweep.report_view`: every value in its unit and format, worked out once)
feed every writer. Written into the sweep directory:

- `trials.parquet|csv`: every trial (search and final), its cell, seed, status, error, searched
  params and metrics -- failed trials included, with their error message;
- `cells.parquet|csv`: per cell and metric, mean and 95 % Student-t interval over seeds (final
  phase, finished trials only), clipped to the metric's range (`ci_clipped`);
- `comparisons.parquet|csv`: per comparison and metric, the paired difference to its baseline
  cell (`pairs` = seeds finished in both), its 95 % interval, the paired t-test p-value, verdict;
- `report.md` and `report.html` (the same, self-contained: plots inline), see `sweep.writers`;
- the plots of `sweep.plots` (an ablation figure per axis also as PDF, with the CSVs of its points).

Which evaluation of a final trial enters the statistics is `sweep.report.evaluation`: `last`
(default: the model as trained) or `best` (the best evaluation by the primary metric, with every
other metric taken at the same epoch; optimistic, since the epoch is then chosen on the test split)
or `best_on_test` (the papers' rule: the evaluation of best test Recall@1, whatever the primary
metric; shown as test-set selection wherever it is used). `python sweep/report.py table DIR...`
is `dml-report table` (`sweep.table`: the paper's table across sweeps).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python sweep/report.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Optional

from sweep.plots import draw_all
from sweep.report_view import report_view
from sweep.results import EVALUATIONS, SweepResults
from sweep.writers import write_documents, write_tables


def write_report(sweep_dir: str | Path, evaluation: Optional[str] = None) -> list[Path]:
    """The report of a sweep directory, its results built from the folder's plan and records."""
    return write_results(SweepResults.of_dir(sweep_dir, evaluation), Path(sweep_dir))


def write_results(results: SweepResults, sweep_dir: Path) -> list[Path]:
    """Tables, plots, `report.md` and `report.html` of `results` into `sweep_dir`; the files written.
    Every value shown is formatted once (`report_view`); the plots and the documents arrange it."""
    view = report_view(results)
    tables = write_tables(view, sweep_dir)
    figures = draw_all(view, sweep_dir)
    return [*write_documents(view, figures, sweep_dir), *tables, *(x for f in figures for x in (f.path, *f.files))]


def headlines(sweep_dir: str | Path, evaluation: Optional[str] = None) -> list[str]:
    """The headline of every comparison on the primary metric, from a sweep directory."""
    return SweepResults.of_dir(sweep_dir, evaluation).summary.top()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:  # `dml-report table SWEEP_DIR...`: the paper's table across sweeps
        from sweep.table import main as table_main

        return table_main(argv[1:])
    parser = argparse.ArgumentParser(description="Write the report of a sweep directory (or `table SWEEP_DIR...`).")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--evaluation", choices=EVALUATIONS, default=None,
                        help="which evaluation of each final trial the statistics use (default: sweep.report.evaluation)")
    args = parser.parse_args(argv)
    try:
        files = write_report(args.sweep_dir, args.evaluation)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "report.md").read_text())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

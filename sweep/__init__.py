"""Benchmark sweeps over `dml_core` experiments: Ray Tune + Optuna + MLflow.

    spec.py      the typed `sweep:` block of an experiment YAML
    plan.py      grid x arms x seeds (+ search) -> cells and trials (no Ray)
    checks.py    what --dry-run checks: every trial config, metric, data path and P x K (no Ray)
    console.py   what a sweep prints: the plan, then one line per trial
    search.py    one Optuna study and one set of ASHA brackets per grid cell
    trainable.py the Ray Tune function around `dml_core.training.fit`
    tracking.py  MLflow: parent run per sweep, child run per trial, from a driver-side callback
    store.py     the trial store (SQLite per storage root): every trial record, reuse by content key
    pending.py   what is left to run (resume, reuse, growth)
    compat.py    every private / developer-only Ray, Optuna API in one place
    runner.py    the search and final phases on Ray Tune, resume, failure handling
    stats.py     Student-t intervals and paired t-tests over seeds; verdict() (better/worse/equivalent)
    sequential.py  seed policies: repeated CIs with alpha spending, which trials run next
    table.py     `dml-report table`: the paper's table across sweeps (md, LaTeX, CSV)
    selection.py which searched value a cell keeps, and whether the search could tell (scoring noise)
    results.py   SweepResults: typed plan + records -> cells, comparisons, search, once per sweep end
    plots.py     the report's plots (in %, one page each however large the sweep)
    figures.py   the ablation figure of each axis as the papers draw it (PNG, PDF, CSV of its points)
    writers.py   tables (parquet/CSV), report.md and a self-contained report.html
    parent_run.py  what the MLflow parent run carries: % metrics and the description
    report.py    the command that rebuilds them: `python sweep/report.py <sweep dir>`
    run.py       the command: `python sweep/run.py experiments/<name>.yaml`
"""

"""The report of a sweep as files: the tables (parquet + CSV), `report.md` and a self-contained
`report.html` (plots inline as base64 data URIs, so MLflow's artifact viewer renders it whole), and
the sweep's `commands.txt` (`record_command`: one line per driver session, which the report lists).
What the report says is `sweep.report_sections`; how its blocks render, `sweep.document`.
"""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dml_core.io import LOCK_NAME, atomic_write_text
from sweep.plots import Figure
from sweep.report_view import ReportView
from sweep.report_sections import COMMANDS_FILE, report_blocks
from sweep.document import to_html, to_markdown


def record_command(sweep_dir: Path, argv: list[str]) -> Callable[[], None]:
    """Append this session's command line to the sweep's `commands.txt` (the report lists them);
    returns what takes it out again, for a session that stopped before its sweep existed."""
    path = sweep_dir / COMMANDS_FILE
    before = path.read_text() if path.is_file() else None
    line = f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC  {shlex.join(['python', 'sweep/run.py', *argv])}\n"
    made = [d for d in (sweep_dir, *sweep_dir.parents) if not d.exists()]  # folders this makes, deepest first

    def undo() -> None:
        if before is not None:
            atomic_write_text(path, before)
            return
        path.unlink(missing_ok=True)
        # A failed start leaves no folder behind: the sweep's lock left its file, as the folder was not its own.
        if sweep_dir in made and [p.name for p in sweep_dir.iterdir()] == [LOCK_NAME]:
            (sweep_dir / LOCK_NAME).unlink()
        for folder in made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, (before or "") + line)
    except OSError:
        for folder in made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return undo


# --------------------------------------------------------------------------- tables


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types (e.g. an axis of ints and strings)
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return pa.table({k: _column([row.get(k) for row in rows]) for k in columns})


def write_tables(view: ReportView, sweep_dir: Path) -> list[Path]:
    """`trials`, `cells` and `comparisons` as parquet and CSV (previewable in MLflow)."""
    files = []
    for name, rows in view.tables.items():
        if rows:
            table = _table(rows)
            pq.write_table(table, sweep_dir / f"{name}.parquet")
            pacsv.write_csv(table, sweep_dir / f"{name}.csv")
            files += [sweep_dir / f"{name}.parquet", sweep_dir / f"{name}.csv"]
    return files


def write_documents(view: ReportView, figures: list[Figure], sweep_dir: Path) -> list[Path]:
    blocks = report_blocks(view, figures, sweep_dir)
    md, page = sweep_dir / "report.md", sweep_dir / "report.html"
    atomic_write_text(md, to_markdown(blocks))
    atomic_write_text(page, to_html(blocks, f"Sweep {view.results.plan.name}"))
    return [md, page]

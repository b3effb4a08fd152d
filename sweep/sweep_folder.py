"""A sweep's folder: refuse a wrong start or resume, open or create its records in the trial store, write its plan files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml

from dml_core.io import atomic_write_json, atomic_write_text, read_json
from sweep.console import plan_block, say
from sweep.pending import Restart, check_resumed
from sweep.plan import PLAN_FILE, PLAN_YAML, SweepPlan
from sweep.spec import SweepError
from sweep.store import POINTER_FILE, SweepLog, check_store_file, default_store_path

if TYPE_CHECKING:
    from sweep.sequential import PolicyView


def default_sweep_dir(plan: SweepPlan, out: Optional[str] = None) -> Path:
    """--out > $DML_STORAGE_PATH/<name> > sweep.storage_path/<name> > ./sweeps/<name>."""
    if out:
        return Path(out).resolve()
    root = os.environ.get("DML_STORAGE_PATH") or plan.spec.storage_path or "sweeps"
    if "://" in root:
        raise SweepError(
            f"{plan.source}: sweep.storage_path: {root}: use a filesystem path that every node sees (e.g. NFS); "
            "the sweep ledger and report are plain files"
        )
    return (Path(root) / plan.name).resolve()


def check_sweep_dir(sweep_dir: Path, resume: bool) -> None:
    """Refuse to start over an existing sweep, or to resume a missing one. A resumed sweep may have
    grown; what it may not change is checked against its records (`pending.check_resumed`)."""
    plan_file = sweep_dir / PLAN_FILE
    if resume:
        if not plan_file.is_file():
            raise SweepError(f"{sweep_dir}: no sweep to resume here (no {PLAN_FILE}); run without --resume")
        read_json(plan_file)  # a damaged plan stops here, before Ray starts, naming the file
    elif plan_file.exists():
        raise SweepError(f"{sweep_dir}: a sweep already exists here; add --resume to continue it, or use --out DIR / --set sweep.name=...")


def started_plan(sweep_dir: Path) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """A resumed sweep's `plan.json` as it started, and its base experiment (from `plan.yaml` for a
    `plan.json` of an earlier version, which kept none): what `pending.check_resumed` compares."""
    started = read_json(sweep_dir / PLAN_FILE)
    old_base = started.get("base")
    if old_base is None and (sweep_dir / PLAN_YAML).is_file():  # a plan.json of an earlier version
        old_base = {k: v for k, v in yaml.safe_load((sweep_dir / PLAN_YAML).read_text()).items() if k != "sweep"}
    return started, old_base


def create_sweep_dir(plan: SweepPlan, sweep_dir: Path, store: Optional[str] = None) -> SweepLog:
    """A new sweep: its records' place in the trial store and its plan; after `check_sweep_dir`."""
    from sweep.sequential import PolicyView

    return write_sweep_dir(plan, PolicyView.from_plan(plan), sweep_dir, None, store)


def open_sweep_dir(plan: SweepPlan, sweep_dir: Path, restart_changed: bool,
                   store: Optional[str] = None) -> tuple[SweepLog, Restart]:
    """A resumed sweep's records (an earlier version's ledger.json migrated into the store; a store
    found gone started anew, saying what was lost), after checking what it may not change, and
    what `--restart-changed` reruns (`pending.check_resumed`); its plan files are rewritten (it
    may have grown)."""
    started, old_base = started_plan(sweep_dir)
    log = SweepLog.open(sweep_dir, plan.name, store_path=store, recover=True)
    if log.recovered:
        say(log.recovered)
    return log, check_resumed(plan, started, old_base, log, restart_changed)


def claim_sweep_dir(plan: SweepPlan, sweep_dir: Path, resume: bool, restart_changed: bool,
                    store: Optional[str] = None) -> tuple[Optional[SweepLog], Restart]:
    """Before Ray starts, everything that refuses the folder: a new sweep over an existing one, a
    resume of a missing one or of a changed design, an unusable store. Returns a resumed sweep's
    records and what `--restart-changed` reruns; None for a new sweep (made by `write_sweep_dir`)."""
    check_sweep_dir(sweep_dir, resume)
    if resume:
        return open_sweep_dir(plan, sweep_dir, restart_changed, store)
    check_store_file(store or default_store_path(sweep_dir))  # a foreign, newer, empty or read-only store file
    return None, Restart()


def write_sweep_dir(plan: SweepPlan, view: Optional["PolicyView"], sweep_dir: Path, log: Optional[SweepLog],
                    store: Optional[str] = None) -> SweepLog:
    """Once the sweep can run: a new sweep's records (`log` None), then its plan files, or a resumed
    one's plan files rewritten (it may have grown); `view`: the plan's seed policy, for `plan.txt`."""
    if log is None:
        from sweep.tracker import git_commit

        log = SweepLog.create(sweep_dir, plan.name, store)
        log.commit_recorded(git_commit())
    # plan.json last: it is what marks the directory as holding a sweep to --resume
    atomic_write_text(sweep_dir / PLAN_YAML, yaml.safe_dump({**plan.base, "sweep": plan.raw_sweep}, sort_keys=False))
    atomic_write_text(sweep_dir / "plan.txt", plan_block(plan, view, sweep_dir) + "\n")
    atomic_write_json(sweep_dir / PLAN_FILE, plan.to_json())
    return log


def remove_plan_files(sweep_dir: Path) -> None:
    """What `create_sweep_dir` wrote, for a new sweep of which nothing ran: a plain rerun must not be refused."""
    for name in (PLAN_YAML, "plan.txt", PLAN_FILE, POINTER_FILE):
        (sweep_dir / name).unlink(missing_ok=True)

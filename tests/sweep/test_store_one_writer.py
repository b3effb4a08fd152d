"""The trial store has one writer (issue 26): outside its own modules, no code in `sweep/` calls
a method that writes or deletes store rows. Read from the source with `ast`, so a new call site
fails here, not in a review."""
from __future__ import annotations

import ast
from pathlib import Path

SWEEP = Path(__file__).resolve().parents[2] / "sweep"
STATE_MODULES = {"store.py", "store_file.py"}  # the store's own modules: the one writer and its SQLite file
# SweepLog's raw writes (tests build fixtures with them) and TrialStore's row writes.
LOG_WRITES = {"add", "update", "remove", "update_meta"}
ROW_WRITES = {"put", "delete", "set_meta", "add_sweep"}


def _receiver(node: ast.expr) -> str:
    """The last name of a call's receiver: `log` for `self.log.add`, `store` for `log.store.put`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def store_writes(source: str) -> list[str]:
    """`line: call` of each store-writing call in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method, receiver = node.func.attr, _receiver(node.func.value)
            if (method in LOG_WRITES and receiver in ("log", "_log")) or (method in ROW_WRITES and receiver in ("store", "_store")):
                found.append(f"{node.lineno}: {receiver}.{method}")
    return found


def test_the_detector_sees_each_kind_of_write() -> None:
    source = ("def f(self, log, runs):\n    log.add(r)\n    self.log.update(k, a=1)\n    runs.log.remove(k)\n"
              "    log.update_meta(best={})\n    log.store.put(s, r)\n    self.store.delete(s, k)\n"
              "    seen.add(k)\n    found.update(x)\n")
    assert store_writes(source) == ["2: log.add", "3: log.update", "4: log.remove", "5: log.update_meta",
                                    "6: store.put", "7: store.delete"]


def test_only_the_store_module_writes_store_rows() -> None:
    offenders = {p.name: calls for p in sorted(SWEEP.glob("*.py")) if p.name not in STATE_MODULES
                 and (calls := store_writes(p.read_text()))}
    assert not offenders, f"store rows written outside {sorted(STATE_MODULES)}: {offenders}"

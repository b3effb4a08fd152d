"""The baseline rule: which cell each cell of a plan is compared with, and the baseline in words."""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Optional

from sweep.plan import Cell, yaml_value


def _effective(cell: Cell, baseline: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The baseline as it applies to `cell`: a per-arm `{arm: {ee: ms}}` resolved to `{arm: ms}`;
    None when the per-arm baseline does not list the cell's arm."""
    if isinstance(baseline.get("arm"), dict):
        if cell.arm not in baseline["arm"]:
            return None
        return {**baseline, "arm": baseline["arm"][cell.arm]}
    return baseline


def reference_cell(cell: Cell, cells: list[Cell], baseline: dict[str, Any]) -> Optional[Cell]:
    """The baseline cell `cell` is compared with, or None (it is a baseline, or has none).

    Among the cells matching `baseline`, keep those that agree with `cell` on every coordinate in
    which the baseline cells differ. `{arm: none}` with a pinned `none` arm gives that one cell for
    everybody; `{expansion.n_inner_pts: 0}` with arms gives each arm its own n = 0 cell;
    `{arm: {ee: ms}}` compares the cells of arm `ee` with those of arm `ms` only.
    """
    effective = _effective(cell, baseline)
    if effective is None or cell.matches(effective):
        return None
    candidates = [c for c in cells if c.matches(effective)]
    keys = ["arm", *cell.coords]
    for key in keys:
        if len({yaml_value(c.get(key)) for c in candidates}) > 1:
            candidates = [c for c in candidates if c.get(key) == cell.get(key)]
    return candidates[0] if len(candidates) == 1 else None


def references(cells: list[Cell], baseline: Optional[dict[str, Any]]) -> dict[str, Cell]:
    """Cell id -> its baseline cell (`reference_cell`) for every cell that has one, indexed so a
    large grid is not scanned once per cell: the baseline cells of each (per-arm) baseline are
    keyed by the coordinates in which they differ, so each cell's reference is one lookup;
    `reference_cell` (the definition) decides whenever the lookup is not unique."""
    if not baseline:
        return {}
    indexes: dict[str, tuple[list[str], dict[tuple[str, ...], list[Cell]]]] = {}
    out = {}
    for cell in cells:
        effective = _effective(cell, baseline)
        if effective is None or cell.matches(effective):
            continue  # not compared, or a baseline cell itself
        key = json.dumps(effective, sort_keys=True, default=str)
        if key not in indexes:
            candidates = [c for c in cells if c.matches(effective)]
            axes = list(dict.fromkeys(["arm", *(k for c in candidates for k in c.coords)]))
            varying = [k for k in axes if len({yaml_value(c.get(k)) for c in candidates}) > 1]
            index: dict[tuple[str, ...], list[Cell]] = defaultdict(list)
            for c in candidates:
                index[tuple(yaml_value(c.get(k)) for k in varying)].append(c)
            indexes[key] = (varying, index)
        varying, index = indexes[key]
        found = index.get(tuple(yaml_value(cell.get(k)) for k in varying), [])
        ref = found[0] if len(found) == 1 else reference_cell(cell, cells, baseline)
        if ref is not None:
            out[cell.id] = ref
    return out


def describe_baseline(baseline: dict[str, Any], prose: bool = False) -> str:
    """The baseline as the YAML writes it (`arm=ms, model.embedding_dim=8`; the plan's console
    lines), or in `prose` (`expansion.n_inner_pts = 0`, `arm ee -> ms`; the report's sentences)."""
    if not baseline:
        return "none (no paired comparison)"
    if not prose:
        return ", ".join(f"{key}={yaml_value(value)}" for key, value in baseline.items())
    return "; ".join(f"{k} " + ", ".join(f"{a} -> {b}" for a, b in v.items()) if isinstance(v, dict) else f"{k} = {v}"
                     for k, v in baseline.items())

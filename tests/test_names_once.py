"""Each dataset, backbone, loss and expansion name is written once in `dml_core` and `sweep`: in
its registration.

Every string in the code (docstrings aside: prose may mention a dataset) that holds a registered
name as a word -- `"cub200"`, `"dml_core.data.cub200:build"`, `f"{x}/cub200"` -- is counted by
line; a name found on any line but its registration's is a second declaration that can drift
(what a component is called, its short label, which of its counts means "off": all declared on
its parameter class). URLs are addresses, not names, and are not counted. A name that is also an
English word (SEE's `see`, the `digits` dataset) counts only where a string is exactly the name. `none` is left out:
it is the off value of several kinds (expansion, scheduler, amp), not one component's name.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest

from dml_core.params import BACKBONES, DATASETS, EXPANSIONS, LOSSES

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "dml_core", ROOT / "sweep"]
NAMES = [n for kind in (DATASETS, BACKBONES, LOSSES, EXPANSIONS) for n in kind.names()
         if n not in kind.prefixes and n != "none"]
WORDS = {"see", "digits"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def string_lines() -> dict[str, set[tuple[str, int]]]:
    """name -> the (file, line) of each non-docstring string constant holding it as a word."""
    found: dict[str, set[tuple[str, int]]] = defaultdict(set)
    words = {n: re.compile(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])") for n in NAMES}
    for path in (p for package in PACKAGES for p in package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip \
                    and "://" not in node.value:
                for name, word in words.items():
                    if node.value == name if name in WORDS else word.search(node.value):
                        found[name].add((str(path.relative_to(ROOT)), node.lineno))
    return found


@pytest.mark.parametrize("name", NAMES)
def test_name_is_written_once_in_its_registration(name: str) -> None:
    [(path, line)] = string_lines()[name]  # exactly one line
    text = (ROOT / path).read_text().splitlines()[line - 1]
    assert path.startswith("dml_core/params/") and f'.register("{name}"' in text, (path, text)

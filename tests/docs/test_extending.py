"""docs/extending.md: every ```python block runs, in order, in one fresh process."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "extending.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_each_kind_of_component_has_a_worked_example():
    headings = re.findall(r"^## (.+)$", PAGE.read_text(), flags=re.M)
    assert headings == ["A loss", "A dataset", "A backbone", "An expansion", "A sweep axis"]
    assert len(code_blocks(PAGE.read_text())) == 5


def test_the_examples_run(tmp_path):
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(code_blocks(PAGE.read_text())) + "\nprint('examples ok')\n")
    proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("examples ok")

"""docs/extending.md's count holds for labels: a loss and an expansion added as the page shows
(their two files each, here its code blocks) are named by their own `short_name` in a sweep's console,
with no edit in `sweep/`."""
from __future__ import annotations

import os
import subprocess
import sys

from test_extending import PAGE, REPO, code_blocks

SWEEP = """
name: labels
data: {name: digits, image_size: 16, train_classes: 0.7, batch: {classes_per_batch: 3, samples_per_class: 4}}
model: {backbone: small_conv, conv_blocks: 2, conv_width: 8, embedding_dim: 16}
loss: {name: margin_pair}
expansion: {name: none}
train: {epochs: 1, iterations_per_epoch: 2}
sweep:
  grid:
    loss.name: [margin_pair, multi_similarity]
    expansion.name: [none, jitter, ee]
  exclude: [{loss.name: multi_similarity, expansion.name: jitter}]
  seeds: [0]
  resources_per_trial: {cpu: 1, gpu: 0}
"""


def test_a_new_loss_and_expansion_are_labelled_by_their_registration(tmp_path):
    (tmp_path / "labels.yaml").write_text(SWEEP)
    script = tmp_path / "run.py"
    blocks = [b for b in code_blocks(PAGE.read_text()) if "LOSSES.register" in b or "EXPANSIONS.register" in b]
    script.write_text("\n\n".join(blocks) + f"""
import sys
from sweep.run import main
sys.exit(main([{str(tmp_path / 'labels.yaml')!r}, "--dry-run", "--out", {str(tmp_path / 'sweep')!r}]))
""")
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if "loss.name=" in line and "expansion.name=" in line]
    text = "\n".join(" ".join(r) for r in rows)
    for label in ("MP", "MP+Jitter", "MP+EE", "MS", "MS+EE"):
        assert any(f" {label} " in f" {' '.join(r)} " for r in rows), (label, text)
    assert "margin_pair+" not in text and "+jitter" not in text, text

"""The command-line entry points as a user runs them: one-line errors, run dirs, embeddings."""
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dml_core import embed as embed_cli
from dml_core import train as train_cli

REPO = Path(__file__).resolve().parents[2]
FAST = ["--set", "train.epochs=1", "--set", "train.iterations_per_epoch=3", "--set", "eval.clustering=false"]


def run_cli(module, args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "yaml_text, sets, expected",
    [
        ("data: {name: digits\n", [], "malformed YAML"),
        ("model: {embeding_dim: 3}\n", [], "model.embeding_dim: not a parameter of backbone small_conv"),
        ("optimizer: {lr: fast}\n", [], "optimizer.lr"),
        ("loss: {name: tripplet}\n", [], "did you mean 'triplet'"),
        ("data: {name: image_folder, root: /no/such/folder}\n", [], "/no/such/folder"),
        ("data: {name: cub200, root: EMPTY}\n", [], "images.txt"),
        ("expansion: {name: ee}\n", ["--set", "data.batch.samples_per_class=5"], "K must be even"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(tmp_path, capsys, yaml_text, sets, expected):
    (tmp_path / "EMPTY").mkdir()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text.replace("EMPTY", str(tmp_path / "EMPTY")))
    with pytest.raises(SystemExit) as info:
        train_cli.main([str(cfg), *sets, "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("dml_core.train: error:")
    assert expected in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_real_process_prints_one_line_not_a_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {embeding_dim: 3}\n")
    proc = run_cli("dml_core.train", [str(cfg)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"dml_core.train: error: {cfg}: model.embeding_dim: not a parameter of backbone small_conv (did you mean 'embedding_dim'?)"]


def test_undecodable_image_names_the_file(tmp_path):
    root = tmp_path / "imgs"
    from PIL import Image

    for c in ("a", "b", "c", "d"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (i * 40, 10, 10)).save(root / c / f"{i}.png")
    (root / "a" / "0.png").write_bytes(b"not a png")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"data: {{name: image_folder, root: {root}, image_size: 12, batch: {{classes_per_batch: 2, samples_per_class: 2}}}}\n")
    proc = run_cli("dml_core.train", [str(cfg), *FAST, "--out", str(tmp_path / "run")], tmp_path)
    assert proc.returncode == 2
    assert "0.png: cannot decode image" in proc.stderr
    # Checked while the datasets are built, before any run directory exists.
    assert not (tmp_path / "run").exists()


def test_train_then_embed_in_process(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli.main([str(REPO / "experiments" / "quickstart.yaml"), *FAST, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "finished: recall_at_1" in printed
    assert json.loads((out / "metrics.json").read_text())["status"] == "finished"
    # An existing run is never silently overwritten.
    with pytest.raises(SystemExit) as info:
        train_cli.main([str(REPO / "experiments" / "quickstart.yaml"), *FAST, "--out", str(out)])
    assert info.value.code == 2

    # A <class>/<image> folder of digits, as PNGs.
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path / "digits"
    for i in range(12):
        d = folder / str(digits.target[i])
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.images[i] * 255 / 16).astype("uint8")).save(d / f"{i}.png")
    assert embed_cli.main([str(out), str(folder), "-o", str(tmp_path / "e.parquet")]) == 0
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.column_names == ["path", "label", "embedding"]
    assert table.num_rows == 12
    emb = table.column("embedding").to_pylist()
    assert len(emb[0]) == 64
    assert abs(sum(v * v for v in emb[0]) - 1) < 1e-4
    labels = table.column("label").to_pylist()
    paths = table.column("path").to_pylist()
    assert all(Path(p).parent.name == lab for p, lab in zip(paths, labels))


def test_one_set_flag_takes_several_overrides(tmp_path, capsys):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("data: {name: digits}\n")
    with pytest.raises(SystemExit) as info:
        train_cli.main([str(cfg), "--set", "model.embedding_dim=8", "optimizer.lr=fast", "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert "optimizer.lr: Input should be a valid number" in capsys.readouterr().err  # the second one was read


def test_entry_points_name_existing_mains():
    import importlib
    import tomllib

    scripts = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"dml-train", "dml-embed", "dml-sweep", "dml-report"}
    for target in scripts.values():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))

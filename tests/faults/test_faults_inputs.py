"""Issue 19: bad input to a single run or to `dml_core.embed` -- a YAML file, a `--set`, a field,
an image folder -- ends with one line naming the file or field (exit 2), never a traceback, a
line that names neither, or a silently wrong result."""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from dml_core import embed as embed_cli
from dml_core import train as train_cli
from dml_core.config import ConfigError, config_from_dict, load_config
from faults_testlib import call_cli, one_error_line, tiny, truncated_pngs, write_yaml


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and len(text) < 500, text
    return text


def _load_error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return _one_line(info.value)


def _folder_yaml(tmp_path: Path, root: Path | str, **data) -> Path:
    return write_yaml(tmp_path / "t.yaml", tiny(data={"name": "image_folder", "root": str(root), "image_size": 8, **data}))


# ------------------------------------------------------------------ the YAML file (defects 6, 7)


def test_a_yaml_that_is_not_utf8_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert _load_error(path).startswith(f"{path}: not UTF-8 text (byte 0xe9 at offset 9)")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_yaml_is_an_error_not_all_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert _load_error(path) == f"{path}: empty; an experiment YAML needs at least `data:`"


def test_a_directory_given_as_the_yaml_is_not_reported_missing(tmp_path: Path) -> None:
    assert _load_error(tmp_path) == f"{tmp_path}: a directory, not a YAML file"


def test_an_unhashable_yaml_key_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "key.yaml"
    path.write_text("name: x\n? [1, 2]\n: 3\n")
    assert _load_error(path) == f"{path}: line 2: a key must be a plain value (a string or number), not a list"


@pytest.mark.parametrize("item", ["=5", "train..epochs=5", ".epochs=5", "train.=5", " =5"])
def test_a_malformed_set_key_is_blamed_on_set(tmp_path: Path, item: str) -> None:
    path = write_yaml(tmp_path / "t.yaml", tiny())
    assert _load_error(path, [item]).startswith(f"--set {item!r}: empty key part")


# ------------------------------------------------------------------ fields (defects 3, 6, 7, 9)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_an_out_of_range_seed_names_the_field(seed: int) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(tiny(seed=seed), "x.yaml")
    assert _one_line(info.value).startswith("x.yaml: seed: Input should be")


@pytest.mark.parametrize("key,value", [("train.epochs", True), ("train.num_threads", True),
                                       ("optimizer.lr", True), ("train.eval_every", True),
                                       ("data.batch.classes_per_batch", True), ("train.checkpoint", 1),
                                       ("eval.clustering", "yes")])
def test_booleans_and_numbers_are_not_each_other(key: str, value: object) -> None:
    """`train.epochs: true` trained one epoch; `eval.clustering: yes` (a string) was True."""
    raw = tiny()
    section, *rest = key.split(".")
    node = raw[section]
    for part in rest[:-1]:
        node = node[part]
    node[rest[-1]] = value
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "x.yaml")
    assert _one_line(info.value).startswith(f"x.yaml: {key}: ")


def test_numbers_written_as_yaml_reads_them_still_load() -> None:
    cfg = config_from_dict(tiny(optimizer={"name": "adam", "lr": "1e-3"}, train={"epochs": 2, "grad_clip": 1}))
    assert cfg.optimizer.lr == 1e-3 and cfg.train.grad_clip == 1.0


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs", "a/b", "..", ""])
def test_the_experiment_name_cannot_leave_its_folder(tmp_path: Path, capsys, monkeypatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = write_yaml(tmp_path / "t.yaml", tiny(name=name))
    rc, err = call_cli(train_cli.main, [str(cfg)], capsys)
    assert rc == 2 and one_error_line(err).startswith(f"dml_core.train: error: {cfg}: name: "), err
    assert os.listdir(tmp_path) == ["t.yaml"]


def test_a_sweep_does_not_fall_back_to_an_escaping_name(tmp_path: Path) -> None:
    from sweep.plan import SweepPlan

    with pytest.raises(ValueError) as info:
        SweepPlan.from_dict({**tiny(name="../../escaped"), "sweep": {"seeds": [0]}}, "x.yaml")
    assert _one_line(info.value).startswith("x.yaml: name: ")


def test_a_huge_embedding_dim_is_one_line(tmp_path: Path, capsys) -> None:
    cfg = write_yaml(tmp_path / "t.yaml", tiny(model={"embedding_dim": 1000000000000}))
    rc, err = call_cli(train_cli.main, [str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and one_error_line(err).startswith(f"dml_core.train: error: {cfg}: model.embedding_dim: "), err


# ------------------------------------------------------------------ image folders (defects 6, 7, 9)


def test_a_truncated_image_in_a_single_run_names_the_file(tmp_path: Path, capsys) -> None:
    """The error came from a DataLoader worker: `Caught DatasetError in DataLoader worker process 0.`
    was the line shown, the file's name on a line that was dropped."""
    root = truncated_pngs(tmp_path / "trunc")
    cfg = _folder_yaml(tmp_path, root, num_workers=1)
    rc, err = call_cli(train_cli.main, [str(cfg), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2, err
    line = one_error_line(err)
    assert line.startswith(f"dml_core.train: error: {root}/c") and ".png: cannot decode image (" in line, line


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height 1-bit pixels (PIL checks the size when it opens)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def _copy_tree(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_decompression_bomb_image_is_one_line(tmp_path: Path, image_tree: Path, capsys) -> None:
    root = _copy_tree(image_tree, tmp_path / "tree")
    bomb = _png_claiming(root / "c1" / "bomb.png", 40000, 40000)
    rc, err = call_cli(train_cli.main, [str(_folder_yaml(tmp_path, root)), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and one_error_line(err).startswith(f"dml_core.train: error: {bomb}: cannot decode image ("), err


def test_an_unreadable_class_folder_is_one_line(tmp_path: Path, image_tree: Path, capsys, monkeypatch) -> None:
    root = _copy_tree(image_tree, tmp_path / "tree")
    locked = root / "c2"
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads it anyway: refuse it the way the kernel refuses everyone else
        real = Path.iterdir

        def iterdir(self: Path):
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "iterdir", iterdir)
    try:
        rc, err = call_cli(train_cli.main, [str(_folder_yaml(tmp_path, root)), "--out", str(tmp_path / "r")], capsys)
    finally:
        locked.chmod(0o755)
    assert rc == 2 and one_error_line(err) == f"dml_core.train: error: {locked}: cannot read this folder (Permission denied)"


def test_a_dangling_image_link_is_reported(tmp_path: Path, image_tree: Path, capsys) -> None:
    root = _copy_tree(image_tree, tmp_path / "tree")
    link = root / "c1" / "gone.png"
    link.symlink_to(tmp_path / "moved" / "gone.png")
    rc, err = call_cli(train_cli.main, [str(_folder_yaml(tmp_path, root)), "--out", str(tmp_path / "r")], capsys)
    assert rc == 2 and one_error_line(err) == (f"dml_core.train: error: {link}: a link to {tmp_path / 'moved' / 'gone.png'}, "
                                               "which does not exist"), err


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    """PIL's convert('L') clips a 16-bit image to 255: a ramp came out 99 % white."""
    from PIL import Image

    from dml_core.data.base import ImageListDataset

    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    for channels, mode in ((1, "L"), (3, "RGB")):
        ds = ImageListDataset([str(tmp_path / "deep.png")], [0], ["c"], num_channels=channels)
        image = ds._load(0)
        assert image.mode == mode
        pixels = np.asarray(image.convert("L"), dtype=float)
        assert np.abs(pixels - ramp / 257.0).max() <= 1.0
        assert (pixels == 255).mean() < 0.01


@pytest.mark.parametrize("root", ["${HOME}/omniglot", "$NO_SUCH_VARIABLE_19/x", "${DML_DATA}/${USER}/x"])
def test_a_variable_other_than_dml_data_is_an_error_not_a_folder(tmp_path: Path, capsys, monkeypatch, root: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DML_DATA", str(tmp_path / "data"))
    cfg = write_yaml(tmp_path / "t.yaml", tiny(data={"name": "omniglot", "root": root, "download": True, "image_size": 8}))
    rc, err = call_cli(train_cli.main, [str(cfg), "--out", str(tmp_path / "r")], capsys)
    variable = root.split("/")[-2] if root.startswith("${DML_DATA}") else root.split("/")[0]
    assert rc == 2 and one_error_line(err).startswith(f"dml_core.train: error: data.root: {variable}: "), err
    assert sorted(os.listdir(tmp_path)) == ["t.yaml"]  # no literal ./${HOME} folder, nothing downloaded


# ------------------------------------------------------------------ dml_core.embed (defects 6, 9)


@pytest.mark.parametrize("output", ["<dir>", "", "/"])
def test_embed_checks_its_output_before_embedding(tmp_path: Path, trained_run: Path, image_tree: Path, capsys,
                                                  monkeypatch, output: str) -> None:
    import dml_core.evaluation

    def never(*args, **kwargs):
        raise AssertionError("embedded before the output path was checked")

    monkeypatch.setattr(dml_core.evaluation, "embed_dataset", never)
    (tmp_path / "d").mkdir()
    out = str(tmp_path / "d") if output == "<dir>" else output
    rc, err = call_cli(embed_cli.main, [str(trained_run), str(image_tree), "-o", out], capsys)
    assert rc == 2
    shown = out or "''"
    assert one_error_line(err).startswith(f"dml_core.embed: error: -o {shown}: "), err


def test_embed_refuses_a_batch_size_below_one(trained_run: Path, image_tree: Path, tmp_path: Path, capsys) -> None:
    rc, err = call_cli(embed_cli.main, [str(trained_run), str(image_tree), "-o", str(tmp_path / "e.parquet"),
                                        "--batch-size", "0"], capsys)
    assert rc == 2 and one_error_line(err) == "dml_core.embed: error: --batch-size: must be at least 1, got 0", err
    assert not (tmp_path / "e.parquet").exists()


def test_embed_device_cuda_without_cuda_blames_device(trained_run: Path, image_tree: Path, tmp_path: Path, capsys,
                                                      monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc, err = call_cli(embed_cli.main, [str(trained_run), str(image_tree), "-o", str(tmp_path / "e.parquet"),
                                        "--device", "cuda"], capsys)
    assert rc == 2 and one_error_line(err).startswith("dml_core.embed: error: --device cuda: no CUDA device"), err


# ------------------------------------------------------------------ metric direction (defect 2)


def _sweep_plan(**sweep):
    from sweep.plan import SweepPlan

    search = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}, "num_samples": 2}
    return SweepPlan.from_dict({**tiny(), "sweep": {"seeds": [0], **sweep, "search": {**search, **sweep.get("search", {})}}},
                               "x.yaml")


def test_loss_is_minimised_wherever_it_is_the_metric() -> None:
    """`sweep.metric=loss` planned `loss (max)`: the search kept the higher-loss lr and the
    headline called the higher loss better."""
    plan = _sweep_plan(metric="loss")
    assert (plan.spec.mode, plan.spec.search_mode) == ("min", "min")
    from sweep.console import describe_plan

    assert "metric: loss (min)" in describe_plan(plan, Path("/tmp/s"))
    assert plan.to_json()["mode"] == "min"
    searched = _sweep_plan(search={"metric": "loss"})  # the final trials still maximise Recall@1
    assert (searched.spec.mode, searched.spec.search_mode) == ("max", "min")


@pytest.mark.parametrize("sweep,field", [({"metric": "loss", "mode": "max"}, "sweep.mode"),
                                         ({"mode": "min"}, "sweep.mode"),
                                         ({"search": {"metric": "loss", "mode": "max"}}, "sweep.search.mode")])
def test_a_mode_that_contradicts_the_metric_is_refused(sweep: dict, field: str) -> None:
    with pytest.raises(ValueError) as info:
        _sweep_plan(**sweep)
    assert _one_line(info.value).startswith(f"x.yaml: {field}: "), str(info.value)
    assert "drop the mode" in str(info.value)


def test_primary_metric_loss_picks_the_lowest_epoch() -> None:
    from dml_core.training import fit

    cfg = config_from_dict(tiny(train={"epochs": 4, "iterations_per_epoch": 3}, eval={"clustering": False,
                                                                                    "primary_metric": "loss"}))
    result = fit(cfg)
    losses = [h["loss"] for h in result.history]
    assert len(set(losses)) == len(losses)  # distinct, so the wrong choice cannot pass
    assert result.best["loss"] == min(losses)

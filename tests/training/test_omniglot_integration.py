"""Train on the real Omniglot subset with an alphabet-disjoint split, then embed with the run."""
import json

import pyarrow.parquet as pq

from dml_core import embed as embed_cli
from dml_core.config import config_from_dict
from dml_core.training import fit


def test_omniglot_trains_zero_shot_and_embeds(tmp_path, omniglot_root):
    cfg = config_from_dict({
        "name": "omniglot-it",
        "data": {"name": "omniglot", "root": str(omniglot_root), "image_size": 28, "train_classes": 0.5,
                 "horizontal_flip": False, "batch": {"classes_per_batch": 16, "samples_per_class": 4}},
        "model": {"backbone": "small_conv", "conv_width": 32, "embedding_dim": 64},
        "loss": {"name": "multi_similarity"},
        "expansion": {"name": "ee", "n_inner_pts": 2},
        "optimizer": {"lr": 0.003},
        "train": {"epochs": 1, "iterations_per_epoch": 25, "num_threads": 2},
        "eval": {"clustering": False},
    })
    result = fit(cfg, out_dir=tmp_path / "run")
    # 68-ish unseen classes of 20 images: chance R@1 is ~19/1360 = 0.014.
    assert result.metrics["recall_at_1"] > 0.15
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "finished"

    folder = omniglot_root / "Latin"
    assert embed_cli.main([str(tmp_path / "run"), str(folder), "-o", str(tmp_path / "latin.parquet")]) == 0
    table = pq.read_table(tmp_path / "latin.parquet")
    assert table.num_rows == sum(1 for _ in folder.rglob("*.png"))
    assert set(table.column("label").to_pylist()) == {p.name for p in folder.iterdir() if p.is_dir()}

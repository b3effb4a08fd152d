"""Frozen-backbone feature cache: one cached trial against the same trial end to end.

    python benchmarks/bench_feature_cache.py [--backbone resnet18] [--image-size 64] [--epochs 3]

Same config, same seed, both with `model.freeze_backbone: true`; the cached trial reads pooled
backbone features from parquet (`data.cache_features: true`), the end-to-end one runs the
backbone on every batch and at every evaluation. The first cached trial of a sweep pays for the
cache (printed as "cold"); every later trial is "warm". Target: warm >= 10x faster.
Data: the Omniglot subset at $DML_DATA/omniglot/images_background_small1 (see docs/configuration.md, "Data"), or digits.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dml_core.config import config_from_dict  # noqa: E402
from dml_core.data.roots import data_home  # noqa: E402
from dml_core.training import fit  # noqa: E402

OMNIGLOT = data_home() / "omniglot" / "images_background_small1"  # $DML_DATA (dml_core.data.roots)


def trial_config(args: argparse.Namespace, cache: bool, cache_dir: str) -> dict:
    data = ({"name": "omniglot", "root": str(OMNIGLOT)} if OMNIGLOT.is_dir() else {"name": "digits"})
    return {
        "name": "bench-cache",
        "seed": 0,
        "data": {**data, "image_size": args.image_size, "horizontal_flip": False, "cache_features": cache,
                 "cache_dir": cache_dir, "batch": {"classes_per_batch": 16, "samples_per_class": 4}},
        "model": {"backbone": args.backbone, "embedding_dim": 128, "freeze_backbone": True},
        "loss": {"name": "multi_similarity"},
        "optimizer": {"lr": 1e-3},
        "train": {"epochs": args.epochs, "iterations_per_epoch": args.iterations, "num_threads": args.threads},
        "eval": {"clustering": False},
    }


def timed(raw: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    result = fit(config_from_dict(raw))
    return time.perf_counter() - t0, result.metrics["recall_at_1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        e2e, r_e2e = timed(trial_config(args, False, cache_dir))
        cold, r_cold = timed(trial_config(args, True, cache_dir))
        warm, r_warm = timed(trial_config(args, True, cache_dir))
    print(f"data: {'omniglot subset' if OMNIGLOT.is_dir() else 'digits'}; backbone {args.backbone} at "
          f"{args.image_size}px, {args.epochs} epochs x {args.iterations} iterations, frozen")
    print(f"{'trial':<22}{'seconds':>9}{'R@1':>8}{'speed-up':>10}")
    for name, t, r in (("end to end", e2e, r_e2e), ("cached, cold cache", cold, r_cold), ("cached, warm cache", warm, r_warm)):
        print(f"{name:<22}{t:>9.2f}{r:>8.4f}{e2e / t:>9.1f}x")
    print(f"target: warm >= 10x -> {'met' if e2e / warm >= 10 else 'MISSED'}")
    print("R@1 differs between end to end and cached: the cached trial trains without augmentation.")


if __name__ == "__main__":
    main()

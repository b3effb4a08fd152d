"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset.

1,797 grayscale images, 10 classes; no download, so smoke tests and CI always have data.
Zero-shot split: digits 0-4 train, 5-9 test (``data.train_classes`` overrides the share).
The transforms upsample the 8x8 images to ``data.image_size``.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from dml_core.params.datasets import DataConfig
from dml_core.data.base import ArrayDataset, DatasetSplits
from dml_core.data.splits import split_by_share

DIGITS_MAX = 16.0  # load_digits pixel values are counts 0..16 of a 4x4 block


def load_digit_images(name: str) -> tuple[np.ndarray, np.ndarray]:
    """`load_digits()`'s `images` (n, 8, 8) and `target`, read from the CSV scikit-learn ships, as it
    reads it, without importing scikit-learn: with scipy that costs a sweep's driver (whose check
    counts the images per class) ~1 s of CPU and ~150 MiB. `load_digits` where the file is not found.
    `name`: the dataset's registered name, which is scikit-learn's name for the file."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    path = Path(spec.origin).parent / "datasets" / "data" / f"{name}.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def build(cfg: DataConfig) -> DatasetSplits:
    raw, target = load_digit_images(cfg.name)
    images = raw.astype(np.float32)[:, np.newaxis] / np.float32(DIGITS_MAX)
    full = ArrayDataset(images, target, [str(d) for d in range(10)])
    train, test = split_by_share(full, cfg)
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=1)

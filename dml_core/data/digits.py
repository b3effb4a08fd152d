"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset.

1,797 grayscale images, 10 classes; no download, so smoke tests and CI always have data.
Zero-shot split: digits 0-4 train, 5-9 test (``data.train_classes`` overrides the share).
The transforms upsample the 8x8 images to ``data.image_size``.
"""
from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from dml_core.params.datasets import DataConfig
from dml_core.data.base import ArrayDataset, DatasetSplits
from dml_core.data.splits import split_by_share

DIGITS_MAX = 16.0  # load_digits pixel values are counts 0..16 of a 4x4 block


def build(cfg: DataConfig) -> DatasetSplits:
    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, np.newaxis] / np.float32(DIGITS_MAX)
    full = ArrayDataset(images, bunch.target, [str(d) for d in bunch.target_names])
    train, test = split_by_share(full, cfg)
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=1)

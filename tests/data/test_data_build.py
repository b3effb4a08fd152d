"""build_datasets on the embedded digits and the class-count ablation (downloads: test_download.py)."""
from __future__ import annotations

import pytest
import torch

from dml_core.errors import ConfigError
from dml_core.data import DatasetError, PKBatchSampler, build_datasets
from dml_core.params.datasets import DATASETS, DataConfig


def test_digits_default_zero_shot_split() -> None:
    splits = build_datasets(DataConfig.of())
    assert splits.train.class_names == ["0", "1", "2", "3", "4"]
    assert splits.test.class_names == ["5", "6", "7", "8", "9"]
    assert (len(splits.train), len(splits.test)) == (901, 896)  # load_digits' class sizes
    assert splits.num_channels == 1 and splits.recall_at == (1, 2, 4, 8) and splits.query is None
    assert splits.train.paths is None
    image, label = splits.test[0]
    assert image.shape == (1, 28, 28) and label == 0  # first test image is a '5' -> label 0
    assert -1.0 <= image.min() < image.max() <= 1.0


def test_digits_options_channels_and_ablation() -> None:
    splits = build_datasets(DataConfig.of(image_size=16, num_classes=3), out_channels=3, pretrained=True)
    assert splits.train.class_names == ["0", "1", "2"] and splits.test.num_classes == 5
    assert splits.train[0][0].shape == (3, 16, 16)
    assert build_datasets(DataConfig.of(train_classes=0.3)).train.num_classes == 3
    with pytest.raises(DatasetError, match="^data.num_classes: 6 exceeds the 5 training classes of digits$"):
        build_datasets(DataConfig.of(num_classes=6))
    with pytest.raises(ConfigError, match="^data.root: not a parameter of dataset digits"):
        DataConfig.of(root="/somewhere")  # rejected when the config is read, before any data


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_with_parameters_has_a_builder(name: str) -> None:
    assert callable(DATASETS.builder(name))  # its "module:function" imports


def test_digits_batches_end_to_end() -> None:
    splits = build_datasets(DataConfig.of(image_size=12))
    sampler = PKBatchSampler(splits.train.labels, classes_per_batch=4, samples_per_class=2, iterations=2, seed=0)
    x, y = next(iter(torch.utils.data.DataLoader(splits.train, batch_sampler=sampler)))
    assert x.shape == (8, 1, 12, 12) and torch.equal(y[0::2], y[1::2]) and len(set(y.tolist())) == 4

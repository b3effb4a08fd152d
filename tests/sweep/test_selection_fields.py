"""A dataset's selection fields, declared once on its parameter class, are what the data index,
the feature cache key and `--dry-run` key on: a dataset registered through the public API with
a field of its own that selects images is seen by all three, with no edit to any of them."""
from __future__ import annotations

from typing import Annotated, Iterator

import pytest
import torch

from dml_core.config import config_from_dict
from dml_core.data import ArrayDataset, DatasetSplits
from dml_core.data.index import data_index
from dml_core.data.splits import split_first_classes
from dml_core.params.datasets import DATASETS, SELECTS, DataConfig
from dml_core.training.features import cache_key
from sweep.checks import check_plan
from sweep.plan import SweepPlan
from sweep.spec import SweepError

NAME = "throwaway_shards"


def build_shards(cfg: DataConfig) -> DatasetSplits:
    """`shard` picks which images exist: shard s has 6 + 2 s classes of 4 images each."""
    classes = 6 + 2 * cfg.shard
    labels = torch.arange(classes).repeat_interleave(4)
    images = torch.rand(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(cfg.shard))
    full = ArrayDataset(images, labels.numpy(), [f"c{c}" for c in range(classes)])
    train, test = split_first_classes(full, classes // 2)
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=1)


@pytest.fixture
def shards() -> Iterator[type[DataConfig]]:
    @DATASETS.register(NAME, builder=build_shards)
    class ShardsData(DataConfig):
        shard: Annotated[int, SELECTS] = 0
        label: str = "not a selection field"

    try:
        yield ShardsData
    finally:
        DATASETS.unregister(NAME)


def test_the_declaration_is_the_list(shards: type[DataConfig]) -> None:
    # The base class's selecting fields (name, holdout, folds, ...) and the new one, read from the declaration.
    assert shards.selection_fields() == (*DataConfig.selection_fields(), "shard")
    assert {"name", "holdout", "num_classes"} <= set(DataConfig.selection_fields())
    assert "shard" not in DataConfig.selection_fields() and shards.path_fields() == ("cache_dir",)


def test_the_index_and_the_cache_key_see_a_new_selection_field(shards: type[DataConfig]) -> None:
    zero, one = (DataConfig.of(name=NAME, shard=s) for s in (0, 1))
    assert (data_index(zero).num_classes, data_index(one).num_classes) == (3, 4)
    experiment = {"data": {"name": NAME, "image_size": 8}, "model": {"pretrained": True}}
    keys = {s: cache_key(config_from_dict({**experiment, "data": {**experiment["data"], "shard": s}})) for s in (0, 1)}
    assert keys[0] != keys[1]
    relabelled = config_from_dict({**experiment, "data": {**experiment["data"], "label": "other"}})
    assert cache_key(relabelled) == keys[0]  # a field that selects nothing shares the features


def test_dry_run_checks_each_cell_against_its_own_selection(shards: type[DataConfig]) -> None:
    # P = 4 fits shard 1's 4 training classes, not shard 0's 3: only a check that tells the two
    # selections apart names the second cell.
    raw = {"data": {"name": NAME, "image_size": 8, "batch": {"classes_per_batch": 4, "samples_per_class": 2}},
           "model": {"embedding_dim": 8, "conv_blocks": 1, "conv_width": 8},
           "sweep": {"grid": {"data.shard": [1, 0]}}}
    plan = SweepPlan.from_dict(raw, "x.yaml")
    with pytest.raises(SweepError, match=r"^x\.yaml \[data\.shard=0/seed=0\]: data\.batch\.classes_per_batch: 4 classes"):
        check_plan(plan)

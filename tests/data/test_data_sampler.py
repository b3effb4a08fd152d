"""PKBatchSampler: P distinct classes x K contiguous instances, deterministic per (seed, epoch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dml_core.data import ArrayDataset, PKBatchSampler

# 6 classes; class 0 has one image, class 1 three, the rest five.
LABELS = np.array([0] + [1] * 3 + [2] * 5 + [3] * 5 + [4] * 5 + [5] * 5)


def _batches(sampler: PKBatchSampler) -> list[list[int]]:
    return [list(b) for b in sampler]


def test_batches_are_p_distinct_classes_of_k_contiguous_rows() -> None:
    sampler = PKBatchSampler(LABELS, classes_per_batch=3, samples_per_class=4, iterations=50, seed=0)
    batches = _batches(sampler)
    assert len(sampler) == len(batches) == 50
    for batch in batches:
        blocks = LABELS[batch].reshape(3, 4)
        assert (blocks == blocks[:, :1]).all()  # each block of K rows is one class
        assert len(set(blocks[:, 0])) == 3  # P distinct classes
        rows = LABELS[batch]
        assert (rows[0::2] == rows[1::2]).all()  # EE's positive pairs (2m, 2m+1)
    seen = {int(c) for b in batches for c in LABELS[b]}
    assert seen == set(range(6))  # small classes are sampled, not dropped


def test_small_classes_with_replacement_large_ones_without() -> None:
    sampler = PKBatchSampler(LABELS, classes_per_batch=6, samples_per_class=4, iterations=20, seed=1)
    for batch in _batches(sampler):
        for block in np.asarray(batch).reshape(6, 4):
            cls = LABELS[block[0]]
            if cls == 0:
                assert (block == 0).all()  # the only image, four times
            elif cls == 1:
                assert set(block) <= {1, 2, 3} and len(set(block)) < 4
            else:
                assert len(set(block)) == 4  # enough images: no repeats


def test_deterministic_per_seed_and_epoch() -> None:
    def make(seed: int) -> PKBatchSampler:
        return PKBatchSampler(LABELS, classes_per_batch=2, samples_per_class=2, iterations=10, seed=seed)

    a, b = make(7), make(7)
    assert _batches(a) == _batches(b) == _batches(a)  # repeatable until the epoch changes
    a.set_epoch(1)
    assert _batches(a) != _batches(b)
    b.set_epoch(1)
    assert _batches(a) == _batches(b)
    assert _batches(make(8)) != _batches(make(7))


def test_too_many_classes_per_batch_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"^data\.batch\.classes_per_batch: 7 classes per batch .* only 6 classes"):
        PKBatchSampler(LABELS, classes_per_batch=7, samples_per_class=2, iterations=1)


def test_drives_a_dataloader() -> None:
    images = torch.arange(len(LABELS), dtype=torch.float32).view(-1, 1, 1, 1)
    ds = ArrayDataset(images, LABELS, [str(c) for c in range(6)])
    sampler = PKBatchSampler(ds.labels, classes_per_batch=2, samples_per_class=2, iterations=3, seed=0)
    batches = list(DataLoader(ds, batch_sampler=sampler))
    assert len(batches) == 3
    for (x, y), indices in zip(batches, sampler):
        assert x.shape == (4, 1, 1, 1) and y.tolist() == LABELS[indices].tolist()
        assert x.view(-1).long().tolist() == indices

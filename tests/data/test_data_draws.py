"""Per-sample augmentation keyed by (seed, epoch, draw): the same batches whoever loads them."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from dml_core.config import DataConfig
from dml_core.data import PKBatchSampler, build_datasets
from dml_core.data.draws import Draw, KeyedBatches, KeyedSamples

# The in-memory digits with random crops: nothing decodes, yet the crops are random.
DIGITS = DataConfig.of(image_size=12, crop_scale=(0.3, 1.0), horizontal_flip=True)


def _keyed(seed: int = 0, iterations: int = 4) -> tuple[KeyedSamples, KeyedBatches]:
    train = build_datasets(DIGITS).train
    sampler = PKBatchSampler(train.labels, 3, 4, iterations, seed=seed)
    return KeyedSamples(train, seed), KeyedBatches(sampler)


def _epoch(samples: KeyedSamples, batches: KeyedBatches, epoch: int, workers: int) -> list[torch.Tensor]:
    batches.set_epoch(epoch)
    return [x for x, _ in DataLoader(samples, batch_sampler=batches, num_workers=workers)]


def test_draws_number_the_epoch_and_keep_the_sampler_batches() -> None:
    _, batches = _keyed()
    batches.set_epoch(2)
    plain = [list(b) for b in batches.batches]
    keyed = list(batches)
    assert [[d.index for d in b] for b in keyed] == plain
    assert [d.position for b in keyed for d in b] == list(range(4 * 12))
    assert {d.epoch for b in keyed for d in b} == {2}


def test_worker_count_changes_no_pixel() -> None:
    samples, batches = _keyed()
    alone = _epoch(samples, batches, 1, workers=0)
    for workers in (1, 2):
        assert all(torch.equal(a, b) for a, b in zip(alone, _epoch(samples, batches, 1, workers), strict=True))
    # ...while other epochs and seeds crop differently (the keys do reach the transform).
    assert not torch.equal(alone[0], _epoch(samples, batches, 2, workers=0)[0])
    other = _keyed(seed=1)[0]
    assert not torch.equal(other[Draw(0, 1, 0)][0], samples[Draw(0, 1, 0)][0])


def test_a_sample_drawn_twice_gets_two_augmentations_and_the_global_stream_is_untouched() -> None:
    samples, _ = _keyed()
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first, second = samples[Draw(5, 0, 0)][0], samples[Draw(5, 0, 1)][0]
    assert torch.rand(3).equal(expected)  # the main process' stream (training's) did not move
    assert not torch.equal(first, second)
    assert torch.equal(samples[Draw(5, 0, 1)][0], second)


def test_a_batch_fetch_gives_the_samples_one_by_one_and_leaves_the_stream_where_it_was() -> None:
    samples, batches = _keyed()
    batches.set_epoch(3)
    batch = next(iter(batches))
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    fetched = samples.__getitems__(batch)  # what the DataLoader calls, in the main process or a worker
    assert torch.rand(3).equal(expected)
    one_by_one = [samples[draw] for draw in batch]
    assert len(fetched) == len(one_by_one) == len(batch)
    for (x, y), (x1, y1) in zip(fetched, one_by_one, strict=True):
        assert torch.equal(x, x1) and y == y1
    assert len({x.sum().item() for x, _ in fetched}) > 1  # distinct crops, not one key reused


def test_a_failing_sample_leaves_the_stream_where_it_was() -> None:
    _, batches = _keyed()
    batch = next(iter(batches))

    class Broken:
        def __getitem__(self, index: int) -> None:
            torch.rand(5)  # moves the keyed stream, then fails as a bad file would
            raise OSError("unreadable")

    broken = KeyedSamples(Broken(), 0)  # type: ignore[arg-type]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with pytest.raises(OSError):
        broken.__getitems__(batch)
    assert torch.rand(3).equal(expected)

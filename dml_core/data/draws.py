"""Per-sample augmentation randomness keyed by (seed, epoch, draw), not by loader workers.

torchvision's random transforms draw from torch's default generator. Left alone, that is the
main process' generator with ``num_workers: 0`` and each worker's own stream otherwise, so the
same config and seed trained with a different worker count (a sweep trial gets ``cpu - 1``
workers, a single run the cores it has) crops and flips other pixels and ends at other numbers.

Here every sample the batch sampler draws carries its key: the epoch and its position among the
epoch's draws (`Draw`). `KeyedSamples` seeds torch's default generator from (run seed, epoch,
position) around that one sample's load + transform and restores the previous state afterwards,
so the result depends on nothing a worker, a core count or the run mode can change, and the
training loop's own random stream is untouched when samples load in the main process. The key
is the draw position rather than the dataset index so that a sample drawn twice in one epoch
(small classes are drawn with replacement) still gets two different augmentations.

A transform must therefore draw from torch's default generator (every torchvision.transforms.v2
transform does); Python's `random` and NumPy's global state are not keyed.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset, Sampler

from dml_core.data.sampler import PKBatchSampler


class Draw(NamedTuple):
    """One sample of an epoch: dataset ``index``, drawn ``position``-th in ``epoch``."""

    index: int
    epoch: int
    position: int


def draw_seed(seed: int, epoch: int, position: int) -> int:
    """A 64-bit seed for one draw: a hash of the three numbers, so neighbouring positions give
    unrelated streams rather than shifted copies (any int seed, negative ones included; ~1 us)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@contextmanager
def keyed_torch_rng(seed: int) -> Iterator[None]:
    """Torch's default (CPU) generator seeded with ``seed`` inside, its previous state restored after.

    Only the CPU generator: `torch.manual_seed` would also reseed every CUDA generator, i.e. the
    training loop's, when samples load in the main process.
    """
    generator = torch.default_generator
    saved = generator.get_state()
    generator.manual_seed(seed)
    try:
        yield
    finally:
        generator.set_state(saved)


class KeyedBatches(Sampler[list[Draw]]):
    """``PKBatchSampler``'s batches with each index tagged as a `Draw` of the sampler's epoch."""

    def __init__(self, batches: PKBatchSampler) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[Draw]]:
        epoch, position = self.batches.epoch, 0
        for batch in self.batches:
            yield [Draw(index, epoch, position + offset) for offset, index in enumerate(batch)]
            position += len(batch)


class KeyedSamples(Dataset):
    """``dataset[draw.index]`` loaded and transformed under the draw's own seed (see module doc)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, draw: Draw) -> Any:
        with keyed_torch_rng(draw_seed(self.seed, draw.epoch, draw.position)):
            return self.dataset[draw.index]

    def __getitems__(self, draws: list[Draw]) -> list[Any]:
        """A batch, as the DataLoader fetches it (in the main process or a worker): the same samples
        as ``[self[d] for d in draws]``, with the generator's state saved and restored once per
        batch instead of once per sample (a 5 KB copy each way, and the context manager)."""
        generator = torch.default_generator
        saved = generator.get_state()
        try:
            out = []
            for draw in draws:
                generator.manual_seed(draw_seed(self.seed, draw.epoch, draw.position))
                out.append(self.dataset[draw.index])
            return out
        finally:
            generator.set_state(saved)

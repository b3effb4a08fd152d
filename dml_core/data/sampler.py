"""Class-balanced P x K batches (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for
Person Re-Identification", 2017): each batch holds K instances of each of P distinct classes.

A class's K instances are contiguous in the batch, so with K even, rows (2m, 2m+1) are a positive
pair -- the pairing Embedding Expansion (Ko & Gu, CVPR 2020) interpolates between. Classes with
fewer than K images are drawn with replacement rather than dropped, so small classes (Omniglot
has 20 drawings per character, some SOP products 2 photos) still take part.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[int]]):
    """Yields ``iterations`` lists of P*K dataset indices; pass it as ``DataLoader(batch_sampler=...)``.

    Deterministic given ``seed`` and the epoch: call ``set_epoch(e)`` before each epoch for fresh
    batches (iterating twice without it repeats the same batches, like DistributedSampler).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        classes_per_batch: int,
        samples_per_class: int,
        iterations: int,
        seed: int = 0,
    ) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        if classes_per_batch < 1 or samples_per_class < 1 or iterations < 1:
            raise ValueError(
                f"PKBatchSampler: classes_per_batch, samples_per_class and iterations must be >= 1 "
                f"(got {classes_per_batch}, {samples_per_class}, {iterations})"
            )
        # Group indices by class once: a stable sort, then cut where the label changes.
        order = np.argsort(labels, kind="stable")
        self.classes, starts = np.unique(labels[order], return_index=True)
        self.members = np.split(order, starts[1:])
        if classes_per_batch > len(self.classes):
            raise ValueError(
                f"data.batch.classes_per_batch: {classes_per_batch} classes per batch but the "
                f"training split has only {len(self.classes)} classes"
            )
        self.classes_per_batch = classes_per_batch
        self.samples_per_class = samples_per_class
        self.iterations = iterations
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iterations

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        k = self.samples_per_class
        for _ in range(self.iterations):
            batch: list[int] = []
            for c in rng.choice(len(self.classes), self.classes_per_batch, replace=False):
                members = self.members[c]
                batch.extend(rng.choice(members, k, replace=len(members) < k).tolist())
            yield batch

"""Dataset base classes shared by every DML dataset.

Deep metric learning evaluates zero-shot: the test classes are never seen in training, so every
split is its own little classification problem with labels 0..C-1 *within that split*. The base
class keeps that invariant (``labels`` contiguous, ``class_names[label]`` names the class) and
provides the one operation every split rule, class-count ablation and dataset builder needs:
``select_classes``, which keeps some classes and re-indexes them.

Building a split imports no torch (the sweep driver checks every trial's data before anything
trains, and torch + torchvision would be the largest part of its start); a sample loaded from an
in-memory array is turned into a tensor only when it is read.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dml_core.params.datasets import DataConfig

if TYPE_CHECKING:
    import torch

Transform = Callable[[Any], "torch.Tensor"]


class DatasetError(ValueError):
    """A dataset on disk (or its config) is unusable; the one-line message names the file or field."""


# PIL reports undecodable data as OSError (incl. UnidentifiedImageError), ValueError or SyntaxError,
# and a header claiming more than twice Image.MAX_IMAGE_PIXELS as DecompressionBombError.
PIL_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_error(path: str | os.PathLike, error: BaseException) -> DatasetError:
    reason = " ".join(str(error).split()) or type(error).__name__  # one line, whatever PIL said
    return DatasetError(f"{path}: cannot decode image ({reason})")


def _to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grayscale image (PNG, TIFF: mode I;16* or I) scaled to 8 bits; PIL's convert('L')
    would clip it at 255 (a 16-bit ramp came out 99 % white). Other images are returned as they are."""
    if not (image.mode.startswith("I;16") or image.mode == "I"):
        return image
    pixels = np.asarray(image, dtype=np.float64)  # mode I holds 16-bit files' values, 0 .. 65535
    return Image.fromarray(np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8), "L")


class DMLDataset:
    """A split of a DML dataset: images with labels 0..C-1, ``class_names[c]`` naming class c.

    Subclasses store the samples (file paths, an in-memory array) and implement ``_load`` and
    ``_take``; ``__getitem__`` returns ``(transform(image), label)``.

    A map-style dataset for `torch.utils.data.DataLoader` (which needs only ``__getitem__`` and
    ``__len__``) without subclassing torch's `Dataset`, so that building one imports no torch.
    """

    paths: list[str] | None = None  # image files, or None for in-memory data

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        num_channels: int,
        transform: Transform | None = None,
    ) -> None:
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.class_names = list(class_names)
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        self.num_channels = num_channels
        self.transform = transform
        self._check_labels()

    # --- what subclasses provide -------------------------------------------------------------
    def _load(self, index: int) -> Any:
        """The raw sample (PIL image or CHW tensor) before the transform."""
        raise NotImplementedError

    def _take(self, indices: np.ndarray) -> DMLDataset:
        """A shallow copy holding only the samples at ``indices`` (labels are set by the caller)."""
        raise NotImplementedError

    # --- shared behaviour --------------------------------------------------------------------
    def _check_labels(self, every_class: bool = True) -> None:
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise DatasetError(f"{self.describe()}: empty split (no images)")
        present = np.unique(self.labels)
        if present[0] < 0 or present[-1] >= len(self.class_names):
            raise DatasetError(f"{self.describe()}: labels outside 0..{len(self.class_names) - 1}")
        if every_class and len(present) != len(self.class_names):
            # A silent gap would make class counts, NMI's k and proxy counts wrong downstream.
            raise DatasetError(
                f"{self.describe()}: labels must cover 0..{len(self.class_names) - 1} exactly "
                f"(found {len(present)} distinct labels for {len(self.class_names)} class names)"
            )

    def describe(self) -> str:
        return type(self).__name__

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self._load(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])

    def with_transform(self, transform: Transform | None) -> DMLDataset:
        """The same samples seen through another transform (a shallow copy; no data is copied)."""
        out = copy.copy(self)
        out.transform = transform
        return out

    def select_classes(self, classes: Sequence[int]) -> DMLDataset:
        """Keep only ``classes`` (label ids), re-indexed 0..len(classes)-1 in the order given."""
        classes = np.asarray(classes, dtype=np.int64)
        if len(classes) == 0:
            raise DatasetError(f"{self.describe()}: empty split (no classes selected)")
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[classes] = np.arange(len(classes))
        new_labels = remap[self.labels]
        keep = np.flatnonzero(new_labels >= 0)
        out = self._take(keep)
        out.labels = np.ascontiguousarray(new_labels[keep])
        out.class_names = [self.class_names[c] for c in classes]
        out._check_labels()
        return out

    def rows(self, indices: Sequence[int] | np.ndarray) -> DMLDataset:
        """The samples at ``indices`` in this split's label space (not re-indexed).

        For query/gallery views of one evaluation set: both keep the same labels and class
        names, so a label means the same item on both sides, even where one side lacks a class.
        """
        indices = np.asarray(indices, dtype=np.int64)
        out = self._take(indices)
        out.labels = np.ascontiguousarray(self.labels[indices])
        out._check_labels(every_class=False)
        return out

    def subset_classes(self, n: int) -> DMLDataset:
        """The first ``n`` classes (in ``class_names`` order), for class-count ablations."""
        if not 1 <= n <= self.num_classes:
            raise DatasetError(f"{self.describe()}: cannot keep {n} classes, the split has {self.num_classes}")
        return self.select_classes(range(n))


class ImageListDataset(DMLDataset):
    """Images on disk, opened with PIL and converted to 'L' (1 channel) or 'RGB' (3 channels)."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        num_channels: int = 3,
        transform: Transform | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        super().__init__(labels, class_names, num_channels, transform)

    def describe(self) -> str:
        # Name the folder so "empty split" errors point somewhere useful.
        return os.path.commonpath(self.paths) if self.paths else type(self).__name__

    def _load(self, index: int) -> Image.Image:
        path = self.paths[index]
        mode = "L" if self.num_channels == 1 else "RGB"
        try:
            with Image.open(path) as image:
                return _to_8_bit(image).convert(mode)  # convert() forces the decode inside the try
        except PIL_DECODE_ERRORS as e:
            raise decode_error(path, e) from None

    def _take(self, indices: np.ndarray) -> ImageListDataset:
        out = copy.copy(self)
        out.paths = [self.paths[i] for i in indices]
        return out


class ArrayDataset(DMLDataset):
    """Small in-memory image sets (the embedded digits): ``images`` is an (N, C, H, W) float array.

    A CPU tensor is accepted too; either is kept as a NumPy array (a tensor's memory is shared,
    not copied), and each sample is read as a tensor of the array's dtype.
    """

    def __init__(
        self,
        images: np.ndarray | torch.Tensor,
        labels: Sequence[int] | np.ndarray,
        class_names: Sequence[str],
        transform: Transform | None = None,
    ) -> None:
        images = np.asarray(images)
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"images must be (N, C, H, W) with N = {len(labels)} labels, got {tuple(images.shape)}")
        self.images = images
        super().__init__(labels, class_names, int(images.shape[1]), transform)

    def _load(self, index: int) -> torch.Tensor:
        import torch  # only when a sample is read: building and splitting the set need no torch

        return torch.from_numpy(self.images[index])  # a view, as indexing the tensor was

    def _take(self, indices: np.ndarray) -> ArrayDataset:
        out = copy.copy(self)
        out.images = self.images[indices]
        return out


@dataclass
class DatasetSplits:
    """What `build_datasets` returns. Retrieval datasets fill ``test``; In-Shop fills
    ``query``/``gallery`` instead (``test`` is None), both labelled in one shared label space."""

    train: DMLDataset
    test: DMLDataset | None
    query: DMLDataset | None = None
    gallery: DMLDataset | None = None
    recall_at: tuple[int, ...] = (1, 2, 4, 8)
    num_channels: int = 3

    def eval_splits(self) -> dict[str, DMLDataset]:
        """The non-training splits by name (``test``, or ``query`` and ``gallery``)."""
        names = ("test", "query", "gallery")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


# A builder (registered with its dataset in `dml_core.params.datasets`) reads one dataset layout
# from disk and returns untransformed splits; `build_datasets` then applies the class-count
# ablation and the transforms.
DatasetBuilder = Callable[[DataConfig], DatasetSplits]

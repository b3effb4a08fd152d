"""Dataset parameters: what `data:` accepts, per dataset (`data.name`).

Shared fields (batching, image sizes, holdout, class-count ablation, workers, caching) live on
`DataConfig`; a dataset adds the keys its layout reads. Each dataset also declares its standard
Recall@K list and whether it evaluates query -> gallery, so the metric names a run reports are
known when the config is loaded.
"""
from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from dml_core.registry import ComponentParams, ParamRegistry, _Strict

DATASET_PARAMS: ParamRegistry = ParamRegistry("dataset", section="data", discriminator="name", default="digits")


class BatchConfig(_Strict):
    """P x K class-balanced batches: K instances of each of P classes, contiguous."""

    classes_per_batch: int = Field(16, ge=1, description="P")
    samples_per_class: int = Field(4, ge=1, description="K")

    @property
    def size(self) -> int:
        return self.classes_per_batch * self.samples_per_class


class DataConfig(ComponentParams):
    registry: ClassVar[ParamRegistry] = DATASET_PARAMS
    # Standard Recall@K list of the dataset (eval.recall_at: null means this one).
    recall_at: ClassVar[tuple[int, ...]] = (1, 2, 4, 8)
    # Queries searched in a separate gallery (In-Shop) instead of each test item among the others.
    query_gallery: ClassVar[bool] = False

    name: str
    # `root`-like values are plain strings: the data layer expands ${DML_DATA} and `~`.
    # Hold out this fraction of the training classes as a class-disjoint validation set that
    # replaces the test split for evaluation (hyper-parameter search must not see test classes).
    holdout: Optional[float] = Field(None, gt=0, lt=1)
    # Reality-Check cross-validation (Musgrave et al. 2020): the training classes in `folds`
    # class-disjoint folds (contiguous in class order, sizes within one); train on all but fold
    # `fold`, evaluate on fold `fold` (the test split is dropped). Excludes `holdout`.
    folds: Optional[int] = Field(None, ge=2)
    fold: int = Field(0, ge=0)
    # Class-count ablation: train on the first N training classes only.
    num_classes: Optional[int] = Field(None, ge=2)
    image_size: int = Field(28, ge=8, description="train crop / test crop side, pixels")
    resize_size: Optional[int] = Field(None, description="test-time resize before centre crop; default image_size*256/224")
    crop_scale: tuple[float, float] = (0.2, 1.0)
    horizontal_flip: bool = True
    # Train geometry (`dml_core.data.transforms`): `random_resized_crop` (scale crop_scale; PA,
    # SEE) or `random_translation` (EE's reference: half the time a resize to image_size square,
    # else a resize to 1.125 x image_size square and a random image_size crop; no scale change).
    train_transform: Literal["random_resized_crop", "random_translation"] = "random_resized_crop"
    # Test geometry: `resize_center_crop` (resize_size, then a centre image_size crop) or
    # `resize_square` (EE's reference: resize to image_size x image_size, aspect not kept).
    test_transform: Literal["resize_center_crop", "resize_square"] = "resize_center_crop"
    # Resampling of every resize (SEE's reference: bicubic).
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    # DataLoader worker processes; None = auto (resolved by the trainer / sweep from the CPUs).
    num_workers: Optional[int] = Field(None, ge=0)
    batch: BatchConfig = BatchConfig()
    eval_batch_size: int = Field(256, ge=1)
    cache_features: bool = False
    cache_dir: Optional[str] = None
    download: bool = False

    @model_validator(mode="after")
    def _one_validation_split(self) -> "DataConfig":
        if self.folds is not None and self.holdout is not None:
            raise ValueError("folds: data.folds and data.holdout both carve validation classes out of training; use one")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold: {self.fold} is not one of the {self.folds} folds (0..{self.folds - 1})")
        return self

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError("must satisfy 0 < min <= max <= 1")
        return v


class _OneRootSplitByClass(DataConfig):
    """One folder, split class-disjointly: the first classes train (CUB, Cars)."""

    root: Optional[str] = None
    # A fraction (0-1) or a count of classes, in sorted class order; None = the standard half.
    train_classes: Optional[float] = None


class _FolderTree(_OneRootSplitByClass):
    """A class-folder tree: one `root` split by `train_classes`, or `train_root` + `test_root`."""

    train_root: Optional[str] = None
    test_root: Optional[str] = None

    @model_validator(mode="after")
    def _one_form(self) -> "_FolderTree":
        given = [f for f in ("train_root", "test_root") if getattr(self, f) is not None]
        if given and self.root is not None:
            raise ValueError(f"root: give either data.root (split by data.train_classes) or "
                             "data.train_root + data.test_root, not both")
        if len(given) == 1:
            missing = "test_root" if given == ["train_root"] else "train_root"
            raise ValueError(f"{missing}: required together with data.{given[0]}")
        if given and self.train_classes is not None:
            raise ValueError("train_classes: only applies to one data.root; with data.train_root/test_root the roots are the split")
        return self


class _PublishedSplit(DataConfig):
    """The split is published as list files (SOP, In-Shop): only the folder is configurable."""

    root: Optional[str] = None


@DATASET_PARAMS.register()
class DigitsData(DataConfig):
    """scikit-learn's bundled 8x8 digits: reads no folder."""

    name: Literal["digits"] = "digits"
    train_classes: Optional[float] = None


@DATASET_PARAMS.register()
class OmniglotData(_FolderTree):
    name: Literal["omniglot"] = "omniglot"


@DATASET_PARAMS.register()
class ImageFolderData(_FolderTree):
    name: Literal["image_folder"] = "image_folder"


@DATASET_PARAMS.register()
class CUB200Data(_OneRootSplitByClass):
    name: Literal["cub200"] = "cub200"


@DATASET_PARAMS.register()
class Cars196Data(_OneRootSplitByClass):
    name: Literal["cars196"] = "cars196"


@DATASET_PARAMS.register()
class SOPData(_PublishedSplit):
    recall_at: ClassVar[tuple[int, ...]] = (1, 10, 100, 1000)
    name: Literal["sop"] = "sop"


@DATASET_PARAMS.register()
class InShopData(_PublishedSplit):
    recall_at: ClassVar[tuple[int, ...]] = (1, 10, 20, 30, 40, 50)
    query_gallery: ClassVar[bool] = True
    name: Literal["inshop"] = "inshop"

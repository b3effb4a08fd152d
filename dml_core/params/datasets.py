"""Dataset parameters: what `data:` accepts, per dataset (`data.name`), and the registration
of every dataset (its name, these parameters and its builder in `dml_core/data/`).

Shared fields (batching, image sizes, holdout, class-count ablation, workers, caching) live on
`DataConfig`; a dataset adds the keys its layout reads. Each dataset also declares its standard
Recall@K list and whether it evaluates query -> gallery, so the metric names a run reports are
known when the config is loaded, and where to get it (`archives` to download, or `manual`).

What each data field is for is declared on the field, once (`Annotated[..., SELECTS]`,
`Annotated[..., PATH]`), and read by everything that must treat such fields alike:

- ``SELECTS``: the field changes which images are in a split (``name``, the roots,
  ``train_classes``, ``holdout``, ``num_classes``). The `--dry-run` data index and the feature
  cache key are keyed on these: a selection field either of them missed would reuse a stale index
  or stale cached features.
- ``PATH``: the field is a filesystem path, expanded by `dml_core.data.roots` (``${DML_DATA}``,
  ``~``) and made absolute by the sweep driver. A path that also selects (``root``) names the
  data; one that does not (``cache_dir``) only locates derived files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from dml_core.registry import ComponentParams, Kind, Strict


@dataclass(frozen=True)
class DataRole:
    """A marker in a data field's `Annotated` metadata (module docstring)."""

    role: str


SELECTS = DataRole("selects")
PATH = DataRole("path")


@dataclass(frozen=True)
class Archive:
    """One official, checksummed archive of a dataset (fetched by `dml_core.data.download`)."""

    url: str
    md5: str
    extracts_to: str  # the one folder the archive holds; present = already downloaded
    size: int | None = None  # bytes, where known
    default: bool = True  # fetched for a data.root that names none of the dataset's folders

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


DATASETS: Kind = Kind("dataset", section="data", discriminator="name")


class BatchConfig(Strict):
    """P x K class-balanced batches: K instances of each of P classes, contiguous."""

    classes_per_batch: int = Field(16, ge=1, description="P")
    samples_per_class: int = Field(4, ge=1, description="K")

    @property
    def size(self) -> int:
        return self.classes_per_batch * self.samples_per_class


class DataConfig(ComponentParams):
    kind: ClassVar[Kind] = DATASETS
    # Standard Recall@K list of the dataset (eval.recall_at: null means this one).
    recall_at: ClassVar[tuple[int, ...]] = (1, 2, 4, 8)
    # Queries searched in a separate gallery (In-Shop) instead of each test item among the others.
    query_gallery: ClassVar[bool] = False
    # Where to get the data: the archives `data.download` fetches (None: no direct download;
    # empty: nothing to fetch), else how to obtain it by hand ("{name}" is the dataset's name).
    archives: ClassVar[Optional[tuple[Archive, ...]]] = None
    manual: ClassVar[str] = "see its module docstring"

    name: Annotated[str, SELECTS]
    # Path values are plain strings: the data layer expands ${DML_DATA} and `~`.
    # Hold out this fraction of the training classes as a class-disjoint validation set that
    # replaces the test split for evaluation (hyper-parameter search must not see test classes).
    holdout: Annotated[Optional[float], SELECTS] = Field(None, gt=0, lt=1)
    # Reality-Check cross-validation (Musgrave et al. 2020): the training classes in `folds`
    # class-disjoint folds (contiguous in class order, sizes within one); train on all but fold
    # `fold`, evaluate on fold `fold` (the test split is dropped). Excludes `holdout`.
    folds: Annotated[Optional[int], SELECTS] = Field(None, ge=2)
    fold: Annotated[int, SELECTS] = Field(0, ge=0)
    # Class-count ablation: train on the first N training classes only.
    num_classes: Annotated[Optional[int], SELECTS] = Field(None, ge=2)
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
    cache_dir: Annotated[Optional[str], PATH] = None
    download: bool = False

    @model_validator(mode="after")
    def _one_validation_split(self) -> "DataConfig":
        if self.folds is not None and self.holdout is not None:
            raise ValueError("folds: data.folds and data.holdout both carve validation classes out of training; use one")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold: {self.fold} is not one of the {self.folds} folds (0..{self.folds - 1})")
        return self

    @classmethod
    def fields_with(cls, role: DataRole) -> tuple[str, ...]:
        """This dataset's fields marked ``role`` (a dataset has only the fields its layout reads)."""
        # `name` is re-declared as a Literal by the registration; it selects all the same.
        marked = (n for n, f in cls.model_fields.items() if role in f.metadata or (role is SELECTS and n == "name"))
        return tuple(marked)

    @classmethod
    def selection_fields(cls) -> tuple[str, ...]:
        """The fields that choose which images are in each split (module docstring)."""
        return cls.fields_with(SELECTS)

    @classmethod
    def path_fields(cls) -> tuple[str, ...]:
        """The fields that hold filesystem paths."""
        return cls.fields_with(PATH)

    @classmethod
    def data_roots(cls) -> tuple[str, ...]:
        """The path fields that name the data itself (``root``, ``train_root``, ``test_root``)."""
        return tuple(f for f in cls.path_fields() if f in cls.selection_fields())

    def selection(self) -> dict[str, Any]:
        """This config's selection fields and their values (JSON types)."""
        dumped = self.model_dump(mode="json")
        return {k: dumped[k] for k in self.selection_fields()}

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError("must satisfy 0 < min <= max <= 1")
        return v


class _OneRootSplitByClass(DataConfig):
    """One folder, split class-disjointly: the first classes train (CUB, Cars)."""

    root: Annotated[Optional[str], PATH, SELECTS] = None
    # A fraction (0-1) or a count of classes, in sorted class order; None = the standard half.
    train_classes: Annotated[Optional[float], SELECTS] = None


class _FolderTree(_OneRootSplitByClass):
    """A class-folder tree: one `root` split by `train_classes`, or `train_root` + `test_root`."""

    train_root: Annotated[Optional[str], PATH, SELECTS] = None
    test_root: Annotated[Optional[str], PATH, SELECTS] = None

    @model_validator(mode="after")
    def _one_form(self) -> "_FolderTree":
        given = [f for f in ("train_root", "test_root") if getattr(self, f) is not None]
        if given and self.root is not None:
            raise ValueError("root: give either data.root (split by data.train_classes) or "
                             "data.train_root + data.test_root, not both")
        if len(given) == 1:
            missing = "test_root" if given == ["train_root"] else "train_root"
            raise ValueError(f"{missing}: required together with data.{given[0]}")
        if given and self.train_classes is not None:
            raise ValueError("train_classes: only applies to one data.root; with data.train_root/test_root the roots are the split")
        return self


class _PublishedSplit(DataConfig):
    """The split is published as list files (SOP, In-Shop): only the folder is configurable."""

    root: Annotated[Optional[str], PATH, SELECTS] = None


# Omniglot's archives are in the `python/` folder of the official repository (brendenlake/omniglot):
# the full images_background / images_evaluation (MD5s as torchvision has them) and the two small
# background subsets (sizes and MD5s of the files in that repository). CUB's is the CaltechDATA
# record 65de6-vp158 the DML literature uses. Tests replace `archives` with loopback URLs.
OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"


@DATASETS.register("digits", builder="dml_core.data.digits:build", default=True)
class DigitsData(DataConfig):
    """scikit-learn's bundled 8x8 digits: reads no folder."""

    archives: ClassVar[Optional[tuple[Archive, ...]]] = ()  # bundled with scikit-learn
    train_classes: Annotated[Optional[float], SELECTS] = None


@DATASETS.register("omniglot", builder="dml_core.data.omniglot:build")
class OmniglotData(_FolderTree):
    archives: ClassVar[Optional[tuple[Archive, ...]]] = (
        Archive(f"{OMNIGLOT_URL}/images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", "images_background"),
        Archive(f"{OMNIGLOT_URL}/images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", "images_evaluation"),
        Archive(f"{OMNIGLOT_URL}/images_background_small1.zip", "e704a628b5459e08445c13499850abc4",
                "images_background_small1", size=1_319_022, default=False),
        Archive(f"{OMNIGLOT_URL}/images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd",
                "images_background_small2", size=1_580_917, default=False),
    )


@DATASETS.register("image_folder", builder="dml_core.data.image_folder:build")
class ImageFolderData(_FolderTree):
    manual: ClassVar[str] = "{name} reads your own folder; there is nothing to download"


@DATASETS.register("cub200", builder="dml_core.data.cub200:build")
class CUB200Data(_OneRootSplitByClass):
    archives: ClassVar[Optional[tuple[Archive, ...]]] = (
        Archive("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                "97eceeb196236b17998738112f37df78", "CUB_200_2011"),
    )


@DATASETS.register("cars196", builder="dml_core.data.cars196:build")
class Cars196Data(_OneRootSplitByClass):
    manual: ClassVar[str] = ("get car_ims.tgz and cars_annos.mat (Krause et al., Stanford Cars) from a mirror; "
                             "extract into data.root")


@DATASETS.register("sop", builder="dml_core.data.sop:build")
class SOPData(_PublishedSplit):
    recall_at: ClassVar[tuple[int, ...]] = (1, 10, 100, 1000)
    manual: ClassVar[str] = ("get Stanford_Online_Products.zip from https://cvgl.stanford.edu/projects/lifted_struct/; "
                             "extract into data.root")


@DATASETS.register("inshop", builder="dml_core.data.inshop:build")
class InShopData(_PublishedSplit):
    recall_at: ClassVar[tuple[int, ...]] = (1, 10, 20, 30, 40, 50)
    query_gallery: ClassVar[bool] = True
    manual: ClassVar[str] = (
        "request DeepFashion In-Shop access at http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html; "
        "put list_eval_partition.txt and img/ in data.root"
    )

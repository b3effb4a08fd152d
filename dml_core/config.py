"""Typed experiment configuration: YAML -> validated `ExperimentConfig`, with `--set` overrides.

One YAML file serves both a single run (`python -m dml_core.train`) and a sweep
(`python sweep/run.py`): the trainer validates everything except the top-level `sweep:` block,
which it keeps verbatim for the sweep layer and otherwise ignores.

Every error a user can make here becomes a `ConfigError` whose message is one line naming the
file and the dotted field, e.g. ``experiments/x.yaml: optimizer.lr: Input should be a valid number``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A user's configuration mistake; the message is one line that names the field or file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BatchConfig(_Strict):
    """P x K class-balanced batches: K instances of each of P classes, contiguous."""

    classes_per_batch: int = Field(16, ge=1, description="P")
    samples_per_class: int = Field(4, ge=1, description="K")

    @property
    def size(self) -> int:
        return self.classes_per_batch * self.samples_per_class


class DataConfig(_Strict):
    name: Literal["digits", "omniglot", "image_folder", "cub200", "cars196", "sop", "inshop"] = "digits"
    # Dataset folder. For image_folder/omniglot it may hold all classes (split class-disjointly by
    # `train_classes`) -- or give `train_root` and `test_root` separately instead.
    root: Optional[str] = None
    train_root: Optional[str] = None
    test_root: Optional[str] = None
    # Class-disjoint split of one root: a fraction (0-1) or a count of classes, taken in sorted
    # class order (standard for CUB/Cars: first half trains); `None` = the dataset's standard split.
    train_classes: Optional[float] = None
    # Hold out this fraction of the training classes as a class-disjoint validation set that
    # replaces the test split for evaluation (hyper-parameter search must not see test classes).
    holdout: Optional[float] = Field(None, gt=0, lt=1)
    # Class-count ablation: train on the first N training classes only.
    num_classes: Optional[int] = Field(None, ge=2)
    image_size: int = Field(28, ge=8, description="train crop / test crop side, pixels")
    resize_size: Optional[int] = Field(None, description="test-time resize before centre crop; default image_size*256/224")
    crop_scale: tuple[float, float] = (0.2, 1.0)
    horizontal_flip: bool = True
    # Omniglot and digits are grayscale: with a 3-channel pretrained backbone they are repeated to RGB.
    num_workers: Optional[int] = Field(None, ge=0, description="DataLoader workers; null = auto (dml_core.data.loading)")
    batch: BatchConfig = BatchConfig()
    eval_batch_size: int = Field(256, ge=1)
    cache_features: bool = False
    cache_dir: Optional[str] = None
    download: bool = False

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not (0 < v[0] <= v[1] <= 1):
            raise ValueError("must satisfy 0 < min <= max <= 1")
        return v


class ModelConfig(_Strict):
    backbone: Literal["small_conv", "resnet18", "resnet50", "googlenet"] = "small_conv"
    pretrained: bool = False
    embedding_dim: int = Field(128, ge=2)
    pooling: Literal["avg", "avg_max"] = "avg"
    freeze_bn: bool = False
    freeze_backbone: bool = False
    # small_conv only: number of conv blocks and channel width.
    conv_blocks: int = Field(4, ge=1, le=6)
    conv_width: int = Field(64, ge=8)


class LossConfig(BaseModel):
    """`name` picks the loss from the registry; every other key is a constructor argument.

    The extra keys are checked against the loss's signature when the config is loaded
    (see `validate_experiment`), so `loss.margni: 0.1` fails at load with a suggestion.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "multi_similarity"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ExpansionConfig(_Strict):
    """Synthetic embeddings added to each batch: none, EE (Ko & Gu 2020) or SEE (Le & Woo 2024)."""

    name: Literal["none", "ee", "see"] = "none"
    # EE: interior points per positive pair; SEE: synthetic points per expanded sample (n_expan).
    n_inner_pts: int = Field(2, ge=0)
    # EE
    l2_norm: bool = True
    # SEE
    lam: float = Field(0.2, ge=0)
    threshold_type: Literal[0, 1] = 1
    threshold_max: float = 0.4
    threshold_min: float = 0.04
    threshold_lower_bound: float = 0.0
    detach: bool = True
    center: Literal["auto", "proxy", "centroid"] = "auto"

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    # Per-group learning rates; None = `lr` (loss_lr: proxies, usually lr x 100..10^4).
    backbone_lr: Optional[float] = Field(None, gt=0)
    head_lr: Optional[float] = Field(None, gt=0)
    loss_lr: Optional[float] = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)


class SchedulerConfig(_Strict):
    name: Literal["none", "cosine", "step", "multistep"] = "none"
    step_size: int = Field(10, ge=1, description="epochs, for step")
    milestones: list[int] = Field(default_factory=list, description="epochs, for multistep")
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    # Batches per epoch; None = one pass worth of images (len(train) // batch size).
    iterations_per_epoch: Optional[int] = Field(None, ge=1)
    eval_every: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16"] = "none"
    grad_clip: Optional[float] = Field(None, gt=0)
    checkpoint: bool = True
    # Threads torch may use on CPU; None leaves torch's default.
    num_threads: Optional[int] = Field(None, ge=1)


class EvalConfig(_Strict):
    # Recall@K list; None = the dataset's standard list (CUB/Cars 1,2,4,8; SOP 1,10,100,1000; ...).
    recall_at: Optional[list[int]] = None
    clustering: bool = True
    primary_metric: str = "recall_at_1"
    # Faiss k-means iterations for NMI/F1.
    kmeans_iters: int = Field(20, ge=1)


class ExperimentConfig(_Strict):
    name: str = "experiment"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    expansion: ExpansionConfig = ExpansionConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    # Read by `sweep/`, ignored by the trainer: one YAML serves a single run and a sweep.
    sweep: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _cross_field(self) -> "ExperimentConfig":
        if self.expansion.name == "ee" and self.data.batch.samples_per_class % 2:
            raise ValueError(
                f"data.batch.samples_per_class: EE pairs rows (2m, 2m+1) of each class, so K must be even (got {self.data.batch.samples_per_class})"
            )
        if self.expansion.name == "see" and self.model.embedding_dim < self.expansion.n_inner_pts + 2:
            raise ValueError(
                f"model.embedding_dim: SEE with n_inner_pts={self.expansion.n_inner_pts} needs embedding_dim >= n_inner_pts + 2 (got {self.model.embedding_dim})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML-able dict, `sweep:` block included (exclude it yourself where unwanted)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{more}"


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: `0.1` -> float, `[1,2]` -> list, `none` -> 'none'."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `tree['a']['b'] = value` for `dotted = 'a.b'`, creating dicts on the way."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a section")
        node = nxt
    node[parts[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.sub=value")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    tree = copy.deepcopy(raw)
    for key, value in overrides.items():
        set_dotted(tree, key, value)
    return tree


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
    validate_experiment(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate one experiment YAML."""
    raw = read_yaml(path)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw = apply_overrides(raw, overrides or {})
    return config_from_dict(raw, str(path))


def validate_experiment(cfg: ExperimentConfig, source: str = "<config>") -> None:
    """Checks that need the registries: loss name and parameters, loss/expansion compatibility."""
    from dml_core.losses import check_loss_config  # late: losses import torch

    try:
        check_loss_config(cfg.loss.name, cfg.loss.params, cfg.expansion.as_dict())
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

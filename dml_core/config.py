"""Typed experiment configuration: YAML -> validated `ExperimentConfig`, with `--set` overrides.

One YAML file serves both a single run (`python -m dml_core.train`) and a sweep
(`python sweep/run.py`): the trainer validates everything except the top-level `sweep:` block,
which it keeps verbatim for the sweep layer and otherwise ignores.

Every error a user can make here becomes a `ConfigError` whose message is one line naming the
file and the dotted field, e.g. ``experiments/x.yaml: optimizer.lr: Input should be a valid number``.
"""
from __future__ import annotations

import copy
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from dml_core.errors import ConfigError, first_line, format_validation_error
from dml_core.evaluation.names import check_metric_name, metric_names
from dml_core.io import atomic_write_text, check_folder_name
from dml_core.params import SECTIONS, DataConfig, ExpansionConfig, LossConfig, ModelConfig
from dml_core.registry import Strict

__all__ = ["ExperimentConfig", "config_from_dict", "experiment_model", "load_config", "read_yaml"]


class OptimizerConfig(Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    # Per-group learning rates; None = `lr` (loss_lr: proxies, usually lr x 100..10^4).
    backbone_lr: Optional[float] = Field(None, gt=0)
    head_lr: Optional[float] = Field(None, gt=0)
    loss_lr: Optional[float] = Field(None, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    # Decay the loss's parameters (proxies) too. Proxy-Anchor's and SEE's reference code do (their
    # proxy group inherits the optimizer's weight decay); false keeps the proxies undecayed.
    weight_decay_on_loss: bool = True
    momentum: float = Field(0.9, ge=0)
    # Adam / AdamW denominator epsilon. SEE's reference uses 1e-4 with fp16 (1e-8 otherwise).
    eps: float = Field(1e-8, gt=0)
    # Where eps enters Adam's denominator: `torch` adds it to sqrt(v) / sqrt(1 - beta2^t) (after
    # the bias correction), `mxnet` to sqrt(v) before it, as MXNet's Adam (EE's reference) does;
    # realised by setting torch's eps to eps / sqrt(1 - beta2^t) at each step t.
    eps_mode: Literal["torch", "mxnet"] = "torch"


class SchedulerConfig(Strict):
    """The lr multiplier over training (`dml_core.training.optim.lr_factor`), applied per iteration.

    `constant` (alias `none`): 1 throughout (SEE's reference without --lr_decay);
    `multistep`: x gamma at each of `milestones`, absolute 0-based epochs (EE's reference: 0.5
    at 400/800/1200/1600); `step`: x gamma every `step_size` epochs after the warm-up; `cosine`.
    """

    name: Literal["constant", "cosine", "step", "multistep"] = "constant"
    step_size: int = Field(10, ge=1, description="epochs, for step")
    milestones: list[int] = Field(default_factory=list, description="epochs, for multistep")
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    # A milestone's decay starts this many iterations into its epoch. 1 = MXNet's
    # MultiFactorScheduler (EE's reference), which decays once the update count exceeds the
    # milestone, i.e. from the second iteration of that epoch.
    milestone_delay_iters: int = Field(0, ge=0)
    # The backbone's lr is 0 for the first N epochs (head and proxies train; Adam's moments still
    # accumulate, as in SEE's reference "warm-up").
    backbone_frozen_epochs: int = Field(0, ge=0)

    @field_validator("name", mode="before")
    @classmethod
    def _none_is_constant(cls, v: Any) -> Any:
        return "constant" if v == "none" else v  # `none`: the name before `constant`

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(m < 0 for m in v) or sorted(set(v)) != v:
            raise ValueError(f"must be strictly increasing epochs >= 0, got {v}")
        return v


class TrainConfig(Strict):
    epochs: int = Field(10, ge=1)
    # Batches per epoch; None = from `epoch_length`.
    iterations_per_epoch: Optional[int] = Field(None, ge=1)
    # What one epoch is when iterations_per_epoch is None: `images` = one pass worth of images
    # (len(train) // batch size); `classes` = every training class once with K images
    # (classes x K // batch size), EE's reference "epoch" (98 x 32 // 128 = 24 on Cars196).
    epoch_length: Literal["images", "classes"] = "images"
    eval_every: int = Field(1, ge=1)
    # No evaluation before this (1-based) epoch, except the last. SEE's reference evaluates only
    # once its warm-up (frozen backbone) epochs are over: 2 with one warm-up epoch.
    eval_from_epoch: int = Field(1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16"] = "none"
    # Gradient norm clipping of the model's parameters (torch clip_grad_norm_).
    grad_clip: Optional[float] = Field(None, gt=0)
    # Elementwise clamp of every gradient (model and loss parameters) to [-v, v], after norm
    # clipping: SEE's reference with --clip_grad on (v = 10).
    grad_clamp: Optional[float] = Field(None, gt=0)
    # Multiply the model's gradients (not the loss parameters') by this after backward, before
    # clipping. 0.5 is what SEE's 2-GPU reference computes: each rank back-propagates the loss
    # of the all-gathered global batch into its own half only, and DDP averages the model's
    # gradients over the 2 ranks, while the proxies (outside DDP) keep the full gradient.
    model_grad_scale: float = Field(1.0, gt=0)
    checkpoint: bool = True
    # Threads torch may use on CPU; None leaves torch's default.
    num_threads: Optional[int] = Field(None, ge=1)


class EvalConfig(Strict):
    # Recall@K list; None = the dataset's standard list (CUB/Cars 1,2,4,8; SOP 1,10,100,1000; ...).
    recall_at: Optional[list[Annotated[int, Field(ge=1)]]] = Field(None, min_length=1)
    clustering: bool = True
    primary_metric: str = "recall_at_1"
    # Faiss k-means iterations for NMI/F1.
    kmeans_iters: int = Field(20, ge=1)
    # kNN + k-means backend (dml_core.evaluation.knn.BACKENDS): auto = torch on CUDA, else faiss.
    knn_backend: Literal["auto", "faiss", "torch"] = "auto"

    @field_validator("recall_at")
    @classmethod
    def _distinct(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"repeated values {v}")
        return v


class ExperimentConfig(Strict):
    """A validated experiment: what every reader of a config types it as.

    The component sections are typed by their kind's base class here; the model that validates
    them against the registered components is `experiment_model()`, a subclass, so every config
    that `config_from_dict` returns is an `ExperimentConfig`.
    """

    name: str = "experiment"  # names the run folder (runs/<name>-<time>) and a sweep's default folder
    # numpy, torch and Python's random all take 0 .. 2**32 - 1.
    seed: int = Field(0, ge=0, lt=2**32)
    # Component sections: one parameter model per registered dataset / backbone / loss /
    # expansion (`dml_core.params`), chosen by `data.name`, `model.backbone`, `loss.name`,
    # `expansion.name`; narrowed to the registered components by `experiment_model()`.
    data: DataConfig = Field(default_factory=SECTIONS["data"].default_params)
    model: ModelConfig = Field(default_factory=SECTIONS["model"].default_params)
    loss: LossConfig = Field(default_factory=SECTIONS["loss"].default_params)
    expansion: ExpansionConfig = Field(default_factory=SECTIONS["expansion"].default_params)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    # Read by `sweep/`, ignored by the trainer: one YAML serves a single run and a sweep.
    sweep: Optional[dict[str, Any]] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_folder_name(v)

    @model_validator(mode="after")
    def _cross_field(self) -> "ExperimentConfig":
        k = self.data.batch.samples_per_class
        if self.loss.family == "pair" and k < 2:
            raise ValueError(f"data.batch.samples_per_class: {self.loss.name} is pair-based and K = {k} gives it no "
                             "positive pairs (it would train on a loss of 0); use K >= 2")
        self.expansion.check(self.loss, self.model.embedding_dim, k)
        check_metric_name(self.eval.primary_metric, self.metric_names(), "eval.primary_metric")
        return self

    @property
    def recall_at(self) -> tuple[int, ...]:
        """The Recall@K list evaluated: `eval.recall_at`, else the dataset's standard one."""
        return tuple(self.eval.recall_at) if self.eval.recall_at else self.data.recall_at

    def metric_names(self) -> tuple[str, ...]:
        """Every metric a run of this config reports per evaluation (the trainer adds `loss`)."""
        return ("loss", *metric_names(self.recall_at, self.eval.clustering))

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML-able dict, `sweep:` block included (exclude it yourself where unwanted)."""
        return self.model_dump(mode="json")


_built: tuple[tuple[int, ...], type[ExperimentConfig]] | None = None


def experiment_model() -> type[ExperimentConfig]:
    """The model that validates experiment configs: `ExperimentConfig` with each component section
    a discriminated union of its kind's registered parameter models (`Kind.union`).

    Built from the kinds as they are when it is called, and built again once a component has
    been registered since (a kind's `version` changes), so a component registered after this
    module was imported -- in a script, a plugin, a test -- is accepted from then on.
    """
    global _built
    versions = tuple(kind.version for kind in SECTIONS.values())
    if _built is None or _built[0] != versions:
        sections = {section: (kind.union(), Field(default_factory=kind.default_params)) for section, kind in SECTIONS.items()}
        model = create_model("ExperimentModel", __base__=ExperimentConfig, __module__=__name__, **sections)
        _built = (versions, model)
    return _built[1]


def __getattr__(name: str) -> Any:
    # Pickle finds a validated config's class by this name (`experiment_model().__qualname__`).
    if name == "ExperimentModel":
        return experiment_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- loading


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars/lists: `0.1` -> float, `[1,2]` -> list, `none` -> 'none'."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def get_dotted(tree: Any, dotted: str) -> Any:
    """`tree['a']['b']` for `dotted = 'a.b'`; None where a part is missing or not a section."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`: every leaf by its dotted key (an empty section is a leaf)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out |= flatten_config(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


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
        key = key.strip()
        if not all(key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key part in {key!r}; expected key.sub=value")
        out[key] = parse_value(value)
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`raw` with the dotted `overrides` set.

    An override that switches a section's component (``expansion.name=none``,
    ``model.backbone=<another>``) drops the base's keys that belong to the old component only,
    so an arm or ``--set`` can switch components; keys the overrides set are kept (and
    validated against the new component).
    """
    tree = copy.deepcopy(raw)
    for key, value in overrides.items():
        set_dotted(tree, key, value)
    for kind, registry in SECTIONS.items():
        switch = f"{kind}.{registry.discriminator}"
        old = (raw.get(kind) or {}) if isinstance(raw.get(kind), dict) else {}
        if switch not in overrides or old.get(registry.discriminator, registry.default) == overrides[switch]:
            continue
        new_tag = registry.tag_of(overrides[switch])
        if new_tag not in registry or not isinstance(tree.get(kind), dict):
            continue  # validation names the unknown component
        accepted = registry.get(new_tag).model_fields
        set_here = {k.split(".")[1] for k in overrides if k.startswith(f"{kind}.")}
        for key in [k for k in old if k not in accepted and k not in set_here]:
            tree[kind].pop(key, None)
    return tree


def _count_values(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """How many values `node` expands to (aliases share their node: each is counted once per use)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_:
        raise _Refused(f"line {node.start_mark.line + 1}: an alias refers to the value that contains it")
    open_.add(id(node))
    children = (node.value if isinstance(node, yaml.SequenceNode)
                else [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
    total = 1 + sum(_count_values(child, sizes, open_) for child in children)
    open_.discard(id(node))
    if total > MAX_YAML_VALUES:
        raise _Refused(f"line {node.start_mark.line + 1}: aliases expand this value to more than {MAX_YAML_VALUES} values")
    sizes[id(node)] = total
    return total


class _Refused(yaml.YAMLError):
    """A document the loader refuses (a key it cannot hold, an alias bomb); the message follows the file name."""


class _DuplicateKey(_Refused):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first set on line {first})")


# Values a YAML may expand to, aliases counted each time they are used. A config has hundreds; a
# kilobyte of nested anchors (`a: &a [1,1,..]`, `b: &b [*a,*a,..]`, ...) expands to millions, which
# were validated, trained and written out (a 20 MB config.yaml) or echoed in one error line.
MAX_YAML_VALUES = 100_000


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that rejects a key repeated in one mapping (PyYAML keeps the last silently)
    and a document whose aliases expand to more than `MAX_YAML_VALUES` values."""

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _count_values(node, {}, set())
        return self.construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` entries are meant to be overridden
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):  # `? [1, 2]`: PyYAML would fail with a TypeError
                kind = "list" if isinstance(key, list) else "mapping" if isinstance(key, dict) else type(key).__name__
                raise _Refused(f"line {line}: a key must be a plain value (a string or number), not a {kind}")
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read this file ({e.strerror or e})") from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)
    except _Refused as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if raw is None:  # every setting defaulted would train digits on a config nobody wrote
        raise ConfigError(f"{path}: empty; an experiment YAML needs at least `data:`")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a raw config (pydantic only: no loss, model or dataset is built)."""
    try:
        return experiment_model().model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, model=ExperimentConfig, unions=SECTIONS)) from None


def config_from_dump(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """A config this program wrote (a checkpoint's or run directory's), old layouts included.

    Before components owned their parameters, every section was dumped with every key of every
    component (`model.conv_blocks` for a ResNet, SEE's keys under `expansion: none`, SEE's count
    as `n_inner_pts`). Those keys were inert, so they are dropped here -- for machine-written
    configs only; a user's YAML with such a key is an error.
    """
    tree = copy.deepcopy(raw)
    for kind, registry in SECTIONS.items():
        section = tree.get(kind)
        if not isinstance(section, dict):
            continue
        tag = registry.tag_of(section.get(registry.discriminator, registry.default))
        if tag not in registry:
            continue
        fields = registry.get(tag).model_fields
        if kind == "expansion" and "n_expan" in fields and "n_expan" not in section and "n_inner_pts" in section:
            section["n_expan"] = section["n_inner_pts"]  # SEE's count had EE's name
        tree[kind] = {k: v for k, v in section.items() if k in fields}
    return config_from_dict(tree, source)


def load_config(path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate one experiment YAML."""
    raw = read_yaml(path)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    raw = apply_overrides(raw, overrides or {})
    return config_from_dict(raw, str(path))


def dump_config(cfg: ExperimentConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

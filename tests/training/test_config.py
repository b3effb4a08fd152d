from pathlib import Path

import pytest

from dml_core.config import ExperimentConfig, config_from_dict, load_config
from dml_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(text)
    return p


def test_quickstart_loads_and_sweep_block_is_kept_opaque():
    cfg = load_config(REPO / "experiments" / "quickstart.yaml")
    assert cfg.data.name == "digits"
    assert cfg.sweep is None or isinstance(cfg.sweep, dict)


def test_overrides_are_typed(tmp_path):
    p = write(tmp_path, "data: {name: digits}\n")
    cfg = load_config(p, ["optimizer.lr=3e-4", "model.embedding_dim=32", "expansion.name=ee", "data.crop_scale=[0.5, 1.0]"])
    assert cfg.optimizer.lr == pytest.approx(3e-4)
    assert cfg.model.embedding_dim == 32
    assert cfg.expansion.name == "ee"
    assert cfg.data.crop_scale == (0.5, 1.0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data: {name: digits\n", "malformed YAML"),
        ("modle: {}\n", "modle: unknown key"),
        ("model: {embeding_dim: 3}\n", "model.embeding_dim: not a parameter of backbone small_conv"),
        ("optimizer: {lr: fast}\n", "optimizer.lr"),
        ("data: {name: cifar}\n", "data.name"),
        ("loss: {name: tripplet}\n", "triplet"),
        ("loss: {name: triplet, margni: 0.1}\n", "margni"),
        ("expansion: {name: ee}\ndata: {batch: {samples_per_class: 3}}\n", "data.batch.samples_per_class"),
        ("expansion: {name: see, n_expan: 8}\nmodel: {embedding_dim: 8}\nloss: {name: proxy_anchor}\n", "model.embedding_dim"),
        ("- just\n- a list\n", "top level must be a mapping"),
    ],
)
def test_bad_config_is_one_line_naming_the_field(tmp_path, text, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert "\n" not in msg
    assert expected in msg
    assert str(p) in msg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_bad_override_syntax(tmp_path):
    p = write(tmp_path, "{}\n")
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(p, ["optimizer.lr"])


def test_defaults_validate():
    ExperimentConfig()


# --------------------------------------------------------------------- issue 10: component sections


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"model": {"backbone": "resnet18", "conv_blocks": 6}},
         "model.conv_blocks: not a parameter of backbone resnet18; it belongs to backbone small_conv"),
        ({"expansion": {"name": "none", "lam": 5.0, "threshold_max": 0.9}},
         "expansion.lam: not a parameter of expansion none; it belongs to expansion see"),
        ({"eval": {"primary_metric": "recall_at_7"}},
         "eval.primary_metric: 'recall_at_7' is not reported by this run (did you mean 'recall_at_8'?)"),
        ({"data": {"name": "sop", "root": "/x", "train_root": "/y"}},
         "data.train_root: not a parameter of dataset sop"),
        ({"eval": {"recall_at": [0, 1]}}, "eval.recall_at.0: Input should be greater than or equal to 1"),
        ({"expansion": {"name": "see", "n_inner_pts": 4}, "loss": {"name": "proxy_anchor"}},
         "expansion.n_inner_pts: SEE's synthetic points per sample are expansion.n_expan"),
        ({"loss": {"name": "triplet", "margni": 0.1}}, "loss.margni: not a parameter of loss triplet (did you mean 'margin'?)"),
        ({"data": {"name": "cifar"}}, "data.name: unknown dataset 'cifar'"),
    ],
)
def test_keys_that_do_not_belong_to_the_chosen_component_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, "x.yaml")
    assert str(info.value).startswith(f"x.yaml: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def test_primary_metric_follows_the_datasets_recall_list():
    assert config_from_dict({"data": {"name": "sop"}, "eval": {"primary_metric": "recall_at_100"}}).recall_at == (1, 10, 100, 1000)
    with pytest.raises(ConfigError, match="eval.primary_metric: 'nmi' is not reported"):
        config_from_dict({"eval": {"clustering": False, "primary_metric": "nmi"}})


def test_switching_a_component_drops_the_old_components_keys_only():
    from dml_core.config import apply_overrides

    base = {"expansion": {"name": "ee", "n_inner_pts": 2}, "model": {"backbone": "small_conv", "conv_blocks": 3}}
    cfg = config_from_dict(apply_overrides(base, {"expansion.name": "none", "model.backbone": "resnet18"}))
    assert (cfg.expansion.name, cfg.model.backbone) == ("none", "resnet18")
    with pytest.raises(ConfigError, match="expansion.n_inner_pts: SEE.s synthetic points per sample are expansion.n_expan"):
        config_from_dict(apply_overrides(base, {"expansion.name": "see", "expansion.n_inner_pts": 4}))


def test_every_shipped_experiment_loads():
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        load_config(path)


def test_validating_a_config_imports_no_torch_and_builds_nothing():
    import subprocess
    import sys

    code = ("import sys; from dml_core.config import config_from_dict; "
            "config_from_dict({'loss': {'name': 'proxy_anchor'}, 'expansion': {'name': 'see', 'n_expan': 8}, "
            "'model': {'backbone': 'resnet50', 'embedding_dim': 64}, 'data': {'name': 'cub200', 'root': '/x'}}); "
            "print(sorted(m for m in ('torch', 'torchvision', 'faiss', 'dml_core.losses', 'dml_core.models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": ""}).stdout
    assert out.strip() == "[]"


def test_configs_dumped_by_the_flat_layout_still_load():
    from dml_core.config import config_from_dump

    # What a checkpoint of the previous version holds: every key of every component.
    old = {"data": {"name": "digits", "root": None, "train_root": None, "test_root": None, "train_classes": None},
           "model": {"backbone": "resnet18", "embedding_dim": 32, "conv_blocks": 4, "conv_width": 64},
           "loss": {"name": "proxy_anchor", "alpha": 16.0},
           "expansion": {"name": "see", "n_inner_pts": 8, "l2_norm": True, "lam": 0.3}}
    cfg = config_from_dump(old)
    assert (cfg.model.backbone, cfg.expansion.n_expan, cfg.expansion.lam, cfg.loss.alpha) == ("resnet18", 8, 0.3, 16.0)
    with pytest.raises(ConfigError):
        config_from_dict(old)  # a user's YAML gets no such leniency

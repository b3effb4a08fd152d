from pathlib import Path

import pytest

from dml_core.config import ConfigError, ExperimentConfig, load_config

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
        ("model: {embeding_dim: 3}\n", "model.embeding_dim: unknown key"),
        ("optimizer: {lr: fast}\n", "optimizer.lr"),
        ("data: {name: cifar}\n", "data.name"),
        ("loss: {name: tripplet}\n", "triplet"),
        ("loss: {name: triplet, margni: 0.1}\n", "margni"),
        ("expansion: {name: ee}\ndata: {batch: {samples_per_class: 3}}\n", "data.batch.samples_per_class"),
        ("expansion: {name: see, n_inner_pts: 8}\nmodel: {embedding_dim: 8}\nloss: {name: proxy_anchor}\n", "model.embedding_dim"),
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

"""cluster.yaml against Ray's own autoscaler schema, plus the security properties it promises.

No cloud is reachable here, so this is what CI can check of the cloud path: the file is what
`ray up` accepts (`prepare_config` fills Ray's AWS defaults, `validate_config` applies
ray-schema.json -- the same two calls `ray up` makes before touching AWS), nothing binds to every
interface, no credentials, SSH-only ingress, and the project is installed at a pinned commit.
Each check is also run on a deliberately broken copy, to show it can fail.
"""
from __future__ import annotations

import copy
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from jsonschema import ValidationError
from ray.autoscaler._private.util import prepare_config, validate_config

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
CLUSTER_DIR = REPO_ROOT / "cluster"
COMMAND_LISTS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                 "head_start_ray_commands", "worker_start_ray_commands")
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def ray_validate(config: dict[str, Any]) -> None:
    validate_config(prepare_config(copy.deepcopy(config)))


def commands(config: dict[str, Any]) -> list[str]:
    cmds = [c for key in COMMAND_LISTS for c in config.get(key) or []]
    for node_type in config.get("available_node_types", {}).values():
        cmds += node_type.get("initialization_commands", []) + node_type.get("worker_setup_commands", [])
    return cmds


# --------------------------------------------------------------------------- Ray's schema


def test_cluster_yaml_is_accepted_by_rays_autoscaler_schema(config: dict[str, Any]) -> None:
    ray_validate(config)
    prepared = prepare_config(copy.deepcopy(config))
    assert prepared["available_node_types"]["head"]["max_workers"] == 0
    # The common setup (install, data, EFS) runs on the head and on every worker.
    assert prepared["worker_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(cfg: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


@pytest.mark.parametrize("mutate", [
    _set("setup_comands", ["echo typo"]),                                  # unknown top-level key
    _set("available_node_types.gpu_worker.min_worker", 1),                 # typo inside a node type
    _set("max_workers", "eight"),                                          # wrong type
    _set("head_node_type", "ray.head.default"),                            # head type not defined
    _set("available_node_types.gpu_worker.resources", {"GPU": 0.5}),       # node resources are integers
    _set("provider.security_group.GroupNme", "x"),                         # typo in the security group
], ids=["top-level-typo", "node-type-typo", "wrong-type", "unknown-head-type", "fractional-node-gpu", "sg-typo"])
def test_a_broken_copy_fails_rays_schema(config: dict[str, Any], mutate: Callable[[dict[str, Any]], None]) -> None:
    broken = copy.deepcopy(config)
    mutate(broken)
    with pytest.raises((ValidationError, ValueError)):
        ray_validate(broken)


# --------------------------------------------------------------------------- security checks

_ALL_INTERFACES = r"(0\.0\.0\.0|::|\[::\]|\*)"
_BIND_FLAG = re.compile(r"--(?:dashboard-host|host|node-ip-address|bind)[ =]['\"]?" + _ALL_INTERFACES + r"(?=['\"\s]|$)")


def binding_problems(config: dict[str, Any]) -> list[str]:
    """Commands that bind a server to every interface or start MLflow inline (it must come from
    cluster/start_mlflow.sh, which binds MLFLOW_HOST only), and a head start that leaves the
    dashboard host implicit."""
    problems = [c for c in commands(config) if _BIND_FLAG.search(c) or re.search(r"mlflow (server|ui)\b", c)]
    head = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    if not head or not all(re.search(r"--dashboard-host[ =]127\.0\.0\.1\b", c) for c in head):
        problems.append("ray start --head must pass --dashboard-host=127.0.0.1 (Ray's tunnel targets the head's localhost)")
    return problems


_SECRET = re.compile(
    r"aws_secret_access_key|aws_access_key_id|aws_session_token|AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY"
    r"|(password|passwd|secret|token)\s*[:=]\s*\S+|ssh_private_key|gcp_credentials",
    re.IGNORECASE,
)


def secret_problems(texts: dict[str, str]) -> list[str]:
    return [f"{name}:{i + 1}: {line.strip()}" for name, text in texts.items()
            for i, line in enumerate(text.splitlines()) if _SECRET.search(line)]


def ingress_problems(config: dict[str, Any]) -> list[str]:
    """Any inbound rule beyond SSH. Ray adds its own rules (intra-cluster traffic + SSH)."""
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    return [f"ingress rule {r}" for r in rules
            if not (r.get("IpProtocol") == "tcp" and r.get("FromPort") == 22 and r.get("ToPort") == 22)]


def pin_problems(config: dict[str, Any]) -> list[str]:
    pinned = [c for c in config["setup_commands"] if re.search(r'"dml-sweep\[gpu\] @ git\+\$\{DML_REPO\}@\$\{DML_COMMIT\}"', c)]
    return [] if pinned else ['setup_commands: no `"dml-sweep[gpu] @ git+${DML_REPO}@${DML_COMMIT}"` install']


def repo_texts() -> dict[str, str]:
    files = [CLUSTER_YAML, *sorted(p for p in CLUSTER_DIR.iterdir() if p.is_file())]
    return {p.relative_to(REPO_ROOT).as_posix(): p.read_text() for p in files}


def test_nothing_binds_every_interface(config: dict[str, Any]) -> None:
    assert binding_problems(config) == []
    # MLflow is started only by the script, on MLFLOW_HOST (the head's private IP, write_env.sh).
    assert any("cluster/start_mlflow.sh" in c for c in config["head_start_ray_commands"])


@pytest.mark.parametrize("bad", [
    "ray start --head --dashboard-host=0.0.0.0",
    "ray start --head --dashboard-host 0.0.0.0 --port=6379",
    "ray start --head --port=6379",                            # Ray's own default is localhost, but be explicit
])
def test_binding_check_catches_all_interfaces(config: dict[str, Any], bad: str) -> None:
    broken = copy.deepcopy(config)
    broken["head_start_ray_commands"] = ["ray stop", bad]
    assert binding_problems(broken)


def test_binding_check_catches_an_inline_mlflow_server(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    broken["head_setup_commands"] = ["mlflow server --host 0.0.0.0 --port 5000"]
    assert binding_problems(broken)


def test_no_credentials_in_the_cluster_files() -> None:
    assert secret_problems(repo_texts()) == []
    assert secret_problems({"broken.yaml": "  - export AWS_SECRET_ACCESS_KEY=abc123\n"})
    assert secret_problems({"broken.env": "DML_TOKEN = ghp_abc\n"})


def test_ingress_is_ssh_only(config: dict[str, Any]) -> None:
    assert "security_group" in config["provider"], "the config should name its (SSH-only) security group"
    assert ingress_problems(config) == []
    for node_type in config["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"], "an unchecked external group could open more ports"
    broken = copy.deepcopy(config)
    broken["provider"]["security_group"]["IpPermissions"] = [
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "203.0.113.0/24"}]},
        {"IpProtocol": "tcp", "FromPort": 5000, "ToPort": 5000, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
    ]
    assert len(ingress_problems(broken)) == 1
    ray_validate(broken)  # schema-valid: only our check stands between this and an open MLflow


def test_gpu_extra_is_installed_at_the_pinned_commit(config: dict[str, Any]) -> None:
    assert pin_problems(config) == []
    broken = copy.deepcopy(config)
    broken["setup_commands"] = [c.replace("@${DML_COMMIT}", "") for c in broken["setup_commands"]]
    assert pin_problems(broken)


def test_file_mounts_and_scripts_exist(config: dict[str, Any]) -> None:
    for remote, local in config["file_mounts"].items():
        assert (REPO_ROOT / local).is_dir(), f"file_mounts {remote}: {local} missing (run `ray up` from the repo root)"
    for script in set(re.findall(r"~/dml-sweep/cluster/([\w.]+)", "\n".join(commands(config)))):
        assert (CLUSTER_DIR / script).is_file(), script


# --------------------------------------------------------------------------- the scripts


def run_write_env(tmp_path: Path, head_ip: str, **settings: str) -> subprocess.CompletedProcess:
    values = {"DML_REPO": "https://github.com/org/dml-sweep", "DML_COMMIT": SHA, "DML_BUCKET": "s3://bucket/dml",
              "DML_EFS_HOST": "fs-1.efs.us-west-2.amazonaws.com", **settings}
    env_file = tmp_path / "cluster.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "DML_CLUSTER_ENV": str(env_file)}
    return subprocess.run(["bash", str(CLUSTER_DIR / "write_env.sh"), head_ip], env=env,
                          capture_output=True, text=True, timeout=30)


def test_write_env_exports_the_cluster_environment_once(tmp_path: Path) -> None:
    for _ in range(2):  # `ray up` re-runs setup: the .bashrc line must not pile up
        assert run_write_env(tmp_path, "10.0.1.23").returncode == 0
    assert (tmp_path / ".bashrc").read_text().splitlines() == [f". {tmp_path}/.dml-sweep.env"]
    out = subprocess.run(["bash", "-c", f". {tmp_path}/.dml-sweep.env && env"], capture_output=True, text=True,
                         env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]}, check=True).stdout
    env = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert env["MLFLOW_TRACKING_URI"] == "http://10.0.1.23:5000"
    assert env["MLFLOW_HOST"] == "10.0.1.23"
    assert env["DML_STORAGE_PATH"] == "/mnt/dml/sweeps"
    assert env["DML_COMMIT"] == SHA
    assert env["PATH"].startswith(f"{tmp_path}/dml-venv/bin:")


@pytest.mark.parametrize("head_ip, settings, message", [
    ("10.0.1.23", {"DML_COMMIT": "main"}, "DML_COMMIT: must be a full 40-character commit SHA"),
    ("10.0.1.23", {"DML_COMMIT": "REPLACE_WITH_40_CHARACTER_COMMIT_SHA"}, "DML_COMMIT"),
    ("10.0.1.23", {"DML_BUCKET": "s3://YOUR-BUCKET/dml-sweep"}, "DML_BUCKET: still a placeholder"),
    ("0.0.0.0", {}, "private IPv4 address"),
    ("", {}, "private IPv4 address"),
])
def test_write_env_refuses_placeholders_and_wildcards(tmp_path: Path, head_ip: str, settings: dict[str, str],
                                                      message: str) -> None:
    result = run_write_env(tmp_path, head_ip, **settings)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / ".dml-sweep.env").exists()


def test_shipped_settings_are_placeholders_that_setup_refuses(tmp_path: Path) -> None:
    """The committed cluster/cluster.env must fail loudly until a user fills it in."""
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    result = subprocess.run(["bash", str(CLUSTER_DIR / "write_env.sh"), "10.0.1.23"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and "cluster.env: DML_COMMIT" in result.stderr


def test_start_mlflow_refuses_every_interface(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "MLFLOW_HOST": "0.0.0.0", "DML_BUCKET": "s3://b/p",
           "DML_MLFLOW_DIR": str(tmp_path / "mlflow")}
    result = subprocess.run(["bash", str(CLUSTER_DIR / "start_mlflow.sh")], env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "refusing to listen on every interface" in result.stderr
    assert not (tmp_path / "mlflow").exists(), "nothing may be started"

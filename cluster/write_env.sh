#!/usr/bin/env bash
# Write ~/.dml-sweep.env -- the environment every Ray process on this node inherits -- and source
# it from ~/.bashrc.   Usage: write_env.sh HEAD_PRIVATE_IP   (cluster.yaml, first setup command)
#
# The Ray autoscaler runs setup and `ray start` commands through `bash --login -i`, so a line in
# ~/.bashrc reaches the raylet and, through it, every job driver and trial on the node: the
# tracking server and storage path are set once here, never per experiment.
set -euo pipefail
head_ip=${1:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
settings=${DML_CLUSTER_ENV:-$here/cluster.env}
env_file=${DML_ENV_FILE:-$HOME/.dml-sweep.env}

fail() { echo "$settings: $*" >&2; exit 1; }
[[ $head_ip =~ ^[0-9]+(\.[0-9]+){3}$ && $head_ip != 0.0.0.0 ]] \
  || fail "write_env.sh needs the head node's private IPv4 address, got '$head_ip'"
set -a; . "$settings"; set +a
# A branch or tag would let nodes that boot at different times install different code.
[[ ${DML_COMMIT:-} =~ ^[0-9a-f]{40}$ ]] || fail "DML_COMMIT: must be a full 40-character commit SHA, got '${DML_COMMIT:-}'"
for var in DML_REPO DML_BUCKET DML_EFS_HOST; do
  [[ -n ${!var:-} && ${!var} != *YOUR* && ${!var} != *REPLACE* ]] || fail "$var: still a placeholder ('${!var:-}')"
done

{
  echo "# Written by cluster/write_env.sh from cluster/cluster.env: edit that file and re-run 'ray up'."
  for var in DML_REPO DML_COMMIT DML_BUCKET DML_EFS_HOST; do printf 'export %s=%q\n' "$var" "${!var}"; done
  echo "export DML_DATA=/mnt/data"
  echo "export DML_STORAGE_PATH=/mnt/dml/sweeps"
  echo "export DML_MLFLOW_DIR=/mnt/dml/mlflow"
  echo "export MLFLOW_HOST=$head_ip"
  echo "export MLFLOW_TRACKING_URI=http://$head_ip:5000"
  echo 'export PATH="$HOME/dml-venv/bin:$PATH"'
} > "$env_file"
line=". $env_file"
grep -qxF "$line" ~/.bashrc 2>/dev/null || echo "$line" >> ~/.bashrc

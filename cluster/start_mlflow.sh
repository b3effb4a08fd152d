#!/usr/bin/env bash
# Start the MLflow tracking server on the head node (cluster.yaml, head_start_ray_commands).
#
# It listens on ONE address, $MLFLOW_HOST: the head's private IP on the cluster (the nodes reach
# it, the internet does not: the security group opens SSH only; people use an SSH tunnel), or
# 127.0.0.1 in tests. Runs live in sqlite in $DML_MLFLOW_DIR (on EFS, so they outlive `ray down`;
# one server worker = one sqlite writer, which NFS locking handles); artifacts are proxied by the
# server to $DML_BUCKET/mlflow-artifacts, so clients need no S3 access. Re-running it (`ray up`
# again) leaves a healthy server alone. Its pid (= process group) goes to $DML_MLFLOW_DIR/server.pid.
set -euo pipefail
host=${MLFLOW_HOST:?MLFLOW_HOST: the address to listen on (the head private IP)}
port=${MLFLOW_PORT:-5000}
state=${DML_MLFLOW_DIR:-$HOME/mlflow}
artifacts=${DML_MLFLOW_ARTIFACTS:-${DML_BUCKET:?DML_BUCKET: S3 prefix for artifacts}/mlflow-artifacts}

case $host in
  0.0.0.0 | "::" | "*") echo "start_mlflow.sh: refusing to listen on every interface ($host)" >&2; exit 1 ;;
esac
url="http://$host:$port"
healthy() { curl -fsS --max-time 2 "$url/health" >/dev/null 2>&1; }
if healthy; then echo "MLflow already serving at $url"; exit 0; fi

mkdir -p "$state"
# setsid: own process group (stopped as one) that outlives the SSH session of `ray up`.
setsid nohup mlflow server --host "$host" --port "$port" --workers "${MLFLOW_WORKERS:-1}" \
  --backend-store-uri "sqlite:///$state/mlflow.db" --artifacts-destination "$artifacts" \
  </dev/null >"$state/server.log" 2>&1 &
echo $! >"$state/server.pid"
for _ in $(seq "${MLFLOW_START_TIMEOUT_S:-90}"); do
  if healthy; then echo "MLflow serving at $url"; exit 0; fi
  kill -0 "$(cat "$state/server.pid")" 2>/dev/null || break
  sleep 1
done
echo "start_mlflow.sh: no MLflow server at $url; see $state/server.log" >&2
kill -- "-$(cat "$state/server.pid")" 2>/dev/null || true
tail -n 20 "$state/server.log" >&2 || true
exit 1

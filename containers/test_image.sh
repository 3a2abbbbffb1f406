#!/usr/bin/env bash
# Run the image as SageMaker does (`docker run IMAGE serve`) with MODEL_DIR mounted at /opt/ml/model:
# /ping must turn 200, a real /invocations must answer, and SIGTERM must drain to exit code 0.
# Usage: containers/test_image.sh [TAG] [MODEL_DIR]  (MODEL_DIR/half_plus_three is mounted)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-sagestack:latest}"
models="$(realpath "${2:-$root/build/model}")"
port="${PORT:-18080}"
export CONTAINERS_CONF="$root/build/image/containers.conf"
name="sagestack-image-test-$$"
result="$root/build/image/last-test.txt"

podman run -d --name "$name" --network host \
  -e SAGEMAKER_BIND_TO_PORT="$port" -e SAGESTACK_BIND_ADDRESS=127.0.0.1 \
  -e SAGEMAKER_TFS_DEFAULT_MODEL_NAME=half_plus_three \
  -v "$models/half_plus_three:/opt/ml/model/half_plus_three:ro" "$tag" serve >/dev/null
trap 'podman rm -f "$name" >/dev/null 2>&1 || true' EXIT

started=$(date +%s)
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ping")" = 200 ]; do
  if [ "$(podman inspect -f '{{.State.Running}}' "$name")" != true ]; then podman logs "$name" | tail -30; exit 1; fi
  if [ $(( $(date +%s) - started )) -gt 240 ]; then echo "image-test: /ping not 200 after 240 s"; exit 1; fi
  sleep 1
done
ready=$(( $(date +%s) - started ))
answer="$(curl -s -H 'Content-Type: application/json' -d '{"instances": [1.0, 2.0]}' "http://127.0.0.1:$port/invocations")"
[ "$answer" = '{"predictions":[3.5,4.0]}' ] || { echo "image-test: unexpected answer $answer"; exit 1; }
t0=$(date +%s)
podman kill --signal TERM "$name" >/dev/null
code="$(podman wait "$name")"
drained=$(( $(date +%s) - t0 ))
[ "$code" = 0 ] || { echo "image-test: exit code $code after SIGTERM"; podman logs "$name" | tail -20; exit 1; }
summary="$(date -u +%Y-%m-%dT%H:%MZ) $tag: ready in ${ready}s, /invocations -> $answer, SIGTERM -> exit 0 in ${drained}s"
echo "$summary" | tee "$result"

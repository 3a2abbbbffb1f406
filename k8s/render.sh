#!/usr/bin/env bash
# Render every overlay with `kubectl kustomize` into OUT/<overlay>.yaml (default build/k8s).
# Overlays are staged under OUT/src first, with build/tune/<model>.env (from `sagestack tune`)
# in place of the overlay's tuned.env where one exists, so the source tree stays untouched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$root/build/k8s}"
kubectl="${KUBECTL:-$root/.venv/bin/kubectl}"
rm -rf "$out/src" && mkdir -p "$out/src"
cp -r "$here/base" "$here/components" "$here/overlays" "$here/jobs" "$out/src/"
for overlay in "$out"/src/overlays/*/; do
  name="$(basename "$overlay")"
  tuned="$root/build/tune/$name.env"
  if [ -f "$tuned" ]; then
    { grep -v '^#' "$tuned"; echo "SAGEMAKER_TFS_DEFAULT_MODEL_NAME=$name"; } > "$overlay/tuned.env"
    echo "k8s: $name uses $tuned"
  fi
  "$kubectl" kustomize "$overlay" > "$out/$name.yaml"
  echo "k8s: wrote $out/$name.yaml"
done
# Jobs (a batch transform as an Indexed Job) take the base's serving.env from outside their own folder.
for job in "$out"/src/jobs/*/; do
  name="$(basename "$job")"
  "$kubectl" kustomize --load-restrictor LoadRestrictionsNone "$job" > "$out/job-$name.yaml"
  echo "k8s: wrote $out/job-$name.yaml"
done

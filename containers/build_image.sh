#!/usr/bin/env bash
# `make image`: build an image with podman, offline from any registry.
# The base image is Debian bookworm from debootstrap (minbase), imported into podman once.
# build/wheelhouse is filled by the host's own pip (its index, mirror or local wheels, torch's CPU build
# among them), so the build itself reaches no index; SAGESTACK_WHEELHOUSE=off leaves it empty and the
# build then takes PyPI plus --build-arg TORCH_INDEX_URL.
# Usage: containers/build_image.sh [TAG] [Dockerfile] [podman build options, e.g. --build-arg RUN_AS=sagestack]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-sagestack:latest}"
dockerfile="${2:-$root/containers/Dockerfile.cpu}"
shift $(( $# < 2 ? $# : 2 ))
base="localhost/debian-bookworm-minbase:latest"
work="$root/build/image"
wheelhouse="$root/build/wheelhouse"
mkdir -p "$work" "$wheelhouse"

missing=""
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || { echo "image: install$missing (apt-get install$missing)"; exit 1; }
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi

# podman on this kind of machine: runc, and no default ulimits (the sandbox refuses them).
conf="$work/containers.conf"
printf '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n' > "$conf"
export CONTAINERS_CONF="$conf"

if ! podman image exists "$base"; then
  echo "image: debootstrap bookworm (minbase) -> $base"
  rm -rf "$work/rootfs"
  mirror="$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -oE 'https?://[^ ]+debian/?' | grep -v security | head -1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror"
  tar -C "$work/rootfs" -c . | podman import - "$base"
  rm -rf "$work/rootfs"
fi

# The GPU image takes its CUDA wheels from the index (several GB), so only the CPU build fills the wheelhouse.
if [ "${SAGESTACK_WHEELHOUSE:-on}" != off ] && [[ "$(basename "$dockerfile")" != *gpu* ]]; then
  python="$root/.venv/bin/python"; [ -x "$python" ] || python=python3
  version="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
  [ "$version" = 3.11 ] || { echo "image: the wheelhouse needs Python 3.11 (bookworm's), $python is $version"; exit 1; }
  echo "image: filling $wheelhouse with the host's pip"
  for what in serving build-tools serving-no-deps; do
    (cd "$root" && "$python" containers/requirements.py "$what" --cpu) > "$work/$what.txt"
  done
  "$python" -m pip download -q --dest "$wheelhouse" -r "$work/serving.txt" -r "$work/build-tools.txt"
  "$python" -m pip download -q --no-deps --dest "$wheelhouse" -r "$work/serving-no-deps.txt"
fi

echo "image: building $tag from $dockerfile"
podman build --isolation chroot --format docker \
  -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
  --build-arg BASE_IMAGE="$base" "$@" \
  -f "$dockerfile" -t "$tag" "$root"
podman image inspect "$tag" --format 'image: {{.Id}} {{.Size}} bytes'

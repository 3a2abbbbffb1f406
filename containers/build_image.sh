#!/usr/bin/env bash
# `make image`: build the CPU image with podman, offline from any registry.
# The base image is Debian bookworm from debootstrap (minbase), imported into podman once.
# Usage: containers/build_image.sh [TAG] [Dockerfile]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tag="${1:-sagestack:latest}"
dockerfile="${2:-$root/containers/Dockerfile.cpu}"
base="localhost/debian-bookworm-minbase:latest"
work="$root/build/image"
mkdir -p "$work"

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

echo "image: building $tag from $dockerfile"
podman build --isolation chroot --format docker \
  -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro \
  --build-arg BASE_IMAGE="$base" \
  -f "$dockerfile" -t "$tag" "$root"
podman image inspect "$tag" --format 'image: {{.Id}} {{.Size}} bytes'

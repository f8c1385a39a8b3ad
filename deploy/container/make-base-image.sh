#!/usr/bin/env bash
# Make a local Debian bookworm base image for the killgate Dockerfile when no container
# registry is reachable (only Debian's package mirror is): debootstrap a minimal root with
# python3, python3-venv, python3-pip and ca-certificates, tar it, and `podman import` it.
#
#   deploy/container/make-base-image.sh [IMAGE]     (default localhost/killgate-base:bookworm)
#
# The tarball is cached in $KILLGATE_IMAGE_CACHE (default ~/.cache/killgate): the first
# debootstrap takes a few minutes, later runs only import the tarball (seconds), and a run
# that finds the image already in podman's store does nothing. Needs root, debootstrap, podman.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"   # debootstrap lives in sbin

IMAGE="${1:-localhost/killgate-base:bookworm}"
CACHE="${KILLGATE_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/killgate}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TARBALL="$CACHE/debian-bookworm-python3.tar"
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

if "${PODMAN[@]}" image exists "$IMAGE"; then
  echo "base image $IMAGE already present"
  exit 0
fi

mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm into $root (first run: a few minutes)"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # keep the image small: package lists and caches are not needed at run time
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  tar --numeric-owner -C "$root" -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
fi
echo "importing $TARBALL as $IMAGE"
"${PODMAN[@]}" import --change 'CMD ["/bin/bash"]' "$TARBALL" "$IMAGE" >/dev/null
echo "base image $IMAGE ready"

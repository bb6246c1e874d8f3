#!/usr/bin/env bash
# Build a Debian bookworm base image with Debian's Python 3.11 (python3, python3-venv) without any
# registry: debootstrap a minimal root filesystem and `docker import` it. The tests use it in
# place of python:3.11-slim-bookworm (no registry here); its interpreter is /usr/bin/python3.
#
# Usage: tests/container/build_base_image.sh [IMAGE] (default IMAGE: kubetrain-base:bookworm)
#   DOCKER=docker client to use, DOCKER_HOST selects the engine, DEBIAN_MIRROR the apt mirror,
#   KUBETRAIN_BASE_CACHE the folder that keeps the root filesystem tarball (re-import in seconds
#   after the engine's data was wiped). Prints the image name on its last line.
# Idempotent: an existing IMAGE is kept; FORCE=1 rebuilds it.
set -euo pipefail

image=${1:-kubetrain-base:bookworm}
docker=${DOCKER:-docker}
# Default: the mirror this machine's apt already uses (deb822 sources, else sources.list).
mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
[[ -n $mirror ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[[ -n $mirror ]] || { echo "build_base_image: no apt mirror found: set DEBIAN_MIRROR" >&2; exit 1; }
cache=${KUBETRAIN_BASE_CACHE:-/var/cache/kubetrain}
# The packages the image needs besides minbase; the cached tarball is keyed on this list.
include=python3,python3-venv,ca-certificates
key=$(printf '%s %s' "$include" "$mirror" | sha256sum | cut -c1-12)
tarball=$cache/bookworm-minbase-$key.tar

if [[ ${FORCE:-0} != 1 ]] && "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

command -v debootstrap >/dev/null || {
  echo "build_base_image: debootstrap is missing: apt-get install debootstrap" >&2
  exit 1
}
[[ $(id -u) == 0 ]] || { echo "build_base_image: debootstrap needs root" >&2; exit 1; }

if [[ ${FORCE:-0} == 1 || ! -s $tarball ]]; then
  mkdir -p "$cache"
  rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$rootfs" "$tarball.part"' EXIT
  echo "build_base_image: debootstrap bookworm into $rootfs (about 2 minutes)" >&2
  debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" >&2
  # What a slim image leaves out: package caches and indexes are rebuilt by `apt-get update`.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
fi

# `docker import` creates an image config with no ENV at all: give it what a Python image has.
"$docker" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  "$tarball" "$image" >&2
echo "$image"

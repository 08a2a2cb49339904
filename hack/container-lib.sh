#!/usr/bin/env bash
# Shared by hack/images.sh and the container tests: pick the container engine and, for podman,
# write the project's own containers.conf (no edits under /etc).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Podman and what rootful podman needs on a machine without systemd (docs/kubernetes.md), and
# what the local base image is made with (debootstrap, binutils).
PODMAN_PACKAGES=(podman buildah runc conmon containernetworking-plugins netavark aardvark-dns
  fuse-overlayfs slirp4netns uidmap catatonit debootstrap binutils iptables iproute2)
PODMAN_DIR="${ROOT}/build/podman"
COMPONENTS_IMAGE="kubeloop/kubeloop-components:${KUBELOOP_IMAGE_TAG:-dev}"
SERVING_IMAGE="kubeloop/kubeloop-serving:${KUBELOOP_IMAGE_TAG:-dev}"
# The FROM of both Dockerfiles; made locally (hack/base-image.sh) when no registry serves it.
BASE_IMAGE="python:3.11.11-slim-bookworm"
export COMPONENTS_IMAGE SERVING_IMAGE BASE_IMAGE

log() {
  printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# Writes build/podman/containers.conf and exports CONTAINERS_CONF: runc and cgroupfs (crun and
# the systemd cgroup manager fail without systemd on a cgroup v1/v2 hybrid), file events, and
# container ulimits no higher than this machine's hard limits (root may lack CAP_SYS_RESOURCE).
podman_config() {
  mkdir -p "${PODMAN_DIR}"
  local nofile nproc
  nofile="$(ulimit -Hn)"
  nproc="$(ulimit -Hu)"
  # Capped: raising a container's limit to the host's hard one was refused here (nproc).
  { [ "${nofile}" = unlimited ] || [ "${nofile}" -gt 1048576 ]; } && nofile=1048576
  { [ "${nproc}" = unlimited ] || [ "${nproc}" -gt 32768 ]; } && nproc=32768
  cat >"${PODMAN_DIR}/containers.conf.tmp" <<EOF
# Written by hack/container-lib.sh (make images); CONTAINERS_CONF points here.
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
  mv "${PODMAN_DIR}/containers.conf.tmp" "${PODMAN_DIR}/containers.conf"
  export CONTAINERS_CONF="${PODMAN_DIR}/containers.conf"
}

# Sets ENGINE to docker (a reachable Docker engine) or podman (installed when missing).
choose_engine() {
  if [ -z "${KUBELOOP_ENGINE:-}" ] && command -v docker >/dev/null 2>&1 \
    && docker info >/dev/null 2>&1; then
    ENGINE=docker
  elif [ "${KUBELOOP_ENGINE:-podman}" = podman ]; then
    "${ROOT}/hack/ensure-debian-packages.sh" "${PODMAN_PACKAGES[@]}"
    podman_config
    ENGINE=podman
  else
    ENGINE="${KUBELOOP_ENGINE}"
  fi
  export ENGINE
}

#!/usr/bin/env bash
# Shared by the kind scripts: paths, pinned versions, logging and tool checks.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ROOT
# shellcheck source=manifests/platform/versions.env
source "${ROOT}/manifests/platform/versions.env"

CLUSTER="${KIND_CLUSTER_NAME:-kubeloop}"
NAMESPACE="${KUBELOOP_NAMESPACE:-kubeloop}"
RELEASE="${KUBELOOP_RELEASE:-kubeloop}"
IMAGE_TAG="${KUBELOOP_IMAGE_TAG:-dev}"
COMPONENTS_IMAGE="kubeloop/kubeloop-components:${IMAGE_TAG}"
SERVING_IMAGE="kubeloop/kubeloop-serving:${IMAGE_TAG}"
export CLUSTER NAMESPACE RELEASE IMAGE_TAG COMPONENTS_IMAGE SERVING_IMAGE

log() {
  printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

require() {
  local tool
  for tool in "$@"; do
    command -v "${tool}" >/dev/null 2>&1 || die "'${tool}' is required (see docs/kubernetes.md)"
  done
}

kube() {
  kubectl --context "kind-${CLUSTER}" "$@"
}

helm_kind() {
  helm --kube-context "kind-${CLUSTER}" "$@"
}

#!/usr/bin/env bash
# Create the kind cluster and install the platform kubeloop runs on, at the versions pinned in
# manifests/platform/versions.env: cert-manager, KServe (Standard mode), Kubeflow Pipelines
# standalone, the KubeRay operator and kube-prometheus-stack. Safe to run again.
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh"

require docker kind kubectl helm
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"

if kind get clusters | grep -qx "${CLUSTER}"; then
  log "kind cluster ${CLUSTER} exists"
else
  log "creating kind cluster ${CLUSTER} (${KIND_NODE_IMAGE})"
  kind create cluster --name "${CLUSTER}" --config "${ROOT}/kind-config.yaml" \
    --image "${KIND_NODE_IMAGE}" --wait 180s
fi

log "cert-manager ${CERT_MANAGER_VERSION}"
helm_kind upgrade --install cert-manager cert-manager \
  --repo https://charts.jetstack.io --version "${CERT_MANAGER_VERSION}" \
  --namespace cert-manager --create-namespace --set crds.enabled=true --wait --timeout 10m

log "KServe ${KSERVE_VERSION} (Standard mode)"
helm_kind upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
  --version "${KSERVE_VERSION}" --namespace kserve --create-namespace --wait --timeout 10m
helm_kind upgrade --install kserve-resources oci://ghcr.io/kserve/charts/kserve-resources \
  --version "${KSERVE_VERSION}" --namespace kserve \
  --values "${ROOT}/manifests/platform/kserve-values.yaml" --wait --timeout 10m

log "KubeRay operator ${KUBERAY_VERSION}"
helm_kind upgrade --install kuberay-operator kuberay-operator \
  --repo https://ray-project.github.io/kuberay-helm/ --version "${KUBERAY_VERSION}" \
  --namespace kuberay-system --create-namespace --wait --timeout 10m

log "kube-prometheus-stack ${KUBE_PROMETHEUS_STACK_VERSION}"
helm_kind upgrade --install kube-prometheus-stack kube-prometheus-stack \
  --repo https://prometheus-community.github.io/helm-charts \
  --version "${KUBE_PROMETHEUS_STACK_VERSION}" --namespace monitoring --create-namespace \
  --values "${ROOT}/manifests/platform/kube-prometheus-stack-values.yaml" --wait --timeout 15m

log "Kubeflow Pipelines ${KFP_VERSION} (standalone)"
kube apply -k "${ROOT}/manifests/platform/kfp/cluster-scoped"
kube wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kube apply -k "${ROOT}/manifests/platform/kfp/env"
kube -n kubeflow wait deployment --all --for=condition=Available --timeout=20m

log "platform ready on kind-${CLUSTER}"

#!/usr/bin/env bash
# End to end on kind: cluster + platform, build and load both images, install the chart, run
# the training pipeline through KFP, wait for the InferenceService to serve the promoted
# model, query it, run `helm test` and one monitor pass, then tear down
# (KEEP_CLUSTER=1 keeps the cluster for a look around).
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh"

require docker kind kubectl helm curl python3
PORT_FORWARD_PID=""

cleanup() {
  local status=$?
  if [[ -n "${PORT_FORWARD_PID}" ]]; then
    kill "${PORT_FORWARD_PID}" 2>/dev/null || true
  fi
  if [[ "${status}" -ne 0 ]]; then
    log "failed (exit ${status}); recent events:"
    kube -n "${NAMESPACE}" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
  fi
  if [[ "${KEEP_CLUSTER:-0}" != "1" ]]; then
    "${ROOT}/hack/kind-down.sh" || true
  fi
  exit "${status}"
}
trap cleanup EXIT

"${ROOT}/hack/kind-up.sh"

log "building ${COMPONENTS_IMAGE} and ${SERVING_IMAGE}"
docker build --file "${ROOT}/components/Dockerfile" --tag "${COMPONENTS_IMAGE}" "${ROOT}"
docker build --file "${ROOT}/serving/Dockerfile" --tag "${SERVING_IMAGE}" "${ROOT}"
kind load docker-image --name "${CLUSTER}" "${COMPONENTS_IMAGE}" "${SERVING_IMAGE}"

log "namespace ${NAMESPACE} and the registry credentials (KFP's MinIO)"
kube apply -f "${ROOT}/manifests/base/namespace.yaml"
ACCESS_KEY="$(kube -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.accesskey}' | base64 -d)"
SECRET_KEY="$(kube -n kubeflow get secret mlpipeline-minio-artifact -o jsonpath='{.data.secretkey}' | base64 -d)"
CREDENTIALS="$(printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "${ACCESS_KEY}" "${SECRET_KEY}")"
for ns in "${NAMESPACE}" kubeflow; do
  # AWS_* keys and the annotations are what KServe's storage initializer reads; `credentials`
  # is the shared-credentials file the kubeloop pods mount.
  kube -n "${ns}" create secret generic kubeloop-s3 \
    --from-literal=AWS_ACCESS_KEY_ID="${ACCESS_KEY}" \
    --from-literal=AWS_SECRET_ACCESS_KEY="${SECRET_KEY}" \
    --from-literal=credentials="${CREDENTIALS}" \
    --dry-run=client -o yaml | kube apply -f -
  kube -n "${ns}" annotate --overwrite secret kubeloop-s3 \
    serving.kserve.io/s3-endpoint=minio-service.kubeflow.svc.cluster.local:9000 \
    serving.kserve.io/s3-usehttps=0
done

log "seeding training data (generated churn) into MinIO"
kube -n "${NAMESPACE}" delete pod kubeloop-seed-data --ignore-not-found
kube -n "${NAMESPACE}" run kubeloop-seed-data --image="${COMPONENTS_IMAGE}" \
  --image-pull-policy=IfNotPresent --restart=Never \
  --env=AWS_ENDPOINT_URL=http://minio-service.kubeflow.svc.cluster.local:9000 \
  --env=AWS_ACCESS_KEY_ID="${ACCESS_KEY}" --env=AWS_SECRET_ACCESS_KEY="${SECRET_KEY}" \
  --command -- python -c \
  "from kubeloop.data.synth import generate_churn; generate_churn(5000, seed=0).to_csv('s3://mlpipeline/kubeloop/data/churn.csv', index=False)"
kube -n "${NAMESPACE}" wait pod/kubeloop-seed-data --for=jsonpath='{.status.phase}'=Succeeded --timeout=10m

log "installing the chart (release ${RELEASE})"
helm_kind upgrade --install "${RELEASE}" "${ROOT}/charts/kubeloop" --namespace "${NAMESPACE}" \
  --values "${ROOT}/charts/kubeloop/ci/kind-values.yaml" --timeout 10m

log "submitting a training run (manifests/submit-run-job.yaml)"
JOB="$(sed -e "s#ghcr.io/kubeloop/kubeloop-components:0.1.0#${COMPONENTS_IMAGE}#" \
  -e 's#imagePullPolicy: Always#imagePullPolicy: IfNotPresent#' \
  "${ROOT}/manifests/submit-run-job.yaml" | kube create -f - -o name)"
kube -n "${NAMESPACE}" wait "${JOB}" --for=condition=Complete --timeout=10m
kube -n "${NAMESPACE}" logs "${JOB}"

log "waiting for the pipeline's deploy step to make InferenceService churn Ready"
kube -n "${NAMESPACE}" wait inferenceservice/churn --for=condition=Ready --timeout=45m

log "querying the endpoint"
kube -n "${NAMESPACE}" port-forward svc/churn-predictor 18080:80 >/dev/null 2>&1 &
PORT_FORWARD_PID=$!
for _ in $(seq 1 30); do
  curl -fsS http://127.0.0.1:18080/v2/health/ready >/dev/null 2>&1 && break
  sleep 2
done
curl -fsS http://127.0.0.1:18080/v2/health/ready
METADATA="$(curl -fsS http://127.0.0.1:18080/v2/models/churn)"
# One V2 request with an input per feature, built from the model's own metadata.
REQUEST="$(printf '%s' "${METADATA}" | python3 -c '
import json, sys
meta = json.load(sys.stdin)
inputs = []
for spec in meta["inputs"]:
    value = "a" if spec["datatype"] == "BYTES" else 1.0
    inputs.append({"name": spec["name"], "shape": [1], "datatype": spec["datatype"], "data": [value]})
print(json.dumps({"inputs": inputs}))
')"
RESPONSE="$(curl -fsS -H 'Content-Type: application/json' -d "${REQUEST}" \
  http://127.0.0.1:18080/v2/models/churn/infer)"
printf '%s\n' "${RESPONSE}"
printf '%s' "${RESPONSE}" | python3 -c 'import json, sys; assert json.load(sys.stdin)["outputs"]'
curl -fsS http://127.0.0.1:18080/metrics | grep -q '^kubeloop_predictions_total' \
  || die "the predictor exports no kubeloop_predictions_total"

log "helm test"
helm_kind test "${RELEASE}" --namespace "${NAMESPACE}" --timeout 5m

log "one monitor pass"
kube -n "${NAMESPACE}" delete job kubeloop-monitor-e2e --ignore-not-found
kube -n "${NAMESPACE}" create job kubeloop-monitor-e2e --from=cronjob/kubeloop-monitor
kube -n "${NAMESPACE}" wait job/kubeloop-monitor-e2e --for=condition=Complete --timeout=10m
kube -n "${NAMESPACE}" logs job/kubeloop-monitor-e2e

log "kind e2e passed"

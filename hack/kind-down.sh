#!/usr/bin/env bash
# Delete the kind cluster (and everything in it).
set -euo pipefail
# shellcheck source=hack/kind-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/kind-lib.sh"

require kind
if kind get clusters | grep -qx "${CLUSTER}"; then
  log "deleting kind cluster ${CLUSTER}"
  kind delete cluster --name "${CLUSTER}"
else
  log "no kind cluster ${CLUSTER}"
fi

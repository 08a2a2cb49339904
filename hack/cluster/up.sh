#!/usr/bin/env bash
# Starts the test cluster on 127.0.0.1 from the binaries hack/cluster/build.sh linked into
# build/cluster/bin/: etcd, kube-apiserver (TLS with certificates made here, RBAC and Node
# authorizers, the default admission plugins including PodSecurity, service-account tokens),
# kube-controller-manager, kube-scheduler and kwok, which plays the kubelet of two fake nodes
# labelled like kind-config.yaml's (pods get fake IPs: never connect to them). Writes
# build/cluster/kubeconfig and prints the `export KUBECONFIG=...` line. Every start is a fresh
# cluster (etcd's data is wiped); hack/cluster/down.sh stops it. Logs: build/cluster/logs/.
#
# Ports (all on 127.0.0.1) can be moved with KUBELOOP_ETCD_PORT, KUBELOOP_ETCD_PEER_PORT,
# KUBELOOP_APISERVER_PORT, KUBELOOP_CONTROLLER_MANAGER_PORT, KUBELOOP_SCHEDULER_PORT.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
STATE="${ROOT}/build/cluster"
BIN="${STATE}/bin"
PKI="${STATE}/pki"
RUN="${STATE}/run"
LOGS="${STATE}/logs"
DATA="${STATE}/data"
KUBECONFIG_OUT="${STATE}/kubeconfig"

ETCD_PORT="${KUBELOOP_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${KUBELOOP_ETCD_PEER_PORT:-12380}"
APISERVER_PORT="${KUBELOOP_APISERVER_PORT:-16443}"
CM_PORT="${KUBELOOP_CONTROLLER_MANAGER_PORT:-20257}"
SCHED_PORT="${KUBELOOP_SCHEDULER_PORT:-20259}"
SERVICE_CIDR="10.96.0.0/16"
SERVICE_IP="10.96.0.1"
POD_CIDR="10.244.0.0/16"
FAKE_NODE_IP="10.89.0.2"
TIMEOUT="${KUBELOOP_CLUSTER_TIMEOUT:-120}"

log() { printf '[cluster-up] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

START="$(date +%s%N)"
elapsed() { printf '%d.%ds' $((($(date +%s%N) - START) / 1000000000)) $((($(date +%s%N) - START) / 100000000 % 10)); }

for piece in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  [[ -x "${BIN}/${piece}" ]] || die "${BIN}/${piece} is missing: run make cluster-build (hack/cluster/build.sh)"
done
[[ -f "${BIN}/kwok-stages.yaml" ]] || die "${BIN}/kwok-stages.yaml is missing: run hack/cluster/build.sh kwok"
for tool in openssl curl python3; do
  command -v "${tool}" >/dev/null 2>&1 || die "${tool} is missing (needed to make the certificates / talk to the API server)"
done

# Already up? Then say so and stop (down.sh first for a fresh one).
if [[ -f "${RUN}/kube-apiserver.pid" ]] && kill -0 "$(cat "${RUN}/kube-apiserver.pid")" 2>/dev/null; then
  log "already running (hack/cluster/down.sh stops it)"
  echo "export KUBECONFIG=${KUBECONFIG_OUT}"
  exit 0
fi

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "${ETCD_PORT}" "${ETCD_PEER_PORT}" "${APISERVER_PORT}" "${CM_PORT}" "${SCHED_PORT}"; do
  port_busy "${port}" && die "127.0.0.1:${port} is in use (another cluster? hack/cluster/down.sh; or move it with the KUBELOOP_*_PORT variables)"
done

mkdir -p "${PKI}" "${RUN}" "${LOGS}"
rm -rf "${DATA}"
mkdir -p "${DATA}"

# ---- certificates (made once, kept in build/cluster/pki) --------------------------------------
cert() { # name CN O ext-usage [subjectAltName [CA]]
  local name="$1" cn="$2" org="$3" usage="$4" san="${5:-}" ca="${6:-ca}"
  [[ -f "${PKI}/${name}.crt" ]] && return 0
  local subj="/CN=${cn}"
  [[ -n "${org}" ]] && subj="/O=${org}${subj}"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "${PKI}/${name}.key" -subj "${subj}" -out "${PKI}/${name}.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=${usage}"
    [[ -n "${san}" ]] && echo "subjectAltName=${san}"
  } >"${PKI}/${name}.ext"
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" \
    -CAcreateserial -days 365 -sha256 -extfile "${PKI}/${name}.ext" -out "${PKI}/${name}.crt" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}
if [[ ! -f "${PKI}/ca.crt" ]]; then
  log "making certificates in ${PKI}"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "${PKI}/ca.key" -out "${PKI}/ca.crt" -subj "/CN=kubeloop-cluster-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  # The aggregation layer's CA (kubeadm's front-proxy-ca): without --requestheader-client-ca-file
  # the controller-manager's and scheduler's delegated authentication log errors forever.
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "${PKI}/front-proxy-ca.key" -out "${PKI}/front-proxy-ca.crt" -subj "/CN=kubeloop-front-proxy-ca" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
  openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
fi
cert apiserver kube-apiserver "" serverAuth \
  "IP:127.0.0.1,IP:${SERVICE_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin kubernetes-admin system:masters clientAuth
cert controller-manager system:kube-controller-manager "" clientAuth
cert scheduler system:kube-scheduler "" clientAuth
cert kwok kwok system:masters clientAuth
cert front-proxy-client front-proxy-client "" clientAuth "" front-proxy-ca
cert controller-manager-serving kube-controller-manager "" serverAuth "IP:127.0.0.1,DNS:localhost"
cert scheduler-serving kube-scheduler "" serverAuth "IP:127.0.0.1,DNS:localhost"
chmod 600 "${PKI}"/*.key

kubeconfig() { # file user
  local b64="base64 -w0"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubeloop
  cluster:
    server: https://127.0.0.1:${APISERVER_PORT}
    certificate-authority-data: $(${b64} <"${PKI}/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(${b64} <"${PKI}/$2.crt")
    client-key-data: $(${b64} <"${PKI}/$2.key")
contexts:
- name: kubeloop
  context:
    cluster: kubeloop
    user: $2
current-context: kubeloop
EOF
  chmod 600 "$1"
}
kubeconfig "${KUBECONFIG_OUT}" admin
kubeconfig "${PKI}/controller-manager.kubeconfig" controller-manager
kubeconfig "${PKI}/scheduler.kubeconfig" scheduler
kubeconfig "${PKI}/kwok.kubeconfig" kwok

# ---- processes ---------------------------------------------------------------------------------
start() { # name args...
  local name="$1"
  shift
  nohup "${BIN}/${name}" "$@" >"${LOGS}/${name}.log" 2>&1 </dev/null &
  echo $! >"${RUN}/${name}.pid"
}
fail() { # name what
  log "ERROR: $1 $2; last lines of ${LOGS}/$1.log:"
  tail -n 25 "${LOGS}/$1.log" >&2 || true
  "${HERE}/down.sh" --quiet || true
  exit 1
}
api() { # path -> body (admin credentials)
  curl -sS --fail --max-time 5 --cacert "${PKI}/ca.crt" --cert "${PKI}/admin.crt" --key "${PKI}/admin.key" \
    "https://127.0.0.1:${APISERVER_PORT}$1" "${@:2}"
}
wait_for() { # name what command...
  local name="$1" what="$2" deadline=$(($(date +%s) + TIMEOUT))
  shift 2
  until "$@" >/dev/null 2>&1; do
    kill -0 "$(cat "${RUN}/${name}.pid")" 2>/dev/null || fail "${name}" "exited"
    [[ "$(date +%s)" -lt "${deadline}" ]] || fail "${name}" "not ${what} after ${TIMEOUT}s"
    sleep 0.2
  done
  log "${name} ${what} ($(elapsed))"
}

log "etcd on 127.0.0.1:${ETCD_PORT}"
start etcd --name=kubeloop --data-dir="${DATA}/etcd" \
  --listen-client-urls="http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls="http://127.0.0.1:${ETCD_PORT}" \
  --listen-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" --initial-advertise-peer-urls="http://127.0.0.1:${ETCD_PEER_PORT}" \
  --initial-cluster="kubeloop=http://127.0.0.1:${ETCD_PEER_PORT}" --unsafe-no-fsync --log-level=warn
wait_for etcd healthy curl -sS --fail --max-time 2 "http://127.0.0.1:${ETCD_PORT}/health"

# The default admission plugins (PodSecurity among them) stay on; NodeRestriction is added as
# kubeadm does. --endpoint-reconciler-type=none: the `kubernetes` Service would get the advertise
# address as its endpoint, and Endpoints refuse loopback addresses ("may not be in the loopback
# range", logged every 10 s); nothing in this cluster reaches the API server through that Service.
log "kube-apiserver on https://127.0.0.1:${APISERVER_PORT}"
start kube-apiserver --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="${APISERVER_PORT}" \
  --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
  --client-ca-file="${PKI}/ca.crt" --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
  --service-cluster-ip-range="${SERVICE_CIDR}" --allow-privileged=true --profiling=false \
  --enable-admission-plugins=NodeRestriction \
  --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="${PKI}/front-proxy-client.crt" --proxy-client-key-file="${PKI}/front-proxy-client.key" \
  --endpoint-reconciler-type=none
wait_for kube-apiserver ready api /readyz

log "kube-controller-manager, kube-scheduler, kwok"
start kube-controller-manager --kubeconfig="${PKI}/controller-manager.kubeconfig" \
  --authentication-kubeconfig="${PKI}/controller-manager.kubeconfig" \
  --authorization-kubeconfig="${PKI}/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="${CM_PORT}" \
  --tls-cert-file="${PKI}/controller-manager-serving.crt" --tls-private-key-file="${PKI}/controller-manager-serving.key" \
  --client-ca-file="${PKI}/ca.crt" --leader-elect=false --cluster-name=kubeloop \
  --service-account-private-key-file="${PKI}/sa.key" --root-ca-file="${PKI}/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
  --service-cluster-ip-range="${SERVICE_CIDR}" --controllers='*,-service-lb-controller,-cloud-node-lifecycle-controller,-node-ipam-controller'
start kube-scheduler --kubeconfig="${PKI}/scheduler.kubeconfig" \
  --authentication-kubeconfig="${PKI}/scheduler.kubeconfig" \
  --authorization-kubeconfig="${PKI}/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="${SCHED_PORT}" \
  --tls-cert-file="${PKI}/scheduler-serving.crt" --tls-private-key-file="${PKI}/scheduler-serving.key" \
  --client-ca-file="${PKI}/ca.crt" --leader-elect=false
start kwok --kubeconfig="${PKI}/kwok.kubeconfig" --config="${BIN}/kwok-stages.yaml" --manage-all-nodes=false \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr="${POD_CIDR}" --node-ip="${FAKE_NODE_IP}"

# Two fake nodes, labelled like kind-config.yaml's control-plane and worker.
node_json() { # name role taint(json list)
  cat <<EOF
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$1",
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
   "labels": {"kubeloop.dev/role": "$2", "kubernetes.io/hostname": "$1", "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "type": "kwok"$([[ "$2" == control-plane ]] && echo ', "node-role.kubernetes.io/control-plane": ""')}},
 "spec": {"taints": $3}}
EOF
}
api /api/v1/nodes -X POST -H 'Content-Type: application/json' \
  -d "$(node_json kubeloop-control-plane control-plane '[{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]')" >/dev/null
api /api/v1/nodes -X POST -H 'Content-Type: application/json' -d "$(node_json kubeloop-worker worker '[]')" >/dev/null

nodes_ready() {
  api /api/v1/nodes | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
ready = [n for n in items if any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))]
sys.exit(0 if len(items) == 2 and len(ready) == 2 else 1)'
}
wait_for kwok "made both nodes Ready" nodes_ready
wait_for kube-controller-manager "made the default ServiceAccount" api /api/v1/namespaces/default/serviceaccounts/default
wait_for kube-scheduler healthy curl -sS --fail --max-time 2 -k "https://127.0.0.1:${SCHED_PORT}/healthz"

log "up in $(elapsed): kubectl get --raw /version; hack/cluster/down.sh stops it"
echo "export KUBECONFIG=${KUBECONFIG_OUT}"

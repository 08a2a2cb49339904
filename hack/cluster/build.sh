#!/usr/bin/env bash
# Builds the test cluster's binaries from the Go module proxy, each at the version pinned in its
# wrapper module under hack/cluster/, into a cache outside the repository keyed by version
# (${KUBELOOP_CLUSTER_CACHE:-~/.cache/kubeloop-cluster}/<piece>-<version>/), and links them into
# build/cluster/bin/ (git-ignored). Builds only what is missing: a binary is rebuilt when the
# wrapper module's go.mod or go.sum changes. hack/cluster/README.md has the versions and timings.
#
#   hack/cluster/build.sh                 the default pieces (below)
#   hack/cluster/build.sh kwok helm       just these
#   hack/cluster/build.sh --all           the default pieces and the optional ones
#   hack/cluster/build.sh --list          pieces, modules and versions
#
# Go's own settings are honoured (GOMODCACHE, GOCACHE, GOFLAGS=-p=N, GOMAXPROCS, GOPROXY): on a
# shared machine run it as `GOMAXPROCS=1 GOFLAGS=-p=1 nice -n 19 hack/cluster/build.sh`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
CACHE="${KUBELOOP_CLUSTER_CACHE:-${XDG_CACHE_HOME:-${HOME}/.cache}/kubeloop-cluster}"
BIN="${ROOT}/build/cluster/bin"
PROGRESS_EVERY="${PROGRESS_EVERY:-30}"

# piece | wrapper module dir (under hack/cluster) | versioned module | package to build
PIECES=(
  "etcd|etcd|go.etcd.io/etcd/server/v3|go.etcd.io/etcd/server/v3"
  "kube-apiserver|.|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-apiserver"
  "kube-controller-manager|.|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager"
  "kube-scheduler|.|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kube-scheduler"
  "kubectl|.|k8s.io/kubernetes|k8s.io/kubernetes/cmd/kubectl"
  "kwok|tools/kwok|sigs.k8s.io/kwok|sigs.k8s.io/kwok/cmd/kwok"
  "helm|tools/helm|helm.sh/helm/v4|helm.sh/helm/v4/cmd/helm"
  "kuberay-operator|tools/kuberay|github.com/ray-project/kuberay/ray-operator|github.com/ray-project/kuberay/ray-operator"
  "controller-gen|tools/controller-gen|sigs.k8s.io/controller-tools|sigs.k8s.io/controller-tools/cmd/controller-gen"
  "kserve-controller|tools/kserve|github.com/kserve/kserve|github.com/kserve/kserve/cmd/manager"
)
DEFAULT=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm kuberay-operator controller-gen)
OPTIONAL=(kserve-controller)

log() { printf '[cluster-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "the go command is missing (Go >= 1.26 needed: kwok, helm and controller-gen need go 1.26)"

piece_row() {
  local row
  for row in "${PIECES[@]}"; do
    [[ "${row%%|*}" == "$1" ]] && { printf '%s\n' "${row}"; return 0; }
  done
  return 1
}

# The version of module $2 that the wrapper module in $1 selects (read from go.mod: no network).
module_version() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "${HERE}/$1/go.mod"
}

# Extra -ldflags: the Kubernetes binaries report their version through component-base (without
# it: v0.0.0-master, and a chart's kubeVersion constraint fails).
ldflags_for() {
  local piece="$1" version="$2"
  local flags="-s -w"
  case "${piece}" in
    kube-* | kubectl)
      local major minor
      major="${version#v}"; major="${major%%.*}"
      minor="${version#v*.}"; minor="${minor%%.*}"
      local pkg
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X ${pkg}.gitVersion=${version} -X ${pkg}.gitMajor=${major}"
        flags+=" -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
      done
      ;;
    helm)
      flags+=" -X helm.sh/helm/v4/internal/version.version=${version}"
      ;;
  esac
  printf '%s' "${flags}"
}

# What a piece needs beside its binary, written next to it and linked into build/cluster/bin/.
# kwok v0.8 has no built-in stages (without them: "no stages found"): its "fast" set (nodes
# Ready with leases, pods Ready, Job pods Succeeded) from the same module version.
extras() { # piece dir module version out
  case "$1" in
    kwok)
      local src
      src="$(cd "${HERE}/$2" && go list -m -f '{{.Dir}}' "$3")/kustomize/stage"
      [[ -d "${src}" ]] || die "kwok $4: no kustomize/stage in the module (${src})"
      local f
      for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
        pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
        echo "---"
        grep -v '^---$' "${src}/${f}"
      done >"$5/kwok-stages.yaml"
      ln -sfn "$5/kwok-stages.yaml" "${BIN}/kwok-stages.yaml"
      ;;
  esac
}

fmt_secs() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

build_piece() {
  local piece="$1" row dir module pkg version out stamp want
  row="$(piece_row "${piece}")" || die "unknown piece '${piece}' (hack/cluster/build.sh --list)"
  IFS='|' read -r _ dir module pkg <<<"${row}"
  version="$(module_version "${dir}" "${module}")"
  [[ -n "${version}" ]] || die "${piece}: no version of ${module} in hack/cluster/${dir}/go.mod"
  out="${CACHE}/${piece}-${version}"
  stamp="${out}/.built"
  want="$(cat "${HERE}/${dir}/go.mod" "${HERE}/${dir}/go.sum" | sha256sum | cut -c1-16)"
  mkdir -p "${BIN}"
  if [[ -x "${out}/${piece}" && -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]]; then
    ln -sfn "${out}/${piece}" "${BIN}/${piece}"
    extras "${piece}" "${dir}" "${module}" "${version}" "${out}"
    log "${piece} ${version}: cached (${out}/${piece})"
    return 0
  fi
  mkdir -p "${out}"
  local logf="${out}/build.log" total start pid ticker rc=0
  log "${piece} ${version}: building ${pkg} (module hack/cluster/${dir}; log ${logf})"
  start="$(date +%s)"
  # The package count, for progress; the module download happens here too on a cold cache.
  if ! total="$(cd "${HERE}/${dir}" && go list -deps "${pkg}" 2>"${logf}" | wc -l)"; then
    tail -n 20 "${logf}" >&2
    die "${piece} ${version}: cannot resolve ${pkg} in hack/cluster/${dir} (above; full log ${logf})"
  fi
  (
    cd "${HERE}/${dir}"
    CGO_ENABLED=0 exec go build -v -trimpath -ldflags "$(ldflags_for "${piece}" "${version}")" \
      -o "${out}/${piece}.tmp" "${pkg}"
  ) >>"${logf}" 2>&1 &
  pid=$!
  (
    while sleep "${PROGRESS_EVERY}"; do
      kill -0 "${pid}" 2>/dev/null || exit 0
      log "${piece}: $(fmt_secs $(($(date +%s) - start))), $(grep -c '^[a-z]' "${logf}" || true)/${total} packages compiled"
    done
  ) &
  ticker=$!
  wait "${pid}" || rc=$?
  kill "${ticker}" 2>/dev/null || true
  wait "${ticker}" 2>/dev/null || true
  if [[ "${rc}" -ne 0 ]]; then
    grep -v '^[a-z][a-zA-Z0-9._/-]*$' "${logf}" | tail -n 30 >&2 || true
    die "${piece} ${version}: go build ${pkg} failed (exit ${rc}; above; full log ${logf})"
  fi
  mv -f "${out}/${piece}.tmp" "${out}/${piece}"
  printf '%s\n' "${want}" >"${stamp}"
  ln -sfn "${out}/${piece}" "${BIN}/${piece}"
  extras "${piece}" "${dir}" "${module}" "${version}" "${out}"
  log "${piece} ${version}: built in $(fmt_secs $(($(date +%s) - start))) -> ${BIN}/${piece}"
}

want=()
case "${1:-}" in
  --list)
    for row in "${PIECES[@]}"; do
      IFS='|' read -r piece dir module pkg <<<"${row}"
      printf '%-24s %-45s %s\n' "${piece}" "${module}" "$(module_version "${dir}" "${module}")"
    done
    exit 0
    ;;
  --all) want=("${DEFAULT[@]}" "${OPTIONAL[@]}") ;;
  "") want=("${DEFAULT[@]}") ;;
  *) want=("$@") ;;
esac

for piece in "${want[@]}"; do
  build_piece "${piece}"
done
log "binaries in ${BIN}"

#!/usr/bin/env bash
# Stops the cluster hack/cluster/up.sh started (the processes named in build/cluster/run/*.pid,
# newest first) and wipes etcd's data. Keeps the certificates, the binaries and the logs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$(cd "${HERE}/../.." && pwd)/build/cluster"
RUN="${STATE}/run"
QUIET=0
[[ "${1:-}" == "--quiet" ]] && QUIET=1
log() { [[ "${QUIET}" == 1 ]] || printf '[cluster-down] %s\n' "$*" >&2; }

stop() { # name
  local pidf="${RUN}/$1.pid" pid
  [[ -f "${pidf}" ]] || return 0
  pid="$(cat "${pidf}")"
  # Only a process that runs our binary: a stale pid file must not kill someone else's process.
  if kill -0 "${pid}" 2>/dev/null && [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == */"$1"* ]]; then
    kill -TERM "${pid}" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "${pid}" 2>/dev/null && kill -KILL "${pid}" 2>/dev/null || true
    log "stopped $1 (pid ${pid})"
  fi
  rm -f "${pidf}"
}

for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop "${name}"
done
rm -rf "${STATE}/data"
log "down"

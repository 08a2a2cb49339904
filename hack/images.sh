#!/usr/bin/env bash
# make images: builds kubeloop/kubeloop-components:dev (components/Dockerfile) and
# kubeloop/kubeloop-serving:dev (serving/Dockerfile) with docker where a Docker engine answers,
# else with podman (installed and configured when missing). Where no registry serves the base
# image, it is made locally (hack/base-image.sh). pip inside the build reaches the package index
# the way this machine's pip does: its index settings and CA bundle go in as build secrets
# (mounted for one RUN, never stored in a layer). Layers are cached by the engine, so a rebuild
# without changes takes seconds. Prints each image's build time and size.
# Usage: hack/images.sh [--optional] [components|serving]...   (default: both; --optional: where
# no engine can be had, say so and exit 0; make test uses it, and the container tests then skip)
set -euo pipefail
# shellcheck source=hack/container-lib.sh
source "$(dirname "$0")/container-lib.sh"

if [ "${1:-}" = --optional ]; then
  shift
  if ! (choose_engine); then
    log "no container engine here and none can be installed: the container tests will skip"
    exit 0
  fi
fi
wanted=("$@")
[ "${#wanted[@]}" -gt 0 ] || wanted=(components serving)
choose_engine
log "engine: ${ENGINE}"

if ! "${ENGINE}" image inspect "${BASE_IMAGE}" >/dev/null 2>&1; then
  if curl --silent --output /dev/null --max-time 5 https://registry-1.docker.io/v2/ \
    && "${ENGINE}" pull "docker.io/library/${BASE_IMAGE}"; then
    log "pulled ${BASE_IMAGE}"
  else
    log "no registry serves ${BASE_IMAGE}: making it locally"
    "${ROOT}/hack/base-image.sh"
  fi
fi

# The build secrets: this machine's pip index settings (only what a build can reach: http(s)
# indexes, trusted hosts, proxy) and its CA bundle, written fresh for every build.
secrets="$(mktemp -d)"
trap 'rm -rf "${secrets}"' EXIT
"${PYTHON:-python3}" - "${secrets}" <<'EOF'
import os
import subprocess
import sys

out = sys.argv[1]
found = {}
listing = subprocess.run(
    [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
).stdout
for line in listing.splitlines():
    key, _, value = line.partition("=")
    found[key.split(".", 1)[-1].replace("_", "-")] = value.strip().strip("'\"")
for key, value in os.environ.items():  # PIP_INDEX_URL etc. win over the files, as for pip
    if key.startswith("PIP_"):
        found[key[4:].lower().replace("_", "-")] = value
conf = ["[global]"]
for key in ("index-url", "extra-index-url", "trusted-host", "proxy", "timeout", "retries"):
    values = [v for v in found.get(key, "").split() if v]
    if key.endswith("index-url"):
        values = [v for v in values if v.startswith(("http://", "https://"))]
    if values:
        conf.append(f"{key} = {' '.join(values)}")
ca = found.get("cert") or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
ca = ca or "/etc/ssl/certs/ca-certificates.crt"
if os.path.isfile(ca):
    with open(ca, "rb") as src, open(os.path.join(out, "pip-ca.crt"), "wb") as dst:
        dst.write(src.read())
    conf.append("cert = /run/secrets/pipca")
with open(os.path.join(out, "pip.conf"), "w", encoding="utf-8") as handle:
    handle.write("\n".join(conf) + "\n")
EOF
[ -f "${secrets}/pip-ca.crt" ] || touch "${secrets}/pip-ca.crt"

build_args=()
# podman writes OCI images by default, which have no HEALTHCHECK: the Docker format keeps it.
[ "${ENGINE}" = podman ] && build_args+=(--format docker)
for proxy in HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy; do
  [ -n "${!proxy:-}" ] && build_args+=(--build-arg "${proxy}")
done

build() {
  local dockerfile="$1" image="$2" started seconds size previous current
  started="$(date +%s)"
  previous="$("${ENGINE}" image inspect --format '{{.Id}}' "${image}" 2>/dev/null || true)"
  log "building ${image} from ${dockerfile}"
  "${ENGINE}" build --network host --file "${ROOT}/${dockerfile}" --tag "${image}" \
    --secret "id=pipconf,src=${secrets}/pip.conf" --secret "id=pipca,src=${secrets}/pip-ca.crt" \
    "${build_args[@]}" "${ROOT}" >"${secrets}/build.log" 2>&1 \
    || { tail -n 40 "${secrets}/build.log" >&2; die "building ${image} failed"; }
  seconds=$(($(date +%s) - started))
  size="$("${ENGINE}" image inspect --format '{{.Size}}' "${image}")"
  printf '%s: %d MB, built in %d s\n' "${image}" "$((size / 1000000))" "${seconds}"
  # The image this tag named before: each rebuild after a code change leaves one (its venv
  # layer is gigabytes), which would fill the disk over many runs. Kept while a container or
  # another tag uses it.
  current="$("${ENGINE}" image inspect --format '{{.Id}}' "${image}")"
  if [ -n "${previous}" ] && [ "${previous}" != "${current}" ] \
    && "${ENGINE}" rmi "${previous}" >/dev/null 2>&1; then
    log "removed the previous ${image} (${previous:0:12})"
  fi
}

for name in "${wanted[@]}"; do
  case "${name}" in
    components) build components/Dockerfile "${COMPONENTS_IMAGE}" ;;
    serving) build serving/Dockerfile "${SERVING_IMAGE}" ;;
    *) die "unknown image ${name} (components or serving)" ;;
  esac
done

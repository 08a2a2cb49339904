#!/usr/bin/env bash
# KServe's storage-initializer code (PyPI kserve-storage) in its own virtualenv, .venv-storage:
# its pins (google-cloud-storage<3) clash with kfp's, and on a cluster it runs in its own init
# container anyway. tests/integration/containers run it as the storage-initializer does, to fetch
# a bundle from the S3 server into the directory the serving container gets at /mnt/models.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-storage
VERSION=0.21.0
[ -f "${VENV}/.installed-${VERSION}" ] && exit 0
test -x "${VENV}/bin/python" || "${PYTHON:-python3}" -m venv "${VENV}"
"${VENV}/bin/python" -m pip install --quiet "kserve-storage==${VERSION}"
touch "${VENV}/.installed-${VERSION}"

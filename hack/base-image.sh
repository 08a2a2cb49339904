#!/usr/bin/env bash
# Makes a local stand-in for the Dockerfiles' base image (python:3.11-slim-bookworm) where no
# image registry is reachable: a debootstrap'ed Debian bookworm (minbase, from this machine's
# Debian mirror), the libraries CPython needs, and this machine's CPython 3.11 copied into
# /usr/local (without its site-packages; pip comes from its bundled ensurepip), imported into
# podman under the base image's name. Usage: hack/base-image.sh (after choose_engine).
set -euo pipefail
# shellcheck source=hack/container-lib.sh
source "$(dirname "$0")/container-lib.sh"

[ -n "${ENGINE:-}" ] || choose_engine
PYTHON="${PYTHON:-python3}"
prefix="$("${PYTHON}" -c 'import sys; print(sys.base_prefix)')"
version="$("${PYTHON}" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
[ "${version}" = 3.11 ] || die "the base image needs a CPython 3.11 here (${PYTHON} is ${version})"

# This machine's Debian mirror (the one apt uses), else Debian's own.
mirror="$(grep -hoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list 2>/dev/null | head -n 1 | tr -d ' ' || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d /var/tmp/kubeloop-base.XXXXXX)"
trap 'rm -rf "${rootfs}"' EXIT
log "debootstrap bookworm (minbase) from ${mirror}"
debootstrap --variant=minbase \
  --include=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libncursesw6,libreadline8,libuuid1,libbz2-1.0,liblzma5,zlib1g,libgdbm6,libexpat1 \
  bookworm "${rootfs}" "${mirror}" >"${rootfs}.log" 2>&1 \
  || { tail -n 20 "${rootfs}.log" >&2; rm -f "${rootfs}.log"; die "debootstrap failed"; }
rm -f "${rootfs}.log"

log "CPython ${version} from ${prefix} into /usr/local"
mkdir -p "${rootfs}/usr/local/bin" "${rootfs}/usr/local/lib"
cp -a "${prefix}/bin/python3.11" "${rootfs}/usr/local/bin/"
ln -s python3.11 "${rootfs}/usr/local/bin/python3"
ln -s python3.11 "${rootfs}/usr/local/bin/python"
cp -a "${prefix}"/lib/libpython3*.so* "${rootfs}/usr/local/lib/"
tar -C "${prefix}/lib" -c \
  --exclude='python3.11/site-packages/*' --exclude='python3.11/test' \
  --exclude='python3.11/idlelib' --exclude='python3.11/tkinter' \
  --exclude='python3.11/turtledemo' --exclude='python3.11/config-3.11-*' \
  python3.11 | tar -C "${rootfs}/usr/local/lib" -x
# Debug symbols out of CPython's shared libraries (libpython alone: 23 MB -> 6 MB), and no
# documentation, manual pages or translations (the official slim images carry none either).
find "${rootfs}/usr/local/lib" -name '*.so*' -type f -exec strip --strip-unneeded {} +
rm -rf "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/* \
  "${rootfs}"/usr/share/locale/*
chroot "${rootfs}" /sbin/ldconfig
chroot "${rootfs}" /usr/local/bin/python3 -m ensurepip --default-pip >/dev/null
rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin \
  "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/root/.cache

log "importing as ${BASE_IMAGE}"
tar -C "${rootfs}" -c . | "${ENGINE}" import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
  - "docker.io/library/${BASE_IMAGE}" >/dev/null

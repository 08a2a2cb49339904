# kubeloop — the two commands a user needs: `make demo` and `make test`.
# Tiers for people changing the code: `make unit` (pure unit tests, under a minute), `make check`
# (lint, types, unit and the static Kubernetes tests), `make test` (everything).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test check unit lint typecheck bench clean tools system-deps manifests kind-up kind-e2e kind-down images images-for-tests cluster-build cluster-up cluster-down

# Debian packages the tests call (promtool and the Prometheus server come with `prometheus`;
# headless `chromium` opens the HTML report in tests/integration/report).
# hack/ensure-debian-packages.sh installs the missing ones (as root or through sudo) or names the
# command to run.
DEBIAN_PACKAGES := prometheus chromium

install: $(STAMP)

# Re-install only when the project's dependency list changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/kubeloop demo

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

# Extra pytest arguments, e.g. `make test PYTEST_ARGS=--randomly-seed=7` (pytest-randomly shuffles
# the order every run and prints the seed; `-p no:randomly` keeps the file order).
PYTEST_ARGS ?=
# Python's UTF-8 mode: the tests read files and tool output holding non-ASCII text (the Grafana
# dashboards...) whatever the machine's locale (CI's once decoded kubectl's output as ASCII).
PYTEST := PYTHONUTF8=1 $(BIN)/python -m pytest -q --timeout=900

unit: install
	$(PYTEST) -m "not integration" tests/unit $(PYTEST_ARGS)

check: lint typecheck tools system-deps
	$(PYTEST) -m "not integration" tests/unit tests/k8s $(PYTEST_ARGS)

test: lint typecheck tools system-deps images-for-tests
	$(PYTEST) $(PYTEST_ARGS)

system-deps:
	hack/ensure-debian-packages.sh $(DEBIAN_PACKAGES)

# The component and serving images (docker where a Docker engine answers, else podman, installed
# and configured when missing; the base image is made locally when no registry serves it).
# Cached: a rebuild without changes takes seconds. docs/kubernetes.md.
images:
	hack/images.sh

# make test builds them for tests/integration/containers; where no engine can be had (no podman
# and no way to install it) it says so and those tests skip. .venv-storage: KServe's
# storage-initializer code (its pins clash with kfp's), which the tests fetch bundles with.
images-for-tests:
	hack/images.sh --optional
	hack/storage-venv.sh

# checkov pins packages (packaging, boto3, networkx) that clash with kfp/ray/kserve, so it gets
# its own virtualenv; tests/k8s/test_checkov.py runs .venv-tools/bin/checkov --skip-download.
TOOLS := .venv-tools
CHECKOV_VERSION := 3.3.30

tools: $(TOOLS)/.installed

$(TOOLS)/.installed:
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $@

# manifests/base/kubeloop.yaml is rendered from the Helm chart.
manifests: install
	$(BIN)/python hack/render-manifests.py

# Local cluster (needs Docker, kind, kubectl, helm): docs/kubernetes.md.
kind-up:
	hack/kind-up.sh

kind-e2e: install
	hack/kind-e2e.sh

kind-down:
	hack/kind-down.sh

# A Kubernetes control plane built from the Go module proxy (no Docker, no registry), pinned in
# hack/cluster/*/go.mod: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on
# 127.0.0.1, with the helm CLI, the KubeRay operator and controller-gen. Binaries are cached
# outside the repository (~/.cache/kubeloop-cluster) and linked into build/cluster/bin/; the
# kubeconfig is build/cluster/kubeconfig. Not part of `make test` (yet). hack/cluster/README.md.
cluster-build:
	hack/cluster/build.sh

cluster-up: cluster-build
	hack/cluster/up.sh

cluster-down:
	hack/cluster/down.sh

bench: install
	$(BIN)/python bench/train.py

# Drift benchmark against Evidently. Evidently's pins clash with the project's (pandas 3 breaks
# evidently 0.7), so the baseline gets its own virtualenv; bench/drift.py runs it in a subprocess.
EVIDENTLY := bench/.venv-evidently
.PHONY: bench-drift
bench-drift: install $(EVIDENTLY)/.installed
	$(BIN)/python bench/drift.py --evidently-python $(EVIDENTLY)/bin/python

$(EVIDENTLY)/.installed:
	test -x $(EVIDENTLY)/bin/python || $(PYTHON) -m venv $(EVIDENTLY)
	$(EVIDENTLY)/bin/python -m pip install --quiet 'evidently==0.7.23' 'pandas<3' pyarrow
	touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache

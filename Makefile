# The two commands of the README, and the steps they need. Each target installs what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Wheels that compile (tpm2-pytss takes ~40 s) are built once here and reused by every checkout.
WHEEL_CACHE ?= $(HOME)/.cache/appliance/wheels
COMPILED_WHEELS := tpm2-pytss==3.0.0 systemd-python==235
STATE_DIR ?= $(CURDIR)/.state
APT_PACKAGES := python3 python3-venv python3-dev gcc make pkg-config \
	swtpm swtpm-tools tpm2-tools libtss2-dev libsystemd-dev systemd util-linux nftables \
	tmux librsvg2-bin \
	mmdebstrap mtools fdisk dosfstools e2fsprogs qemu-system-x86 ovmf systemd-boot-efi \
	mricron-data
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

IMAGE := build/image/appliance.img
# The image is rebuilt when a file it is made from changes (image/build: the list and the recipe).
IMAGE_INPUTS := $(shell git ls-files appliance provisioning image hardware pyproject.toml 2>/dev/null)

.PHONY: help deps venv run test lint bench models image vm clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps: ## install the Debian packages the appliance and its tests need (apt)
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing $$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else echo "deps: Debian packages present"; fi

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	mkdir -p $(WHEEL_CACHE)
	$(PY) -m pip wheel -q --find-links $(WHEEL_CACHE) --wheel-dir $(WHEEL_CACHE) $(COMPILED_WHEELS)
	# The CPU build of torch (models/imaging-anomaly trains with it); +cpu keeps CUDA wheels out.
	$(PY) -m pip install -q --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
	$(PY) -m pip install -q --find-links $(WHEEL_CACHE) -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## create .venv with the project and its test tools

run: deps venv ## run the appliance here (a software TPM under .state when there is no /dev/tpmrm0)
	$(VENV)/bin/appliance --state-dir $(STATE_DIR) run

$(IMAGE): $(IMAGE_INPUTS)
	@$(MAKE) --no-print-directory deps venv
	$(SUDO) image/build

image: deps venv $(IMAGE) ## build the bootable UEFI disk image (build/image/appliance.img)

vm: image ## boot the image under QEMU: the console on this terminal, the API on 127.0.0.1:8443
	image/vm.py

test: deps venv image ## the whole suite: ruff, mypy --strict, tests on real swtpm instances, the QEMU boot test
	$(VENV)/bin/pytest

lint: venv ## ruff (lint and format) and mypy --strict, as tests/test_linters.py runs them
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: deps venv ## benchmarks (print tables and name: value lines)
	@command -v wrk >/dev/null || (echo "bench: installing wrk" && $(SUDO) apt-get install -y -q wrk)
	$(PY) -m pip install -q --find-links $(WHEEL_CACHE) -e '.[test,bench]'
	$(PY) bench/trust.py
	$(PY) bench/update.py
	$(PY) bench/inference.py
	$(PY) bench/notes.py
	$(PY) bench/dicom.py
	$(PY) bench/models.py

models: deps venv ## rebuild every reference model (deterministic: git diff shows any change), then sign dev bundles into build/bundles
	@for b in models/*/build.py; do echo "models: $$b"; $(PY) $$b || exit 1; done
	$(PY) -m provisioning.devbundles --models models --vendor $(STATE_DIR)/vendor --out build/bundles

clean: ## remove the venv and local state (the wheel cache stays)
	rm -rf $(VENV) .state .mypy_cache .ruff_cache .pytest_cache

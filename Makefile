# Everything a fresh Debian machine needs, from one command: `make run` or `make test`.
# Setup steps leave stamp files, so a second run only redoes what changed.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
DEV_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
BENCH_TOOLS := /usr/bin/wrk /usr/bin/curl
PYTEST_ARGS ?=
DOCTOR_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends

.PHONY: help setup run doctor test lint format bench stress

help:
	@echo "make run     set everything up and start the app against the embedded local S3"
	@echo "make doctor  check the S3 setup (S3_BUCKET, or a fresh embedded S3); DOCTOR_ARGS=--fix-cors"
	@echo "make test    set everything up, lint, and run the whole test suite (PYTEST_ARGS=...)"
	@echo "make bench   run every bench/bench_*.py script"
	@echo "make stress  run the long tests marked 'stress'"
	@echo "make lint    ruff check and format check;  make format  rewrite files in ruff's style"

setup: $(DEV_STAMP) $(NODE_STAMP) $(CHROMIUM)

run: $(RUNTIME_STAMP) $(NODE_STAMP)
	$(PY) server.py

# Exits non-zero when something would break uploads; DOCTOR_ARGS=--fix-cors applies the CORS rule.
doctor: $(RUNTIME_STAMP) $(NODE_STAMP)
	$(PY) server.py doctor $(DOCTOR_ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -n 3 $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# About 4 minutes on 2 cores; each script prints our figure, the peer's and the ratio.
bench: setup $(BENCH_TOOLS)
	@shopt -s nullglob; for script in bench/bench_*.py; do \
		echo "== $$script"; \
		$(PY) "$$script"; \
		echo; \
	done

# pytest exits 5 when no test is selected: not a failure while no stress test exists yet.
stress: setup
	@status=0; HYPOTHESIS_PROFILE=stress $(VENV)/bin/pytest -m stress --timeout=900 $(PYTEST_ARGS) \
		|| status=$$?; \
	if [ $$status -eq 5 ]; then echo "no stress tests selected"; exit 0; fi; \
	exit $$status

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ needed"'
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { \
		$(SUDO) apt-get update && $(APT_INSTALL) python3-venv; }
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements-dev.txt
	touch $(RUNTIME_STAMP) $@

$(NODE_STAMP): package.json package-lock.json .npmrc
	command -v npm >/dev/null || { $(SUDO) apt-get update && $(APT_INSTALL) npm; }
	npm ci
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update
	$(APT_INSTALL) chromium fonts-dejavu-core

$(BENCH_TOOLS):
	$(SUDO) apt-get update
	$(APT_INSTALL) wrk curl

# Quick start: `make study` runs the main job; `make test` runs the whole suite (lint, types, tests).
# Both create the virtual environment on first use: torch is pinned first so pip never pulls a CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The second environment: transformers 4.57, the newest that TextAttack (through flair) accepts.
COMPAT_VENV ?= .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
TORCH_VERSION := 2.13.0
STUDY_OUTPUT ?= study-output

.PHONY: test study venv compat-venv system-deps lint typecheck pytest pytest-compat clean

venv: $(VENV)/.installed
compat-venv: $(COMPAT_VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(COMPAT_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install --quiet --upgrade pip
	$(COMPAT_BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(COMPAT_BIN)/python -m pip install --quiet -e ".[test]" "transformers>=4.57,<5"
	touch $@

# Browser tests of the metric Spaces drive Debian's Chromium headless.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" != 0 ]; then echo "install Debian's chromium and chromium-driver (needs root)"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

pytest: venv system-deps
	$(BIN)/python -m pytest

# The whole suite again on transformers 4.57; the real-model check runs once, in the main environment.
pytest-compat: compat-venv system-deps
	$(COMPAT_BIN)/python -m pytest -m "not real_model"

test: lint typecheck pytest pytest-compat

study: venv
	$(BIN)/loyalkit demo --output $(STUDY_OUTPUT)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

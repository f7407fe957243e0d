# PaNReduce. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV ?= $(shell scripts/ensure-uv.sh)
VENV := .venv
PY := $(VENV)/bin/python
PANREDUCE := $(VENV)/bin/panreduce
PYTEST_ARGS ?=
DEMO_OUT ?= panreduce-results/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: help setup proto demo test test-gpu test-large lint typecheck register serve clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-14s %s\n", $$1, $$2}'

setup: ## install everything into .venv (uv from the lock file; installs uv if missing)
	@$(UV) sync --frozen --quiet
	@$(PY) services/common/hatch_build.py 2>/dev/null

proto: setup ## regenerate the gRPC stubs from proto/ (the build does this too)
	$(PY) services/common/hatch_build.py

demo: setup ## the main job: reduce the Diamond I16 scans on the embedded platform
	@files="$$($(PY) -m panreduce.datasets paths i16-scans/7949)" || exit 1; \
	  printf '%s' "$(PANREDUCE) reduce scan"; printf ' %q' $$files; printf ' --output %q\n' "$(DEMO_OUT)"; \
	  $(PANREDUCE) reduce scan $$files --output "$(DEMO_OUT)"

test: setup ## run the whole test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-gpu: setup ## run the GPU tests (needs CUDA and torch: uv sync --extra gpu)
	$(PY) -m pytest -m gpu $(PYTEST_ARGS)

test-large: setup ## run the tests that move gigabytes (e.g. a 3 GiB upload)
	$(PY) -m pytest -m large $(PYTEST_ARGS)

bench-%: setup ## a benchmark table: make bench-platform, bench-load (100 streaming clients, 60 s; BENCH_ARGS="--seconds 10" for a short run), bench-sans, bench-saxs, bench-tomography, bench-ptychography, bench-serial-crystallography, bench-thz, bench-reflectometry, bench-stem4d
	$(PY) benchmarks/bench_$*.py $(BENCH_ARGS)

bench-serial-crystallography: setup ## peakfinder8 frames/s per core, against OM's compiled peakfinder8 in .bench-envs/om (installed when it can be)
	@test -x .bench-envs/om/bin/python || ( flock /tmp/panreduce-uv.lock $(UV) venv -q -p 3.11 .bench-envs/om && flock /tmp/panreduce-uv.lock $(UV) pip install -q -p .bench-envs/om/bin/python "ondamonitor==23.8.3" "numpy<2" ) || { rm -rf .bench-envs/om; echo "OM could not be installed: its figures are shown instead"; }
	$(PY) benchmarks/bench_serial_crystallography.py $(BENCH_ARGS)

LIBERTEM_PIN ?= libertem==0.16.0
PY4DSTEM_PIN ?= py4DSTEM==0.14.18 numpy==1.26.4
bench-envs: ## create the stem4d comparison environments .bench-envs/libertem and .bench-envs/py4dstem (Python 3.11, pinned)
	@test -x .bench-envs/libertem/bin/python || ( flock /tmp/panreduce-uv.lock $(UV) venv -q -p 3.11 .bench-envs/libertem && flock /tmp/panreduce-uv.lock $(UV) pip install -q -p .bench-envs/libertem/bin/python $(LIBERTEM_PIN) ) || { rm -rf .bench-envs/libertem; echo "LiberTEM could not be installed into .bench-envs/libertem: its row is left empty"; }
	@test -x .bench-envs/py4dstem/bin/python || ( flock /tmp/panreduce-uv.lock $(UV) venv -q -p 3.11 .bench-envs/py4dstem && flock /tmp/panreduce-uv.lock $(UV) pip install -q -p .bench-envs/py4dstem/bin/python $(PY4DSTEM_PIN) ) || { rm -rf .bench-envs/py4dstem; echo "py4DSTEM could not be installed into .bench-envs/py4dstem: its row is left empty"; }

bench-stem4d: setup bench-envs ## 4D-STEM GB/s per core, side by side with LiberTEM and py4DSTEM (their envs made by bench-envs); BENCH_ARGS="--gb 4"
	$(PY) benchmarks/bench_stem4d.py $(BENCH_ARGS)

PTYLAB_PIN ?= ptylab==0.3.7
bench-ptychography: setup ## DM/ML/LSQML it/s and phase error, side by side with PtyLab in .bench-envs/ptylab (Python 3.11, pinned; installed when it can be)
	@test -x .bench-envs/ptylab/bin/python || ( flock /tmp/panreduce-uv.lock $(UV) venv -q -p 3.11 .bench-envs/ptylab && flock /tmp/panreduce-uv.lock $(UV) pip install -q -p .bench-envs/ptylab/bin/python $(PTYLAB_PIN) ) || { rm -rf .bench-envs/ptylab; echo "PtyLab could not be installed into .bench-envs/ptylab: its rows are left out"; }
	$(PY) benchmarks/bench_ptychography.py $(BENCH_ARGS)

bench-tomography: setup ## tomography benchmark; installs ASTRA (the bench extra) for the side-by-side comparison
	@$(UV) sync --frozen --inexact --package panreduce-tomography --extra bench --quiet
	$(PY) benchmarks/bench_tomography.py

lint: setup ## ruff check, ruff format --check and mypy (strict on panreduce and the gateway) over the code
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

typecheck: setup ## mypy alone, strict on panreduce (the kit included) and the gateway ([tool.mypy] in pyproject.toml); part of lint
	$(VENV)/bin/mypy

register: ## after adding services/<name>/ (entry point in its pyproject.toml): write the workspace, images.toml, Containerfiles and chart values from the technique folders, then lock and sync
	@python3 scripts/sync-techniques.py
	@$(UV) lock --quiet
	@$(UV) sync --quiet

serve: setup ## run the embedded platform as a local server on port 50050
	$(PANREDUCE) serve

clean: ## remove the environment, caches and demo results
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache panreduce-results
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Deployment targets (images, chart checks) live in mk/*.mk.
-include mk/*.mk

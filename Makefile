# Two commands do everything: `make run` (the main job on the simulated bench) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint check clean report-tools demo

$(STAMP): pyproject.toml scripts/system-deps.sh
	bash scripts/system-deps.sh
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

report-tools:
	bash scripts/report-tools.sh

run: $(STAMP) report-tools
	$(BIN)/hil run --rig rigs/sim.toml

demo: $(STAMP)
	$(BIN)/hil demo --rig rigs/sim.toml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint report-tools
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .hil .pytest_cache

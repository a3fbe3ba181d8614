# Two commands set up a fresh clone:  `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench replicate clean

$(STAMP): requirements.txt requirements-lm-eval.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q -r requirements-lm-eval.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## The main job: the whole study, small, on the embedded default model (Gemma 3 270M).
demo: install
	$(BIN)/langneurons demo

## The seed paper's study on real data (../shared/data or DATA=/your/copy), about 90 min on 2 CPU cores;
## cached stage by stage (rerun to resume), then published to docs/results/gemma-3-270m and the README.
DATA ?= ../shared/data
replicate: install
	$(BIN)/langneurons run src/langneurons/data/configs/replication.yaml --data $(DATA) --run-dir runs/replication
	$(BIN)/langneurons publish runs/replication --name gemma-3-270m --readme README.md

## The test suite (two processes), then the end-to-end run of the demo with a reduced budget.
test: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

## Everything but the end-to-end tests on the default model.
test-fast: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

## Speed and memory ratios (JSON + Markdown table in bench-results/).
bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) runs demo-run bench-results .pytest_cache

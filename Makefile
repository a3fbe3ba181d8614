# Two commands set up a fresh clone:  `make demo` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test test-fast bench replicate transfer transfer-seeds subnetwork stability directions lm-eval-check clean

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

## Issue 18's runs on real data, each cached like replicate and sized for one ~150 min session on 2 CPU
## cores (estimates in each config's header). They share replication.yaml's statistics section: the
## first finished FLORES pass found (replication, transfer, transfer-seeds, subnetwork, stability) is copied in
## with --statistics-from when the run has none yet, so the pass is not repeated (none: it computes its own).
STATISTICS_FROM = $(firstword $(shell grep -l '"status": "complete"' \
  $(wildcard $(foreach run,replication transfer transfer-seeds subnetwork stability,runs/$(run)/statistics/stage.json)) /dev/null))
REUSE_STATISTICS = $(if $(STATISTICS_FROM),--statistics-from $(patsubst %/,%,$(dir $(STATISTICS_FROM))))

## The test-time claim on a model that learned XNLI (attention LoRA, LR chosen on dev, early stopping);
## about 110 min.
transfer: install
	$(BIN)/langneurons run src/langneurons/data/configs/transfer.yaml --data $(DATA) --run-dir runs/transfer $(REUSE_STATISTICS)
	$(BIN)/langneurons publish runs/transfer --name gemma-3-270m-transfer --readme README.md

## Neuron LoRA vs random-neuron LoRA, 3 seeds each, with the all-MLP-rows control; planned at 130 min with its own
## statistics pass (110 min with another run's), measured 92 min on 2026-12-08 (manifest).
transfer-seeds: install
	$(BIN)/langneurons run src/langneurons/data/configs/transfer-seeds.yaml --data $(DATA) --run-dir runs/transfer-seeds $(REUSE_STATISTICS)
	$(BIN)/langneurons publish runs/transfer-seeds --name gemma-3-270m-transfer-seeds --readme README.md

## Language subnetwork enhancement (Gurgurov et al. 2025) on hi and ur: LAPE rows vs random rows vs
## equal-size LoRA on held-out FLORES text; about 130 min (6-point learning-rate grids; the first run, 3 points: 86 min).
subnetwork: install
	$(BIN)/langneurons run src/langneurons/data/configs/subnetwork.yaml --data $(DATA) --run-dir runs/subnetwork $(REUSE_STATISTICS)
	$(BIN)/langneurons publish runs/subnetwork --name gemma-3-270m-subnetwork --readme README.md

## How stable are the neuron sets (issue 12)? FLORES statistics in 10 chunks + XNLI text, resampling
## intervals, PPXC of stable vs full vs random, agreement between methods and corpora; about 60 min on
## 2 CPU cores, cached like replicate; published to docs/results/stability and docs/results/stability-xnli.
SHARED_LANGUAGES := en,fr,es,zh,hi,ur
stability: install
	$(BIN)/langneurons run src/langneurons/data/configs/stability.yaml --data $(DATA) --run-dir runs/stability --no-report $(REUSE_STATISTICS)
	$(BIN)/langneurons run src/langneurons/data/configs/stability-xnli.yaml --data $(DATA) --run-dir runs/stability-xnli
	for pair in lape:act-prob lape:ap act-prob:ap lape:lape-stable; do \
	  first=$${pair%%:*}; second=$${pair##*:}; \
	  $(BIN)/langneurons agreement runs/stability/identify/$$first/neurons.json runs/stability/identify/$$second/neurons.json \
	    -o runs/stability/agreement --name $$first-vs-$$second || exit 1; done
	for method in lape act-prob ap; do \
	  $(BIN)/langneurons agreement runs/stability/statistics runs/stability-xnli/statistics --method $$method \
	    -l $(SHARED_LANGUAGES) -o runs/stability/agreement --name flores-vs-xnli-$$method || exit 1; done
	$(BIN)/langneurons publish runs/stability --name stability
	$(BIN)/langneurons publish runs/stability-xnli --name stability-xnli

## Neurons or directions (issue 19)? FLORES statistics with residual sums, LAPE neurons vs DiffMean
## directions: PPXC (zeroing vs direction ablation) and en->fr/es/zh/hi steering, each against its random
## control, dev/test prompt split, claims; 82 min of stage compute on 2 CPU cores (measured, manifest),
## cached like replicate; published to docs/results/directions.
directions: install
	$(BIN)/langneurons run src/langneurons/data/configs/directions.yaml --data $(DATA) --run-dir runs/directions
	$(BIN)/langneurons publish runs/directions --name directions --readme README.md

## Issue 14's real-data check: XNLI (200 pairs per language, en/fr/hi) as a local harness task vs
## langneurons' own XNLI evaluation, baseline / LAPE zero / random zero, on the replication's LAPE set.
lm-eval-check: install
	$(BIN)/python -m benchmarks.xnli_lm_eval_check --data $(DATA)/xnli --neurons runs/replication/identify/lape/neurons.json \
	  --languages en,fr,hi --limit 200 --out docs/results/lm-eval

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

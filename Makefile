# dlref: every target creates or updates .venv from pyproject.toml, so a fresh clone needs
# nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all test-jax lint bench tensorboard clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dlref train regression

# Two worker processes (pytest-xdist), since much of a test's time is single-threaded graph
# building: 6.5 minutes against 10.5 in one when first measured on 2 cores; 8.5 and 9 minutes in
# two CI runs on 2026-11-28. Three workers took as long as two: the suite is CPU-bound.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "slow or not slow"

# The in-process tests run on TensorFlow (tests/conftest.py); these run again on JAX: the
# recipes that train on JAX by default, and the machinery every recipe uses (callbacks,
# resume, tuning, evaluate / predict). CI runs them after `make test`.
JAX_TESTS := tests/test_fused.py tests/test_training.py tests/test_callbacks.py tests/test_resume.py \
	tests/test_predict.py tests/test_tune.py tests/test_backends.py tests/test_timeseries.py \
	tests/test_seq2seq.py
test-jax: $(STAMP)
	KERAS_BACKEND=jax $(BIN)/python -m pytest -q -n 2 $(JAX_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check dlref tests scripts

# make bench BENCH="--quick --recipes multiclass,gan": the options of scripts/bench.py.
bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH)

tensorboard: $(STAMP)
	$(BIN)/dlref tensorboard

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

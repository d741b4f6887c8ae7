# dlref: every target creates or updates .venv from pyproject.toml, so a fresh clone needs
# nothing but Python 3.10+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-all lint bench tensorboard clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dlref train regression

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(BIN)/ruff check dlref tests scripts

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

tensorboard: $(STAMP)
	$(BIN)/dlref tensorboard

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

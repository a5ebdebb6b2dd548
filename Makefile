# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-dev lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstalls when the requirements change (entry points of the built-in plugins included).
$(VENV)/.installed: requirements.txt pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt bench/requirements.txt $(VENV)/.installed
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## Install, create or upgrade the database, and start the panel on http://127.0.0.1:5000/
run: install
	$(BIN)/flask --app app smtpsite init
	$(BIN)/flask --app app smtpsite serve

## Install and run the linter and the whole test suite.
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .

## Install the benchmark tools (Django, pyinstrument: never smtpsite's own dependencies) and
## run every benchmark beside its baselines; the table goes into bench/RESULTS.md.
bench: install-dev
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench

# Two commands a new user runs on a fresh machine: `make demo` and `make test`.
# Each bootstraps .venv from nothing but python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/migration_race.py
	$(BIN)/python examples/chaos_story.py

test: $(STAMP)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

typecheck: $(STAMP)
	$(BIN)/python -m mypy

bench: $(STAMP)
	$(BIN)/comity bench store --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .hypothesis

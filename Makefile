VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/dropfetch run

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check daemon tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/run.py

# Differential fuzzing of extraction against GNU tar, bsdtar and unzip (docs/FUZZ.md).
# FUZZ_CASES=N cases from seed FUZZ_SEED; FUZZ_KNOWN=1 also generates the known bugs.
FUZZ_CASES ?= 2000
FUZZ_SEED ?= 20261201
fuzz: $(STAMP)
	FUZZ_CASES=$(FUZZ_CASES) FUZZ_SEED=$(FUZZ_SEED) $(PY) tests/fuzz_extract.py --keep var/fuzz

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

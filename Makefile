# Two commands on a fresh machine:  `make run` (the app on the demo workspace)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKSPACE ?= data

.PHONY: run test install install-test lint bench clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/labelkit serve --workspace $(WORKSPACE) --demo-if-empty

test: install-test
	scripts/ensure-chromium
	$(PY) -m pytest -q -p no:cacheprovider

lint: install-test
	$(VENV)/bin/ruff check labelkit tests benchmarks app.py
	$(VENV)/bin/mypy

clean-venv:
	rm -rf $(VENV)

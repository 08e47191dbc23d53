# cityfleet: `make test` sets itself up on a fresh machine and runs the whole suite.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test unit hil lint typecheck bench demo sysdeps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	@touch $@

sysdeps:
	@sh tools/sysdeps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy
	$(PY) tools/typecheck_device.py

test: $(STAMP) sysdeps lint typecheck
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

unit: $(STAMP)
	$(PY) -m pytest tests $(PYTEST_ARGS)

hil: $(STAMP) sysdeps
	$(PY) -m pytest hil_tests $(PYTEST_ARGS)

bench: $(STAMP) sysdeps
	$(PY) -m tools.bench

demo: $(STAMP) sysdeps
	$(VENV)/bin/fleet demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

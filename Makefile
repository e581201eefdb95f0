# tpsload developer tasks. Everything installs into ./.venv (created on first use).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install install-test llama-server test test-fast lint demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PIP) -e .

install-test: $(PY)
	$(PIP) -e ".[test]"

# A real llama-server + model for the test suite, cached in ~/.cache/tpsload (first build ~5 min).
llama-server: $(PY)
	$(PY) tests/llama_server.py install

# The whole suite, llama-server tests and slow tests included (what CI runs).
test: install-test llama-server
	$(PY) -m pytest -q

# Without the real llama-server and the slow tests: a quick loop while editing.
test-fast: install-test
	$(PY) -m pytest -q -m "not llama and not slow"

lint: $(PY)
	$(PIP) ruff
	$(VENV)/bin/ruff check tpsload tests

demo: install
	$(VENV)/bin/tpsload run --mock -c 16 -n 64

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache

# The client's own cost and accuracy against a server with exact send times (not a test: medians of runs).
bench: install-test
	$(PY) tests/bench.py --repeat 3 --json bench-results.json

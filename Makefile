# tpsload developer tasks. Everything installs into ./.venv (created on first use).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install install-test llama-server llama-cpp-python test test-fast test-aiohttp-oldest lint demo bench soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	$(PIP) -e .

install-test: $(PY)
	$(PIP) -e ".[test]"

# A real llama-server + model for the test suite, cached in ~/.cache/tpsload (first build ~5 min).
llama-server: $(PY)
	$(PY) tests/llama_server.py install

# A second real server: llama-cpp-python's (PyPI sdist, compiles llama.cpp: ~4 min on 2 busy cores the
# first time), cached in ~/.cache/tpsload beside llama-server, on the same model.
llama-cpp-python: llama-server
	$(PY) tests/llama_cpp_python.py install

# The whole suite, both real servers and slow tests included (what CI runs).
test: install-test llama-server llama-cpp-python
	$(PY) -m pytest -q

# The fast paths read aiohttp internals (core/client.py: the tap, the direct send): their tests, and the
# end-to-end runs that go through them, again on the oldest aiohttp that pyproject.toml allows (`make test`
# has the newest).
# Not the 64-connection timing run: there the mock's own aiohttp.web server of that age adds ~25 ms
# to TTFT on two cores (measured: the client's share stays ~1 ms), more than that test's slack.
AIOHTTP_OLDEST := $(shell sed -n 's/.*"aiohttp>=\([0-9.]*\),.*/\1/p' pyproject.toml)
OLDEST_VENV    ?= .venv-aiohttp-oldest
test-aiohttp-oldest:
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --disable-pip-version-check -e . "aiohttp==$(AIOHTTP_OLDEST)" \
		"pytest>=7" "hypothesis>=6" "pytest-timeout>=2"
	$(OLDEST_VENV)/bin/python -c 'import aiohttp; assert aiohttp.__version__ == "$(AIOHTTP_OLDEST)", aiohttp.__version__'
	$(OLDEST_VENV)/bin/python -m pytest -q tests/test_fastpath.py tests/test_eager.py tests/test_run_mock.py tests/test_faults.py tests/test_phases.py \
		--deselect "tests/test_run_mock.py::test_streaming_timing_matches_mock[64-192]"

# Without the real llama-server and the slow tests: a quick loop while editing.
test-fast: install-test
	$(PY) -m pytest -q -m "not llama and not llama_cpp_python and not slow"

lint: $(PY)
	$(PIP) ruff
	$(VENV)/bin/ruff check tpsload tests

demo: install
	$(VENV)/bin/tpsload run --mock -c 16 -n 64

clean:
	rm -rf $(VENV) $(OLDEST_VENV) build dist *.egg-info .pytest_cache .ruff_cache

# The client's own cost and accuracy against a server with exact send times (not a test: medians of runs).
bench: install-test
	$(PY) tests/bench.py --repeat 3 --json bench-results.json

# Memory over a long run (not a test): -c 256 for 10 minutes against the lean server, tpsload's RSS and
# CPU per minute, the growth from minute 1 to 10 and the peak; fails past 10 % growth or 150 MB.
# SOAK_MINUTES=3 for a shorter one.
SOAK_MINUTES ?= 10
soak: install
	$(PY) tests/soak.py --minutes $(SOAK_MINUTES)

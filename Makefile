# One entry point for people and CI.  `make run` serves on the embedded default (local disk +
# SQLite); `make test` installs everything it needs into .venv and runs the whole suite.
# Python 3.11 (python3.11 if it is on PATH, else python3).
PY ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Two stamps: serving needs only the runtime dependencies (quick first start); tests and the
# benchmark need the extras too.  Installing everything also satisfies serving.
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# tus-js-client for the real-client tests, installed from the committed lock file.
JS_STAMP := tests/js/node_modules/.installed

.PHONY: run test lint install system-packages js-deps bench clean

$(BIN)/python:
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "need Python 3.11+"; exit 2; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP) $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/filesvc serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# System packages some tests need (servers, converters, a browser); installed when missing.
system-packages:
	scripts/ensure-system-packages

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

js-deps: system-packages $(JS_STAMP)

# pytest's worker processes (pytest-xdist); each file runs whole on one of them.
TEST_WORKERS ?= 2

# The quick checks first (they fail in seconds); then mypy --strict, about 40 s of one core on a
# clean clone, runs beside pytest, whose processes spend much of their time waiting on servers
# and subprocesses.  Its report is printed after the tests', and either failing fails the target.
# The tests write Python's bytecode caches even where the environment sets
# PYTHONDONTWRITEBYTECODE: without them each of the hundreds of Python processes the suite starts
# (servers, CLI runs, thumbnail workers) compiles the service's modules again, and each test
# process rewrites the asserts of every test module again (measured: 17 s of CPU to collect the
# suite without them, 8 s with them).
test: $(STAMP) system-packages js-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	@types=$$(mktemp); $(BIN)/mypy >"$$types" 2>&1 & checking=$$!; \
	echo "$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile (and $(BIN)/mypy beside it)"; \
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile; tests=$$?; \
	wait $$checking; typed=$$?; echo "$(BIN)/mypy"; cat "$$types"; rm -f "$$types"; \
	if [ $$tests -ne 0 ]; then exit $$tests; fi; exit $$typed

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/js/node_modules

# Two commands on a fresh machine (python3 >= 3.11 and make): `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The demo's world; tests make their own under /tmp.
export NITRODECK_HOME ?= $(CURDIR)/.nitrodeck-home

.PHONY: install system-deps run stop test lint typecheck pytest screenshots bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@scripts/system-deps.sh

run: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m console.demo

# The demo's enclaves outlive the TUI (as real ones do); this ends them.
stop: $(STAMP)
	NITRODECK_BACKEND=emulator $(BIN)/python -m console terminate --all

lint: $(STAMP)
	$(BIN)/ruff check core console enclave_app emulator tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy core

# Line and branch coverage of the pytest process (subprocesses are not measured), per package; the run
# fails below [tool.coverage.report] fail_under in pyproject.toml.
# Two workers by default (pytest-xdist); `make pytest WORKERS=0` runs in one process.
WORKERS ?= 2
# The rows are printed when the run fails too: below the floor is when they are wanted.
pytest: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH scripts/with-dockerd.sh $(BIN)/pytest -q -n $(WORKERS) --cov --cov-report= $(PYTEST_ARGS); \
	status=$$?; $(BIN)/python scripts/coverage_by_package.py; exit $$status

test: $(STAMP) system-deps lint typecheck pytest

screenshots: $(STAMP)
	$(BIN)/python -m console.screenshots screenshots

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/eif_measure.py
	$(BIN)/python benchmarks/sign.py
	$(BIN)/python benchmarks/attest.py
	$(BIN)/python benchmarks/tui_console.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/tui_idle.py
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/build.py
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/agent.py
	$(BIN)/python benchmarks/build.py

clean:
	-test -x $(BIN)/python && NITRODECK_BACKEND=emulator $(BIN)/python -m console terminate --all
	rm -rf $(VENV) .nitrodeck-home .dockerd .pytest_cache .mypy_cache .ruff_cache

# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package `make` installs, runtime and the `dev` extra, at an exact version with its hashes (Python 3.11,
# Linux x86_64). Installing needs only pip; uv is needed only by `make lock`, to write this file again.
LOCK := requirements.lock
LOCK_TOOLS := .lock-tools
UV_VERSION := 0.13.8

.PHONY: test demo lint typecheck venv lock clean bench

# 1. the lock, hash-checked, wheels only (nothing is built); 2. patchmoi itself, editable, resolved against what
# step 1 installed with no registry at all: a dependency that pyproject.toml names and the lock lacks (or a range
# the lock's version is outside of) fails here instead of being fetched at whatever version is newest today.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --require-hashes --only-binary :all: -r $(LOCK)
	@$(BIN)/python -m pip install -q --no-index --no-build-isolation -e '.[dev]' \
	  || { echo "$(LOCK) does not satisfy pyproject.toml: run 'make lock'" >&2; exit 1; }
	@touch $(STAMP)

venv: $(STAMP)

# Write requirements.lock again from pyproject.toml. Versions already in the lock are kept while pyproject.toml
# allows them; `make lock UPGRADE=1` moves everything to the newest allowed versions (then run `make test`).
lock:
	@test -x $(LOCK_TOOLS)/bin/uv \
	  || { $(PY) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/python -m pip install -q uv==$(UV_VERSION); }
	$(LOCK_TOOLS)/bin/uv pip compile --quiet pyproject.toml --extra dev --python-version 3.11.7 \
	  --python-platform x86_64-unknown-linux-gnu --generate-hashes --custom-compile-command 'make lock' \
	  $(if $(UPGRADE),--upgrade) -o $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check patchmoi core server patchmoi_tui tests bench
	$(BIN)/ruff format --check core server patchmoi_tui tests bench patchmoi/__init__.py patchmoi/__main__.py

typecheck: $(STAMP)
	$(BIN)/mypy

# 4 workers on 2 cores: the tests mostly wait (subprocesses, loopback servers, tmux, git), not compute.
# Coverage of the patchmoi package as the test workers run it (not the processes tests start: see pyproject.toml,
# [tool.coverage.*], which also sets the floor under the total).
test: lint typecheck
	$(BIN)/python -m pytest -n 4 --cov --cov-report=term:skip-covered

demo: $(STAMP)
	$(BIN)/patchmoi demo

bench: $(STAMP)
	$(BIN)/python bench/store_bench.py

clean:
	rm -rf $(VENV) $(LOCK_TOOLS) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov

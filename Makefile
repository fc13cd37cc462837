# The two commands of the README: `make demo` and `make test`. Both build .venv themselves.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck venv clean bench

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check patchmoi core server patchmoi_tui tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# 4 workers on 2 cores: the tests mostly wait (subprocesses, loopback servers, tmux, git), not compute.
test: lint typecheck
	$(BIN)/python -m pytest -n 4

demo: $(STAMP)
	$(BIN)/patchmoi demo

bench: $(STAMP)
	$(BIN)/python bench/store_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

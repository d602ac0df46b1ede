PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv demo test unit integration bench stack-up stack-down ci clean

$(BIN)/omnirec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/omnirec

demo: venv
	$(BIN)/omnirec demo

# unit + integration tests (the integration ones start tansu themselves; Redis on 127.0.0.1:6379 or valkey)
test: venv
	@bash .ci/ensure-chromium
	$(BIN)/python -m pytest -q

unit: venv
	$(BIN)/python -m pytest -q -m "not integration"

integration: venv
	$(BIN)/python -m pytest -q -m integration

bench: venv
	$(BIN)/python -m bench.run_all

stack-up: venv
	@$(BIN)/omnirec stack up

stack-down: venv
	$(BIN)/omnirec stack down

ci:
	bash .ci/run

clean:
	rm -rf .omnirec .pytest_cache .ci/.venv

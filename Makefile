# Two commands a new user needs: `make run` and `make test`. Both build .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck check bench clean screenshots

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo opens loopback so the README's local listener works; production does not.
run: $(STAMP)
	POSTBACK_ALLOW_TARGETS="$${POSTBACK_ALLOW_TARGETS-127.0.0.0/8,::1/128}" $(BIN)/postback serve

test: $(STAMP)
	$(BIN)/ruff check postback tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -n 2 --dist worksteal -m "not serial" $(PYTEST_ARGS)
	$(BIN)/pytest -m serial $(PYTEST_ARGS)

# The README's screenshots, taken by the browser tests.
screenshots: $(STAMP)
	POSTBACK_SCREENSHOTS=docs/screenshots $(BIN)/pytest tests/test_browser.py -k sqlite

lint: $(STAMP)
	$(BIN)/ruff check postback tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache

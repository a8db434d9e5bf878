# The whole set-up: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
export HF_HUB_OFFLINE := 1

.PHONY: serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, pinned, so nothing pulls a CUDA build; then the package with every engine, Ray and the test tools.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all,ray,dev]"
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/inferrelay serve --host 127.0.0.1 --port $(PORT)

test: $(STAMP)
	$(BIN)/ruff check inferrelay tests bench
	$(BIN)/mypy inferrelay
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/engines.py

clean:
	rm -rf $(VENV)

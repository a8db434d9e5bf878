# The whole set-up: `make serve` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
export HF_HUB_OFFLINE := 1

.PHONY: serve test lint bench clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# llama-cpp-python compiles llama.cpp on install. We build it ourselves, for any x86-64 CPU with AVX2 (Haswell on),
# never for the build CPU (GGML_NATIVE=ON put AVX-512/AMX in a wheel that died with SIGILL on a VM whose CPU
# advertises AMX but traps on it), and never from pip's cache: the wheel lives in a folder keyed by version and flags.
# New flags or a new version => a new folder => a fresh build. See docs/engines.md, "The llama.cpp build".
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON \
	-DGGML_F16C=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
	-DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_CPU_ALL_VARIANTS=OFF
LLAMA_BUILD_KEY := $(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
LLAMA_WHEEL_DIR := .cache/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD_KEY)
LLAMA_WHEEL_BUILT := $(LLAMA_WHEEL_DIR)/.built
LLAMA_INSTALLED := $(VENV)/.llama-cpp-python

# Order-only on the venv: a new .venv reuses the wheel; only new flags or a new version rebuild it (~5 min on 2 cores).
$(LLAMA_WHEEL_BUILT): | $(BIN)/python
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with CMAKE_ARGS=$(LLAMA_CMAKE_ARGS) into $(LLAMA_WHEEL_DIR)"
	rm -rf $(LLAMA_WHEEL_DIR)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip wheel --quiet --no-cache-dir --no-deps \
		--no-binary llama-cpp-python -w $(LLAMA_WHEEL_DIR) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

# Which build .venv holds; rewritten (and so newer than the stamp) only when version or flags change, so
# going back to an older flag set reinstalls its wheel too.
$(LLAMA_INSTALLED): FORCE | $(BIN)/python
	@echo '$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD_KEY)' | cmp -s - $@ || echo '$(LLAMA_CPP_VERSION)-$(LLAMA_BUILD_KEY)' > $@

# torch first, pinned, so nothing pulls a CUDA build; then our llama-cpp-python wheel (forced over whatever
# build is there); then the package with every engine, Ray and the test tools, with llama-cpp-python pinned
# to the installed wheel's version so pip keeps it and never builds another.
$(STAMP): $(BIN)/python pyproject.toml $(LLAMA_WHEEL_BUILT) $(LLAMA_INSTALLED)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-cache-dir --force-reinstall --no-deps \
		$(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/pip install --quiet -e ".[all,ray,dev]" "llama-cpp-python==$(LLAMA_CPP_VERSION)"
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

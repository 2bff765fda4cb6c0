# Quick start: `make run` (set up, compile the example, verify it bit for bit), then `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Written once everything is installed; rebuilt when the dependencies change.
STAMP  := $(VENV)/.hawqc-installed
# Compiled C simulations are cached by content hash; inside the checkout, so a fresh clone starts clean.
export HAWQC_CACHE_DIR ?= $(CURDIR)/.hawqc-cache

EXAMPLE := examples/jet_tagger/jet_tagger_hawq.onnx

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, spelled exactly: the CPU wheel on disk. Any other spelling fetches CUDA builds.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: install
	$(VENV)/bin/hawqc $(EXAMPLE) -o build/jet_tagger --backend vitis --verify 1000 --force

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_executor.py
	$(PY) benchmarks/bench_csim_compile.py
	$(PY) benchmarks/bench_verify_memory.py --samples 100

clean:
	rm -rf build .hawqc-cache lit_tests/Output .pytest_cache

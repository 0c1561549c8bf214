# The two commands: `make demo` (set up + run the embedded default end to end) and `make test` (`make test-all`
# adds the slow tests: what CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo demo-latency lint test test-all bench data clean

setup: $(STAMP) $(FASHION_MNIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# The embedded pre-training data: Debian's Fashion-MNIST package (needs root; CI runs as root).
$(FASHION_MNIST):
	@if [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)); \
	else \
		echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or pass --data-root"; \
	fi

demo: setup
	$(BIN)/nasengine run --preset demo --out runs/demo

# The demo under a latency limit beside the FLOPs one (milliseconds on this machine, one thread, 64 px: see the
# README's "Searching under latency"; another machine has other milliseconds, `nasengine latency build` says which).
demo-latency: setup
	$(BIN)/nasengine run --preset demo --out runs/demo-latency --latency-max 7.5

# Lint and format check (ruff, configured in pyproject.toml) and the type check of the core (mypy nasengine).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The suite in pytest-xdist workers on every core (tests/conftest.py gives each worker cores // workers
# torch threads); `make test` leaves out the long end-to-end tests marked slow, `make test-all` (CI) runs them.
PYTEST := $(BIN)/python -m pytest -q -n auto --maxprocesses 8 --dist loadfile

test: lint
	$(PYTEST) -m "not slow"

test-all: lint
	$(PYTEST)

# Every bench as a module, in name order (bench.fidelity makes the run the later ones read); bench/common.py
# and bench/__init__.py are helpers, not benches.
bench: setup
	for script in bench/*.py; do \
		name=$$(basename $$script .py); \
		case $$name in __init__|common) continue;; esac; \
		$(BIN)/python -m bench.$$name || exit 1; \
	done

clean:
	rm -rf $(VENV) runs .pytest_cache .cache

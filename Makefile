# Two entry points: `make demo` and `make test` (see README). Both build the virtualenv and
# make sure the Fashion-MNIST files are on disk first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEBIAN_DATA := /usr/share/datasets/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test data lint bench clean

# Debian splits venv out of python3; install it when the first try fails.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# Debian's package holds the real files; skipped when the data is already found elsewhere.
data:
	@if [ -n "$$GRADEXP_DATA_DIR" ] || [ -f $(DEBIAN_DATA)/train-images-idx3-ubyte.gz ] || \
		[ -f $$HOME/.keras/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	else $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; fi

demo: $(VENV)/.installed data
	$(BIN)/gradexp data --check
	$(BIN)/gradexp train configs/leaky_he.yaml
	$(BIN)/gradexp compare runs/

test: $(VENV)/.installed data
	$(BIN)/ruff check gradexp tests bench docs
	$(BIN)/python -m pytest -q -n 2

lint: $(VENV)/.installed
	$(BIN)/ruff check gradexp tests bench docs

bench: $(VENV)/.installed data
	$(BIN)/python bench/engine_vs_fit.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache

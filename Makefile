# Everything the project needs is installed from here. Two entry points for a fresh machine:
#   make demo   set up (virtualenv + package) and run `aelf demo` on the embedded MNIST digits
#   make test   set up (virtualenv + package + test tools) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 CPU wheel: a local file on these machines (see README); pip falls back to the index elsewhere.
WHEELS ?= /opt/wheels
PIP_FLAGS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)

.PHONY: setup demo test bench clean

$(BIN)/aelf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_FLAGS) "torch==2.13.0"
	$(BIN)/pip install --quiet $(PIP_FLAGS) -e ".[dev]"
	touch $(BIN)/aelf

setup: $(BIN)/aelf

demo: setup
	$(BIN)/aelf demo

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) aelf-demo .pytest_cache

# Everything the project needs is installed from here. Two entry points for a fresh machine:
#   make demo   set up (virtualenv + package) and run `aelf demo` on the embedded MNIST digits
#   make test   set up (virtualenv + package + test tools), lint, run the whole test suite and build the docs
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 CPU wheel: a local file on these machines (see README); pip falls back to the index elsewhere.
WHEELS ?= /opt/wheels
PIP_FLAGS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)

FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: setup data demo lint docs test test-avx2 clean

$(BIN)/aelf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_FLAGS) "torch==2.13.0"
	$(BIN)/pip install --quiet $(PIP_FLAGS) -e ".[dev]"
	touch $(BIN)/aelf

setup: $(BIN)/aelf

# Full Fashion-MNIST from Debian's dataset-fashion-mnist package (optional: its test is skipped without it, and
# nothing else needs it). Installed only where we are root with apt-get; elsewhere this prints how to get it.
data:
	@if [ -d $(FASHION_MNIST) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist into $(FASHION_MNIST)"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } || \
	  echo "note: could not install dataset-fashion-mnist; the Fashion-MNIST test will be skipped"; \
	else echo "note: 'sudo apt-get install dataset-fashion-mnist' adds the full Fashion-MNIST (optional)"; fi

demo: setup
	$(BIN)/aelf demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The documentation site (docs/, mkdocs.yml) into site/, git-ignored; --strict turns every warning (a broken link or
# anchor, a missing included file, a docstring the API reference cannot read) into a failure.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The tests of models, kernels, memory formats and bit-exact resume again on oneDNN's and ATen's AVX2 code paths
# (what a CPU without AVX-512 runs), so a green run means green on both kinds of x86 CPU (aelf.memory_format).
AVX2_TESTS := tests/test_memory_format.py tests/test_bench.py tests/test_models.py \
	tests/test_reliability.py::test_sigkill_mid_epoch_then_resume_is_bit_for_bit_the_uninterrupted_run \
	tests/test_pinned.py

test: setup data lint docs
	$(BIN)/python -m pytest -q
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -p no:cacheprovider $(AVX2_TESTS)

test-avx2: setup
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -q -p no:cacheprovider $(AVX2_TESTS)

clean:
	rm -rf $(VENV) aelf-demo .pytest_cache site

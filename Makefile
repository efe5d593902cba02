# `make demo` and `make test` create .venv when it is missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch and torchvision are pinned to the releases this workplace has on disk; override
# TORCH= to install others (e.g. a CPU-only wheel index on your own machine).
TORCH ?= torch==2.14.1 torchvision==0.29.1
EXTRAS ?= train,export,runtime,fleet,openvino,triton,dev
# Triton's CPU server (the nvidia-pytriton wheel's tritonserver, without its Python deps, which
# pin numpy<2) and the packages its Python backend runs with (numpy<2 and onnxruntime, apart)
PYTRITON ?= nvidia-pytriton==0.7.0
STAMP := $(VENV)/.installed-$(shell echo '$(TORCH) $(EXTRAS) $(PYTRITON)' | cksum | cut -d' ' -f1)

.PHONY: demo test setup clean gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	$(PY) -m pip install -q --no-deps $(PYTRITON)
	$(PY) -m pip install -q --target $(VENV)/triton-site 'numpy<2' "onnxruntime==$$($(PY) -c 'import onnxruntime; print(onnxruntime.__version__)')"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(VENV)/bin/reminder demo

test: $(STAMP)
	$(VENV)/bin/ruff check reminder tests benchmarks
	$(PY) -m pytest

# the CUDA and TensorRT checks, on a machine with a GPU: make gpu-check OUT=gpu-results
# (a machine without network, with its own CUDA torch: INSTALL=0 make gpu-check PY=python3 OUT=DIR)
gpu-check:
	PY=$(PY) bash benchmarks/gpu_check.sh $(or $(OUT),gpu-results)

clean:
	rm -rf $(VENV) runs .pytest_cache

# llm-from-scratch: the two commands are `make lab` and `make test`.
# Both set up whatever is missing first (scripts/setup.sh, idempotent).

SHELL := /bin/bash
ROOT := $(CURDIR)
# tch finds libtorch through the venv's torch (LIBTORCH_USE_PYTORCH asks its python).
export PATH := $(ROOT)/.venv/bin:$(PATH)
export VIRTUAL_ENV := $(ROOT)/.venv
export LIBTORCH_USE_PYTORCH := 1
# The cc crate's C and C++ compilers: cc and c++ behind ccache where installed (setup installs
# it), so torch-sys's C++ and most crates' C compile once for cargo's build and the kernel's.
export CC := $(ROOT)/scripts/cc
export CXX := $(ROOT)/scripts/cxx

.PHONY: lab test setup notebooks build bench mlflow

## lab: set up, then open the chapters in JupyterLab on http://127.0.0.1:8888
lab: setup
	jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

## test: set up, then the committed chapters checked, cargo test, the examples in their quick
## mode, every chapter executed headless (and checked) and the kernel's tests; ends with a
## table of every phase's seconds
test:
	bash scripts/test.sh

## setup: the venv with torch and Jupyter, the evcxr kernel, our kernel spec
setup:
	bash scripts/setup.sh

## build: compile the library and the `llm` binary
build: setup
	cargo build --release

## notebooks: re-execute the chapters and write their outputs back (commit them)
notebooks: setup
	python scripts/run_notebooks.py --inplace

## bench: training throughput in fp32 and bf16, each against its matmul peak, beside a PyTorch
## reference of the same models (examples/bench.rs, scripts/bench_torch.py), generation
## with and without the KV cache (examples/generate_bench.rs), then BPE training and encoding
## speed against tokenizers and tiktoken-rs (examples/bpe_bench.rs)
bench: setup
	cargo run --release --example bench
	cargo run --release --example generate_bench
	cargo run --release --example bpe_bench

## mlflow: MLflow's UI on http://127.0.0.1:5000, runs kept under runs/mlflow/ (installed into
## .venv-mlflow/ on first use); train with MLFLOW_TRACKING_URI=http://127.0.0.1:5000
mlflow:
	bash scripts/mlflow.sh serve

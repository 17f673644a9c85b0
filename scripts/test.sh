#!/usr/bin/env bash
# `make test`: the library's tests, the MLflow tests (MLflow installed on demand), every chapter
# executed headless, then the kernel's tests.
#
# Where the reference data of the course sits beside this checkout (../shared/data, as in CI),
# it is served on 127.0.0.1 and used as the download mirror, so the real HTTP download path
# runs without the internet. Otherwise datasets come from their public URLs.
set -euo pipefail
cd "$(dirname "$0")/.."

# What runs in the background (the mirror, the MLflow install) ends with this script.
background=()
trap 'kill "${background[@]}" 2>/dev/null || true' EXIT

shared=../shared/data
if [ -z "${LLM_DATA_MIRROR:-}" ] && [ -d "$shared" ]; then
  exec {mirror_out}< <(exec .venv/bin/python scripts/mirror.py "$shared" --max-seconds 7200)
  background+=($!)
  read -r -u "$mirror_out" LLM_DATA_MIRROR
  export LLM_DATA_MIRROR
  echo "[test] dataset mirror: $LLM_DATA_MIRROR (serving $shared)"
fi

# The tests start their own MLflow servers: one the caller has set is not for them.
unset MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME

# MLflow installs (mostly a download) while cargo test builds (mostly compiling).
mkdir -p target
bash scripts/mlflow.sh install > target/mlflow-install.log 2>&1 &
mlflow_install=$!
background+=($mlflow_install)

start=$(date +%s)
cargo test
echo "[test] cargo test: $(( $(date +%s) - start )) s"

start=$(date +%s)
if ! wait "$mlflow_install"; then
  cat target/mlflow-install.log >&2
  echo "[test] installing MLflow failed" >&2
  exit 1
fi
echo "[test] waited for the MLflow install: $(( $(date +%s) - start )) s"
start=$(date +%s)
cargo test --test mlflow -- --ignored
echo "[test] MLflow tests: $(( $(date +%s) - start )) s"

start=$(date +%s)
.venv/bin/python scripts/run_notebooks.py
echo "[test] notebooks: $(( $(date +%s) - start )) s"

# The kernel as the lab uses it (■, Run All, live plots); reuses the chapters' build.
start=$(date +%s)
.venv/bin/python tests/kernel.py
echo "[test] kernel: $(( $(date +%s) - start )) s"

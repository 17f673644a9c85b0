#!/usr/bin/env bash
# `make test`: setup (whatever is missing), the committed chapters checked, the library's
# tests, every example in its quick mode (so a command the README gives cannot rot unseen),
# the MLflow tests (MLflow installed on demand), every chapter executed headless, then the
# kernel's tests. It ends with a table of every phase and every chapter with its seconds
# (also when a phase fails).
#
# Where the reference data of the course sits beside this checkout (../shared/data, as in CI),
# it is served on 127.0.0.1 and used as the download mirror, so the real HTTP download path
# runs without the internet. Otherwise datasets come from their public URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target

# Every phase appends "name<TAB>seconds" here; the table at the end reads it.
export LLM_TIMINGS=$PWD/target/test-timings.tsv
: > "$LLM_TIMINGS"
t_start=$SECONDS

# What runs in the background (the mirror, the MLflow install) ends with this script.
background=()
finish() {
  local status=$?
  kill "${background[@]}" 2>/dev/null || true
  printf '\n[test] where the time went%s:\n' "$([ "$status" = 0 ] || echo " (FAILED, exit $status)")"
  printf 'total\t%s\n' "$((SECONDS - t_start))" >> "$LLM_TIMINGS"
  awk -F'\t' '{ printf "  %-58s %6d s  %5.1f min\n", $1, $2, $2 / 60 }' "$LLM_TIMINGS"
}
trap finish EXIT

# phase NAME CMD...: run CMD and record its seconds under NAME.
phase() {
  local name=$1 t0=$SECONDS
  shift
  echo "[test] $name ..."
  "$@"
  printf '%s\t%s\n' "$name" "$((SECONDS - t0))" >> "$LLM_TIMINGS"
}

# The Makefile exports what cargo and the kernel need (the venv first on PATH, LIBTORCH_USE_PYTORCH, CC, CXX).
phase "setup (all)" bash scripts/setup.sh

# The committed chapters as a reader sees them, and the README's numbers against their
# summaries (a few seconds; the runner checks the chapters it executes the same way).
committed_chapters() {
  .venv/bin/python tests/chapter_check.py
  .venv/bin/python scripts/chapter_check.py
}
phase "committed chapters checked" committed_chapters

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
bash scripts/mlflow.sh install > target/mlflow-install.log 2>&1 &
mlflow_install=$!
background+=($mlflow_install)

# One test at a time: two at once each ask libtorch for both cores, and the library's tests
# took 264-267 s that way against 220 s one by one (2 cores, the same commit).
phase "cargo test (its build included)" cargo test -- --test-threads=1

# The examples `make bench` runs, in their quick mode, in the test build (already compiled).
examples() {
  local example
  for example in bench generate_bench bpe_bench; do
    cargo run --quiet --example "$example" -- --quick
  done
}
phase "examples, quick mode" examples

mlflow_wait() {
  if ! wait "$mlflow_install"; then
    cat target/mlflow-install.log >&2
    echo "[test] installing MLflow failed" >&2
    return 1
  fi
}
phase "waiting for the MLflow install" mlflow_wait
phase "MLflow tests" cargo test --test mlflow -- --ignored

# Each chapter's own line ("notebook: NAME") comes from the runner.
phase "chapters (all)" .venv/bin/python scripts/run_notebooks.py

# The kernel as the lab uses it (■, Run All, live plots); reuses the chapters' build.
phase "kernel tests" .venv/bin/python tests/kernel.py

#!/usr/bin/env bash
# `make test`: the library's tests, every chapter executed headless, then the kernel's tests.
#
# Where the reference data of the course sits beside this checkout (../shared/data, as in CI),
# it is served on 127.0.0.1 and used as the download mirror, so the real HTTP download path
# runs without the internet. Otherwise datasets come from their public URLs.
set -euo pipefail
cd "$(dirname "$0")/.."

shared=../shared/data
if [ -z "${LLM_DATA_MIRROR:-}" ] && [ -d "$shared" ]; then
  exec {mirror_out}< <(exec .venv/bin/python scripts/mirror.py "$shared" --max-seconds 7200)
  mirror_pid=$!
  trap 'kill $mirror_pid 2>/dev/null || true' EXIT
  read -r -u "$mirror_out" LLM_DATA_MIRROR
  export LLM_DATA_MIRROR
  echo "[test] dataset mirror: $LLM_DATA_MIRROR (serving $shared)"
fi

start=$(date +%s)
cargo test
echo "[test] cargo test: $(( $(date +%s) - start )) s"

start=$(date +%s)
.venv/bin/python scripts/run_notebooks.py
echo "[test] notebooks: $(( $(date +%s) - start )) s"

# The kernel as the lab uses it (■, Run All, live plots); reuses the chapters' build.
start=$(date +%s)
.venv/bin/python tests/kernel.py
echo "[test] kernel: $(( $(date +%s) - start )) s"

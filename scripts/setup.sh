#!/usr/bin/env bash
# Set up everything the lab and the tests need, idempotently: each step is skipped when its
# result is already there and current.
#   1. .venv/ with torch (libtorch for tch), JupyterLab and nbconvert (installed while step 3
#      compiles: one is mostly downloading, the other compiling)
#   2. ccache, so the C and C++ that crates compile (libtch and others) compile once for the
#      kernel's build and cargo's
#   3. evcxr_jupyter (the Rust kernel), pinned, installed under target/tools/
#   4. our Jupyter kernel spec "Rust (llm-from-scratch)", inside the venv
#   5. the library compiled in the kernel's build folder (scripts/warm_lab.py), so the
#      chapters' first cells answer in seconds
# With LLM_TIMINGS=FILE, each step's seconds are appended to FILE (make test's table).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

EVCXR_VERSION=0.22.0
venv=$root/.venv
tools=$root/target/tools

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
# timed NAME CMD...: run CMD, and record its seconds under NAME in $LLM_TIMINGS.
timed() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  [ -z "${LLM_TIMINGS:-}" ] || printf 'setup: %s\t%s\n' "$name" "$((SECONDS - t0))" >> "$LLM_TIMINGS"
}

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found: install Python 3.10 or newer" >&2; exit 1; }
mkdir -p "$root/target"

# 1. Python venv. The stamp records which requirements it was built from. It installs in the
#    background while the kernel compiles (it only needs the network and the disk, the kernel
#    both cores); its output goes to target/venv-install.log.
venv_stamp=$venv/.requirements.sha256
venv_want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
venv_step() {
  [ "$(cat "$venv_stamp" 2>/dev/null)" != "$venv_want" ] || return 0
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r scripts/requirements.txt
  echo "$venv_want" > "$venv_stamp"
}
if [ "$(cat "$venv_stamp" 2>/dev/null)" != "$venv_want" ]; then
  say "creating .venv with torch and Jupyter in the background (first time: a few minutes)"
fi
timed "venv (in the background)" venv_step > target/venv-install.log 2>&1 &
venv_job=$!
wait_for_venv() {
  if ! wait "$venv_job"; then
    cat target/venv-install.log >&2
    echo "[setup] installing the venv failed (log: target/venv-install.log)" >&2
    exit 1
  fi
}

# 2. ccache behind the C and C++ compilers (CC=scripts/cc and CXX=scripts/cxx, read by the cc
#    crate): the kernel's build and cargo's build each compile torch-sys's libtch and some
#    crates' C with the same flags, so the second is a cache hit (44 of cargo's 254 compiles;
#    not zstd-sys's, whose commands differ between the two builds). Installed from the
#    system's packages where setup may do that (root with apt-get); otherwise everything works
#    without it, compiling libtch twice.
if ! command -v ccache >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing ccache (apt-get)"
  apt-get install -y -q ccache >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q ccache >/dev/null 2>&1; } \
    || say "could not install ccache: libtch will compile once per build"
fi

# 3. The evcxr Jupyter kernel: the pinned release's source from crates.io (sha256-checked),
#    with scripts/evcxr.patch applied (■ stops a cell without losing its variables, Run All
#    stops at an error, live displays; the patch's header says what and why), built with the
#    release's own Cargo.lock. The stamp records the version and the patch it was built from.
#    Its rust-analyzer crates (most of the build) compile at opt-level 1, not 3: the kernel
#    builds in half the time, and a cell's type analysis stays well under a second. And
#    without the thin LTO that cargo runs within each crate by default (`lto = "off"`): on 2
#    cores the build took 256 s against 332 s with it, and a cell 3-5% longer (0.75 s
#    against 0.72 s for a model's constructor; the first cell's analysis 9.5 s against 9.2 s).
KERNEL_PROFILE=(CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off)
kernel_step() {
  local stamp=$tools/.evcxr.sha256 want src=$tools/src
  want=$( (echo "$EVCXR_VERSION ${KERNEL_PROFILE[*]}"; cat scripts/evcxr.patch) | sha256sum | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! [ -x "$tools/bin/evcxr_jupyter" ] || return 0
  say "building evcxr_jupyter $EVCXR_VERSION with scripts/evcxr.patch (first time: several minutes)"
  rm -rf "$src"
  python3 - "$src" "$EVCXR_VERSION" <<'PY'
import hashlib, io, sys, tarfile, urllib.request
dest, version = sys.argv[1], sys.argv[2]
crates = {  # the registry's checksums of the pinned release
    "evcxr": "ee69caeeefc311959b85962458e370d8eccb165123edbc5270134aaee6d7ed80",
    "evcxr_jupyter": "3ce0d7b3058f68a9673df4f1266b641942fea0ec131881d095306e509a382764",
}
for name, sha256 in crates.items():
    url = f"https://static.crates.io/crates/{name}/{name}-{version}.crate"
    data = urllib.request.urlopen(url, timeout=120).read()
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"{url}: sha256 mismatch (expected {sha256})")
    tarfile.open(fileobj=io.BytesIO(data)).extractall(dest, filter="data")
PY
  git apply --directory="${src#"$root"/}" scripts/evcxr.patch
  env "${KERNEL_PROFILE[@]}" cargo install --quiet --locked --force --root "$tools" --target-dir "$tools/build" \
    --path "$src/evcxr_jupyter-$EVCXR_VERSION"
  echo "$want" > "$stamp"
}
timed kernel kernel_step
timed "waiting for the venv" wait_for_venv

# 4. The kernel spec. Its env gives the kernel what `cargo build` gets from the Makefile:
#    the venv's python (torch-sys asks it where libtorch is), libtorch's lib folder for the
#    loader, the C and C++ compilers behind ccache (scripts/cc, scripts/cxx), and one
#    persistent evcxr build folder so the library compiles once, not once per notebook.
torch_lib=$("$venv/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
kernel_dir=$venv/share/jupyter/kernels/llm-from-scratch
mkdir -p "$kernel_dir" "$root/target/evcxr"
"$venv/bin/python" - "$kernel_dir/kernel.json" <<PY
import json, sys
spec = {
    "display_name": "Rust (llm-from-scratch)",
    "language": "rust",
    "interrupt_mode": "message",
    "argv": ["$tools/bin/evcxr_jupyter", "--control_file", "{connection_file}"],
    "env": {
        "PATH": "$venv/bin:$(dirname "$(command -v cargo)"):/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": "$venv",
        "LIBTORCH_USE_PYTORCH": "1",
        "LD_LIBRARY_PATH": "$torch_lib",
        "EVCXR_TMPDIR": "$root/target/evcxr",
        "CC": "$root/scripts/cc",
        "CXX": "$root/scripts/cxx",
        # A failed assert! prints its message, not a backtrace of evcxr's generated code.
        "RUST_BACKTRACE": "0",
        # The kernel's allocator (mimalloc) without transparent huge pages: rust-analyzer's
        # first look at a chapter (its :dep cell and first let) spent a sixth of its time
        # zeroing 2 MiB pages; without them the two cells took 8.6 + 8.5 s, not 12 + 10 s.
        "MIMALLOC_ALLOW_THP": "0",
    },
}
new = json.dumps(spec, indent=2) + "\n"
try:
    old = open(sys.argv[1]).read()
except FileNotFoundError:
    old = None
if old != new:
    open(sys.argv[1], "w").write(new)
    print("[setup] kernel spec written:", sys.argv[1])
PY

# 5. The library, compiled in the kernel's build folder by the chapters' own first cells
#    (skipped when nothing they compile changed since).
timed "library in the kernel" "$venv/bin/python" scripts/warm_lab.py

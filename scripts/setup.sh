#!/usr/bin/env bash
# Set up everything the lab and the tests need, idempotently: each step is skipped when its
# result is already there and current.
#   1. .venv/ with torch (libtorch for tch), JupyterLab and nbconvert
#   2. evcxr_jupyter (the Rust kernel), pinned, installed under target/tools/
#   3. our Jupyter kernel spec "Rust (llm-from-scratch)", inside the venv
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

EVCXR_VERSION=0.22.0
venv=$root/.venv
tools=$root/target/tools

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found: install Python 3.10 or newer" >&2; exit 1; }

# 1. Python venv. The stamp records which requirements it was built from.
stamp=$venv/.requirements.sha256
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating .venv with torch and Jupyter (first time: a few minutes)"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r scripts/requirements.txt
  echo "$want" > "$stamp"
fi

# 2. The evcxr Jupyter kernel: the pinned release's source from crates.io (sha256-checked),
#    with scripts/evcxr.patch applied (■ stops a cell without losing its variables, Run All
#    stops at an error, live displays; the patch's header says what and why), built with the
#    release's own Cargo.lock. The stamp records the version and the patch it was built from.
stamp=$tools/.evcxr.sha256
want=$( (echo "$EVCXR_VERSION"; cat scripts/evcxr.patch) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! [ -x "$tools/bin/evcxr_jupyter" ]; then
  say "building evcxr_jupyter $EVCXR_VERSION with scripts/evcxr.patch (first time: several minutes)"
  src=$tools/src
  rm -rf "$src"
  "$venv/bin/python" - "$src" "$EVCXR_VERSION" <<'PY'
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
  cargo install --quiet --locked --force --root "$tools" --target-dir "$tools/build" \
    --path "$src/evcxr_jupyter-$EVCXR_VERSION"
  echo "$want" > "$stamp"
fi

# 3. The kernel spec. Its env gives the kernel what `cargo build` gets from the Makefile:
#    the venv's python (torch-sys asks it where libtorch is), libtorch's lib folder for the
#    loader, and one persistent evcxr build folder so the library compiles once, not once
#    per notebook.
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
        # A failed assert! prints its message, not a backtrace of evcxr's generated code.
        "RUST_BACKTRACE": "0",
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

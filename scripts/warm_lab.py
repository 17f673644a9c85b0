"""Compile what the chapters' first cells load, once, so that no cell of the lab waits for it.

    .venv/bin/python scripts/warm_lab.py    # scripts/setup.sh runs it after building the kernel

Each distinct first cell of the chapters (the `:dep` lines: chapter 6 adds two crates) is run
once in the course's kernel, from `notebooks/` as Jupyter runs it, so the build lands in the
kernel's build folder (target/evcxr/) exactly as a chapter would make it. While it compiles, a
progress line says how many crates are built and for how long. A stamp records what was
warmed (the kernel, the manifest, the lock file, the library's sources, the first cells):
when nothing changed, the script returns at once.
"""

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "target" / "evcxr"
STAMP = BUILD / ".warm.sha256"
KERNEL = "llm-from-scratch"
TIMEOUT = 3600  # a cold build on a slow 2-core machine takes minutes, not an hour


def first_cells() -> list[str]:
    """The distinct first code cells of the chapters, in chapter order."""
    cells = []
    for path in sorted((ROOT / "notebooks").glob("[0-9]*.ipynb")):
        nb = json.loads(path.read_text())
        code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        source = "".join(code["source"])
        if source not in cells:
            cells.append(source)
    return cells


def fingerprint(cells: list[str]) -> str:
    h = hashlib.sha256()
    h.update(subprocess.run(["rustc", "-V"], capture_output=True, text=True, check=True).stdout.encode())
    for path in [ROOT / "target/tools/.evcxr.sha256", ROOT / "Cargo.toml", ROOT / "Cargo.lock", ROOT / "build.rs"]:
        h.update(path.read_bytes())
    for path in sorted([*(ROOT / "src").rglob("*.rs"), *(ROOT / "csrc").rglob("*.cpp")]):
        h.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    for cell in cells:
        h.update(cell.encode())
    return h.hexdigest()


def crates_built() -> int:
    """Crates compiled so far in the kernel's build folder (one file name stem each)."""
    stems = {p.name.split("-")[0] for d in BUILD.glob("target/*/debug/deps") for p in d.iterdir()
             if p.suffix in (".so", ".rlib")}
    return len(stems)


def show_progress(what: str, done: threading.Event) -> None:
    """One line, redrawn every second on a terminal; a line every 30 s in a log."""
    t0, tty, last = time.monotonic(), sys.stdout.isatty(), 0.0
    while not done.wait(1.0):
        elapsed = time.monotonic() - t0
        line = f"[setup] {what}: {crates_built()} crates built, {int(elapsed) // 60}:{int(elapsed) % 60:02d}"
        if tty:
            print("\r" + line, end="", flush=True)
        elif elapsed - last >= 30:
            print(line, flush=True)
            last = elapsed
    if tty:
        print()


def run_cell(source: str) -> None:
    km, kc = start_new_kernel(kernel_name=KERNEL, startup_timeout=120, cwd=str(ROOT / "notebooks"))
    try:
        msg_id = kc.execute(source)
        deadline = time.monotonic() + TIMEOUT
        printed = []
        while True:
            msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                printed.append(content["text"])
            elif kind == "error":
                printed.extend(line + "\n" for line in content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        # The shell channel may still hold kernel_info replies from the kernel's start: the
        # cell's own reply is the one whose parent is the execute request.
        reply = kc.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kc.get_shell_msg(timeout=60)
        if reply["content"]["status"] != "ok":
            sys.exit(f"[setup] the first cell failed in the kernel:\n{source}\n{''.join(printed)}")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> int:
    cells = first_cells()
    want = fingerprint(cells)
    if STAMP.exists() and STAMP.read_text().strip() == want:
        return 0
    BUILD.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(cells, 1):
        what = "compiling the library for the lab" + (f" ({i} of {len(cells)} first cells)" if len(cells) > 1 else "")
        t0, done = time.monotonic(), threading.Event()
        progress = threading.Thread(target=show_progress, args=(what, done), daemon=True)
        progress.start()
        try:
            run_cell(source)
        finally:
            done.set()
            progress.join()
        print(f"[setup] {what}: done in {time.monotonic() - t0:.0f} s", flush=True)
    STAMP.write_text(want + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

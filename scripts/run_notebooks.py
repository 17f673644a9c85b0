"""Execute the chapter notebooks headless with our Rust kernel; fail on any cell error.

    python scripts/run_notebooks.py [NOTEBOOK...]            # test: outputs go to target/notebooks/
    python scripts/run_notebooks.py --inplace [NOTEBOOK...]  # refresh the committed outputs

Each executed chapter is then checked by scripts/chapter_check.py (no error output, no text
over 20 KB, no tensor footer, images as PNG, no stray `()`, a closing summary cell).

Prints each chapter's execution time and its first cell's time (the `:dep` line: seconds
once setup has compiled the library). With LLM_TIMINGS=FILE (make test), each chapter's
seconds are appended to FILE too, for make test's closing table.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from chapter_check import problems

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "llm-from-scratch"


def execute(path: Path, inplace: bool) -> tuple[float, float, list[str]]:
    nb = nbformat.read(path, as_version=4)
    starts: dict[int, float] = {}
    times: dict[int, float] = {}

    def on_start(cell, cell_index, **_):
        starts[cell_index] = time.perf_counter()

    def on_executed(cell, cell_index, **_):
        times[cell_index] = time.perf_counter() - starts[cell_index]

    client = NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=3600,
        startup_timeout=120,
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_start=on_start,
        on_cell_executed=on_executed,
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        out = path if inplace else ROOT / "target" / "notebooks" / path.name
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    first = times[min(times)] if times else 0.0
    return time.perf_counter() - t0, first, problems(nb, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--inplace", action="store_true", help="write outputs back into the notebooks")
    args = parser.parse_args()
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    failed = []
    for path in paths:
        print(f"[notebooks] {path.name} ...", flush=True)
        try:
            total, first, found = execute(path, args.inplace)
            verdict = "ok" if not found else f"executed, {len(found)} problems"
            print(f"[notebooks] {path.name}: {verdict} in {total:.1f} s (first cell {first:.1f} s)", flush=True)
            if os.environ.get("LLM_TIMINGS"):
                with open(os.environ["LLM_TIMINGS"], "a") as timings:
                    timings.write(f"  chapter {path.stem} (first cell {first:.0f} s)\t{total:.0f}\n")
            if found:
                failed.append(path.name)
                print("\n".join(f"[notebooks] {line}" for line in found), file=sys.stderr, flush=True)
        except CellExecutionError as e:
            failed.append(path.name)
            print(f"[notebooks] {path.name}: FAILED\n{e}", file=sys.stderr, flush=True)
    if failed:
        print(f"[notebooks] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

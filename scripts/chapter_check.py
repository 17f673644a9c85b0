"""What an executed chapter must look like, to a learner reading it on a code host or in the lab.

    python scripts/chapter_check.py [NOTEBOOK...]   # the committed chapters, and the README's numbers

`scripts/run_notebooks.py` applies `problems` to every chapter it executes, so `make test`
fails on these as on a cell error. A chapter fails when it has:
- an error output;
- a text output over 20 KB (a tensor or a figure printed as text, a log that ran away);
- a tensor's shape footer (`Tensor[[4], Int64]`: print tensors with `plot::values`);
- an image in another format than PNG;
- a stray `()` as a cell's value;
- no closing summary: its last cell is code and prints `chapter N: all checks passed`, then
  one line `  what: value` per number the chapter asserts.

Run on its own (make test does, first), it also checks that each line of the committed
chapters' summaries has a row of its own in README.md's "Results" tables: one row that names
the chapter ("ch. N") and shows every number of the line, so the results say what the
chapters print, where a reader looks for it.
"""

import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
MAX_TEXT_BYTES = 20_000
TENSOR_FOOTER = re.compile(r"^Tensor\[\[[\d, ]*\], \w+\]$", re.MULTILINE)
SUMMARY_LINE = re.compile(r"^  (?P<what>\S.*?): (?P<value>.+)$")  # what: up to the first ": "
NUMBER = re.compile(r"\d+(?:[.,]\d+)*(?:e-?\d+)?")


def _texts(output) -> list[str]:
    """The text an output shows: a stream's, or a result's or display's text/plain."""
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    text = output.get("data", {}).get("text/plain")
    return [text] if text is not None else []


def chapter_number(path: Path) -> int:
    return int(path.name.split("_", 1)[0])


def summary(nb) -> list[str]:
    """The closing cell's printed lines (empty when the chapter has no closing code cell)."""
    last = nb.cells[-1] if nb.cells else None
    if last is None or last.cell_type != "code":
        return []
    return "".join(t for o in last.get("outputs", []) for t in _texts(o)).splitlines()


def problems(nb, path: Path) -> list[str]:
    """Everything wrong with an executed chapter, one line each (empty: it is fine)."""
    found = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name} cell {index}"
        for output in cell.get("outputs", []):
            kind = output.get("output_type")
            if kind == "error":
                found.append(f"{where}: an error output ({output.get('ename', '?')})")
            for text in _texts(output):
                size = len(text.encode())
                if size > MAX_TEXT_BYTES:
                    found.append(f"{where}: {size:,} bytes of text (at most {MAX_TEXT_BYTES:,})")
                footer = TENSOR_FOOTER.search(text)
                if footer:
                    found.append(f"{where}: a tensor's shape footer {footer.group(0)!r} (print it with plot::values)")
            images = [mime for mime in output.get("data", {}) if mime.startswith("image/")]
            found += [f"{where}: an image as {mime}, not image/png" for mime in images if mime != "image/png"]
            if kind == "execute_result" and output.get("data", {}).get("text/plain", "").strip() == "()":
                found.append(f"{where}: a stray () as the cell's value")
    lines = summary(nb)
    want = f"chapter {chapter_number(path)}: all checks passed"
    if not lines or lines[0] != want:
        found.append(f"{path.name}: the last cell must be code and print {want!r} first (got {lines[:1]})")
    else:
        bad = [line for line in lines[1:] if not SUMMARY_LINE.match(line)]
        found += [f"{path.name}: summary line {line!r} is not '  what: value'" for line in bad]
    return found


def results_rows(readme: str) -> list[str]:
    """The rows of README.md's "## Results" tables, up to the next section."""
    start = readme.find("\n## Results\n")
    end = readme.find("\n## ", start + 1)
    section = readme[start:end] if start >= 0 else ""
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")]


def readme_problems(nb, path: Path, readme: str) -> list[str]:
    """Summary lines of a committed chapter that no row of README.md's results shows whole:
    each line's numbers must all be in one row that names the chapter ("ch. N")."""
    chapter = re.compile(rf"\bch\. (?:\d+, )*{chapter_number(path)}\b")
    rows = [set(NUMBER.findall(row)) for row in results_rows(readme) if chapter.search(row)]
    found = []
    for m in filter(None, map(SUMMARY_LINE.match, summary(nb)[1:])):
        numbers = NUMBER.findall(m["value"])
        if not any(all(n in row for n in numbers) for row in rows):
            found.append(f"{path.name}: no row of README.md's results for chapter {chapter_number(path)} "
                         f"shows all of {', '.join(numbers)} ({m['what']}: {m['value']})")
    return found


def main() -> int:
    paths = [Path(p) for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    readme = (ROOT / "README.md").read_text()
    found = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        found += problems(nb, path) + readme_problems(nb, path, readme)
    for line in found:
        print(f"[chapters] {line}", file=sys.stderr)
    print(f"[chapters] {len(paths)} chapters checked: {'ok' if not found else f'{len(found)} problems'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

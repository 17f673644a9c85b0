"""The chapter check (scripts/chapter_check.py) catches each defect it names, and passes a
clean chapter. `make test` runs it before the chapters.

    .venv/bin/python tests/chapter_check.py
"""

import sys
from pathlib import Path

from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from chapter_check import problems, readme_problems  # noqa: E402

PATH = Path("09_example.ipynb")


def chapter(*outputs, closing=("chapter 9: all checks passed\n  val loss: 1.911\n",)):
    """A chapter whose one body cell has `outputs`, closed by a cell printing `closing`."""
    cells = [new_markdown_cell("# Chapter 9"), new_code_cell("body", outputs=list(outputs))]
    cells += [new_code_cell("summary", outputs=[new_output("stream", name="stdout", text=t)]) for t in closing]
    return new_notebook(cells=cells)


def stdout(text):
    return new_output("stream", name="stdout", text=text)


def check(name, nb, expect):
    found = problems(nb, PATH)
    ok = any(expect in line for line in found) if expect else not found
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {found}")
    return ok


cases = [
    ("a clean chapter passes", chapter(stdout("[[0, 1],\n [2, 3]]\n")), None),
    ("an error output", chapter(new_output("error", ename="Error", evalue="boom", traceback=[])), "error output"),
    ("text over 20 KB", chapter(stdout("x" * 20_001)), "bytes of text"),
    ("a tensor footer", chapter(stdout("starts: [1, 2]\nTensor[[4], Int64]\noffsets: [0]\n")), "shape footer"),
    ("a footer in a result", chapter(new_output("execute_result", data={"text/plain": "[0.5]\nTensor[[1], Float]"})), "shape footer"),
    ("an SVG image", chapter(new_output("display_data", data={"image/svg+xml": "<svg/>", "text/plain": "fig"})), "image/svg+xml"),
    ("a stray ()", chapter(new_output("execute_result", data={"text/plain": "()"})), "stray ()"),
    ("no summary cell", new_notebook(cells=[new_code_cell("body"), new_markdown_cell("the end")]), "last cell"),
    ("the wrong chapter's summary", chapter(closing=("chapter 8: all checks passed\n",)), "last cell"),
    ("a summary line without a value", chapter(closing=("chapter 9: all checks passed\nval loss 1.9\n",)), "what: value"),
]
results = [check(*case) for case in cases]

# The README's results: each summary line whole, in one row naming the chapter.
two_lines = chapter(closing=("chapter 9: all checks passed\n  val loss: 1.911\n  steps: 2000\n",))
readme_cases = [
    ("its own row shows it", two_lines, "| val loss 1.911 after 2000 steps (ch. 9) | yes |", True),
    ("a stale number", chapter(), "| val loss (ch. 9) | 1.893 |\n\n## Timings\n1.911", False),
    ("another chapter's row", chapter(), "| val loss (ch. 8) | 1.911 |", False),
    ("the numbers split over two rows", chapter(closing=("chapter 9: all checks passed\n  losses: 1.911 vs 2.5\n",)),
     "| train loss (ch. 9) | 1.911 |\n| val loss (ch. 9) | 2.5 |", False),
]
for name, nb, rows, fine in readme_cases:
    found = readme_problems(nb, PATH, f"# x\n\n## Results\n\n| what | value |\n|---|---|\n{rows}\n\n## Timings\n")
    ok = (found == []) == fine
    print(f"{'ok  ' if ok else 'FAIL'} README results, {name}: {found}")
    results.append(ok)

print(f"chapter check: {sum(results)} of {len(results)} cases as expected")
sys.exit(0 if all(results) else 1)

"""The tutorials as a book: every notebook listed in the README, committed executed and without errors,
and each ending with what changes on a cluster."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_readme_links_every_notebook_in_order():
    linked = re.findall(r"^\| \[(\d\d-[\w\-]+)\]\(notebooks/\1\.ipynb\) \| .+ \|$", (ROOT / "README.md").read_text(), flags=re.M)
    assert linked == [p.stem for p in NOTEBOOKS]


def test_the_readme_says_which_magics_each_notebook_teaches_and_the_notebook_uses_them():
    rows = re.findall(r"^\| \[(\d\d-[\w\-]+)\]\(notebooks/\1\.ipynb\) \| (.+) \|$", (ROOT / "README.md").read_text(), flags=re.M)
    for name, text in rows:
        cells = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        used = set(re.findall(r"%%?(\w+)", "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")))
        named = re.findall(r"`%%?(\w+)[^`]*`", text)
        assert named, f"README's row of {name} names none of the magics it teaches"
        assert set(named) <= used, f"README's row of {name} names {sorted(set(named) - used)}, which the notebook never runs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_is_committed_executed_without_errors_and_says_what_to_try_on_a_cluster(path):
    cells = json.loads(path.read_text())["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert any(text.startswith("## What to try on a cluster") for text in markdown)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] is not None for c in code), "run `make notebooks`: a code cell was never executed"
    errors = [c["source"][0] for c in code if any(o["output_type"] == "error" for o in c["outputs"])
              and "raises-exception" not in c["metadata"].get("tags", [])]
    assert errors == [], f"cells committed with an error: {errors}"

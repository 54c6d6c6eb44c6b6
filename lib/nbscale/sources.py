"""What users write as text: an ingest source (paths, globs and URIs, one per line or several on a
line) and column names (quoted for Spark). Kept apart from `ingest` so that `datasets` and `feed` can
use them without importing ingest."""
from __future__ import annotations

import glob
from pathlib import Path

from .errors import NbscaleError


def items(source: str) -> list[str]:
    """The paths, globs and URIs of a source: one per line, or several on a line separated by spaces; a
    path with spaces is quoted ("my data/a.csv") or alone on its line."""
    import shlex

    found: list[str] = []
    for line in source.splitlines():
        line = line.strip()
        if not line:
            continue
        if glob.glob(str(Path(line).expanduser())) and " " in line:  # a whole line that names a file: taken as it is
            found.append(line)
            continue
        try:
            found += shlex.split(line)
        except ValueError:
            raise NbscaleError(f"{line[:80]!r} has an unclosed quote: quote a path with spaces like \"my data/a.csv\".") from None
    return found


def joined(paths: list[str]) -> str:
    """A source string holding `paths` exactly (one per line), for the next step to split with `items`."""
    return "\n".join(paths)


def quoted(name: str) -> str:
    """A column name as Spark reads it literally (`a.b` is column "a.b", not field b of a)."""
    return "`" + name.replace("`", "``") + "`"

"""`-h` / `--help` on every magic prints its help — what `%serve?` shows — instead of "unrecognized arguments"."""
from __future__ import annotations

import functools
import inspect

HELP_FLAGS = {"-h", "--help"}


def accepts_help(magic):
    """Above `@magic_arguments()`: the decorated magic answers -h/--help with its usage and options."""

    @functools.wraps(magic)  # keeps the parser magic_arguments attached, and the docstring
    def answer_help_or_run(self, line="", *cell):
        if HELP_FLAGS & set(line.split()):
            text = inspect.cleandoc(magic.__doc__ or "")
            print(text.removeprefix("::").lstrip("\n"))  # the docstring opens with reST's literal-block marker
            return None
        return magic(self, line, *cell)

    return answer_help_or_run

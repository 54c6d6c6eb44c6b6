"""An output slot in the current cell: empty at first, redrawn in place, empty again at the end,
so a finished notebook keeps no stale live views."""
from __future__ import annotations


class Placeholder:
    def __init__(self):
        from IPython.display import display

        self.handle = display({"text/plain": ""}, raw=True, display_id=True)  # None outside IPython: nothing to draw in

    def show(self, content) -> None:
        """`content`: an object IPython can display, or a raw {mimetype: data} dict."""
        if self.handle is None:
            return
        if isinstance(content, dict):
            self.handle.update(content, raw=True)
        else:
            self.handle.update(content)

    def clear(self) -> None:
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)

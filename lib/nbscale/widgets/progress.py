"""A Spark progress bar for a cell: tasks done / total, jobs, the running stage, elapsed time."""
from __future__ import annotations

from ..jobs.progress import SparkProgress
from .placeholder import Placeholder


class ProgressBar:
    """An empty placeholder in the cell, a bar while Spark jobs run, empty again when they end
    (the result card then says what happened), so finished notebooks keep no stale bars."""

    def __init__(self, title: str):
        self.title = title
        self.bar = self.label = None
        self.slot = Placeholder()

    def note(self, text: str) -> None:
        """A line in the slot until the bar appears (e.g. while Spark starts, before any job exists)."""
        self.slot.show({"text/plain": text})

    def done(self) -> None:
        """Empty the slot, whatever it shows (the cell's result, or its error, says what happened)."""
        self.slot.clear()

    def _show(self) -> None:
        import ipywidgets as widgets

        self.bar = widgets.IntProgress(min=0, max=1, value=0, description=self.title, style={"description_width": "initial"},
                                       layout=widgets.Layout(width="420px"))
        self.label = widgets.Label()
        self.slot.show(widgets.HBox([self.bar, self.label]))

    def update(self, state: SparkProgress) -> None:
        if state.finished:
            if self.bar is not None:
                self.slot.clear()
            return
        if self.bar is None:
            self._show()
        self.bar.max = max(state.tasks_total, 1)
        self.bar.value = state.tasks_done
        stage = f" · {state.stage.split(' at ')[0]}" if state.stage else ""
        if state.waiting:
            self.label.value = f"{state.tasks_done}/{state.tasks_total} tasks · {state.waiting} · {state.seconds:.0f} s"
            return
        self.label.value = f"{state.tasks_done}/{state.tasks_total} tasks, {state.jobs_done}/{state.jobs_total} jobs{stage} · {state.seconds:.0f} s"

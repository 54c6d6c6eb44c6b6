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
        # The bar is the running job's: how many jobs a cell submits is not known in advance, so a bar over all of
        # them would fill, then fall back when the next job arrives. The label counts the jobs done so far.
        running = state.jobs_total - state.jobs_done
        self.bar.max = max(state.running_tasks_total, 1)
        self.bar.value = min(state.running_tasks_done, self.bar.max) if running else self.bar.max
        stage = f" · {state.stage.split(' at ')[0]}" if state.stage else ""
        job = f"job {state.jobs_done + 1}: {state.running_tasks_done}/{state.running_tasks_total} tasks" if running else "between jobs"
        if state.waiting:
            self.label.value = f"{job} · {state.waiting} · {state.seconds:.0f} s"
            return
        self.label.value = f"{job}{stage} · {state.jobs_done} job(s) done so far · {state.seconds:.0f} s"

"""The live card of a background job: the training card (HTML, redrawn in place) with the job's
controls — cancel, and for a distributed run, kill one worker. The buttons call the same library
functions as `%jobs cancel` / `%jobs kill`; the card only shows what the job reports."""
from __future__ import annotations

import html


class JobCard:
    def __init__(self, title: str):
        import ipywidgets as w

        self.job = None
        self.body = w.HTML(f"<i>{html.escape(title)}: starting…</i>")
        self.cancel_button = w.Button(description="Cancel", icon="stop", button_style="warning")
        self.worker = w.BoundedIntText(value=1, min=0, max=1023, description="worker", layout=w.Layout(width="150px"))
        self.kill_button = w.Button(description="Kill worker", icon="bolt", tooltip="Kill this worker's process: Spark reruns "
                                    "the stage and training resumes from the last epoch's backup")
        self.message = w.HTML()
        self.cancel_button.on_click(lambda _b: self._act(self.cancel))
        self.kill_button.on_click(lambda _b: self._act(self.kill))
        self.controls = w.HBox([self.cancel_button, self.worker, self.kill_button, self.message])
        self.widget = w.VBox([self.body, self.controls])

    def attach(self, job, distributed: bool) -> None:
        self.job = job
        if not distributed:
            self.worker.layout.display = self.kill_button.layout.display = "none"

    def cancel(self) -> str:
        from ..jobs import background

        background.cancel(self.job.id)
        return f"Job {self.job.id}: stop requested."

    def kill(self) -> str:
        from ..distributed import kill_worker

        return kill_worker(self.job.handle.id, self.worker.value)

    def _act(self, action) -> None:
        try:
            self.message.value = html.escape(action())
        except Exception as exc:  # noqa: BLE001 - the card shows the one-line reason
            self.message.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"

    # the live-card protocol the training calls back into
    def update(self, progress) -> None:
        self.body.value = progress.html

    def show(self, result) -> None:
        self.body.value = result._repr_html_()
        self.controls.layout.display = "none"  # nothing left to control

    def ended(self, state: str, error: str | None) -> None:
        if state != "finished":
            self.message.value = html.escape(f"{state}: {error}" if error else state)
            self.cancel_button.disabled = self.kill_button.disabled = True

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

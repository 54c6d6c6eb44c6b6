"""`%launch`: a form for a distributed training — dataset, model code, workers, strategy, epochs, GPUs
per worker. It launches through the same path as `%%train ... --background` and shows the equivalent
`%%train` cell, so what a user clicked is what they can write (and commit)."""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

from ..train.options import ClusterOptions, TrainOptions, train_line

TEMPLATE = """model = keras.Sequential([
    keras.Input(shape=(64,)),
    keras.layers.Dense(64, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


@dataclass(frozen=True)
class LaunchRequest:
    """What the form holds: the training's options and the cluster's, as `%%train` takes them."""

    options: TrainOptions
    cluster: ClusterOptions

    def train_line(self) -> str:
        """The `%%train` line that launches the same run."""
        return train_line(self.options, self.cluster, background=True)


class LaunchForm:
    """The widgets; `on_launch(options, code, card)` does the work (the magic passes its background path)."""

    def __init__(self, datasets: list[str], code: str, on_launch: Callable[[LaunchRequest, str, "LaunchForm"], str]):
        import ipywidgets as w

        wide = {"description_width": "110px"}
        defaults, where = TrainOptions(), ClusterOptions()  # the form starts from %%train's own defaults
        self.on_launch = on_launch
        self.data = w.Dropdown(options=datasets, value=datasets[0] if datasets else None, description="dataset", style=wide)
        self.label = w.Text(value="", description="label column", style=wide, placeholder="(the one %ingest --label gave)")
        self.code = w.Textarea(value=code, description="model cell", style=wide, layout=w.Layout(width="640px", height="150px"))
        self.workers = w.BoundedIntText(value=2, min=1, max=256, description="workers", style=wide)
        self.strategy = w.Dropdown(options=[("all-reduce (MultiWorkerMirrored)", "multiworker"), ("parameter server", "parameter-server")],
                                   value=where.strategy, description="strategy", style=wide)
        self.ps = w.BoundedIntText(value=where.parameter_servers, min=1, max=16, description="param. servers", style=wide)
        self.epochs = w.BoundedIntText(value=defaults.epochs, min=1, max=100000, description="epochs", style=wide)
        self.batch_size = w.BoundedIntText(value=defaults.batch_size, min=1, max=1 << 20, description="global batch", style=wide)
        self.scale = w.FloatText(value=defaults.scale, description="divide by", style=wide)
        self.gpus = w.BoundedIntText(value=where.gpus_per_worker, min=0, max=16, description="GPUs / worker", style=wide)
        self.experiment = w.Text(value=defaults.experiment, description="experiment", style=wide)
        self.pool = w.Text(value="", description="Spark pool", style=wide, placeholder="(default)")
        self.line = w.HTML()
        self.launch_button = w.Button(description="Launch", button_style="primary", icon="rocket")
        self.message = w.HTML()
        self.card = w.HTML()
        for field in (self.data, self.label, self.workers, self.strategy, self.ps, self.epochs, self.batch_size, self.scale, self.gpus,
                      self.experiment, self.pool):
            field.observe(lambda _change: self._show_line(), names="value")
        self.launch_button.on_click(lambda _button: self.launch())
        self._show_line()
        self.widget = w.VBox([w.HTML("<b>Launch a distributed training</b>"),
                              w.HBox([w.VBox([self.data, self.label, self.workers, self.strategy, self.ps, self.gpus]),
                                      w.VBox([self.epochs, self.batch_size, self.scale, self.experiment, self.pool])]),
                              self.code, self.line, w.HBox([self.launch_button, self.message]), self.card])

    def options(self) -> LaunchRequest:
        return LaunchRequest(TrainOptions(data=self.data.value or "", label=self.label.value.strip() or None, epochs=self.epochs.value,
                                          batch_size=self.batch_size.value, scale=self.scale.value, experiment=self.experiment.value),
                             ClusterOptions(workers=self.workers.value, strategy=self.strategy.value, parameter_servers=self.ps.value,
                                            gpus_per_worker=self.gpus.value, pool=self.pool.value.strip() or None))

    def _show_line(self) -> None:
        self.line.value = f"Equivalent cell: <code>{html.escape(self.options().train_line())}</code>"

    def launch(self) -> None:
        try:
            self.message.value = html.escape(self.on_launch(self.options(), self.code.value, self))
        except Exception as exc:  # noqa: BLE001 - the form shows the one-line reason; nothing was started
            self.message.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"

    # the live-card protocol the training calls back into
    def update(self, progress) -> None:
        self.card.value = progress.html

    def show(self, result) -> None:
        self.card.value = result._repr_html_() if hasattr(result, "_repr_html_") else html.escape(repr(result))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

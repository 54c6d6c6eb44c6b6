"""`%launch`: a form for a distributed training — dataset, model code, workers, strategy, epochs, GPUs
per worker. It launches through the same path as `%%train ... --background` and shows the equivalent
`%%train` cell, so what a user clicked is what they can write (and commit)."""
from __future__ import annotations

import html
from dataclasses import asdict, dataclass
from typing import Callable

TEMPLATE = """model = keras.Sequential([
    keras.Input(shape=(64,)),
    keras.layers.Dense(64, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


@dataclass
class LaunchOptions:
    data: str = ""
    label: str = "label"
    workers: int = 2
    strategy: str = "multiworker"
    ps: int = 1
    epochs: int = 5
    batch_size: int = 128
    scale: float = 1.0
    gpus_per_worker: int = 0
    experiment: str = "nbscale"
    pool: str = ""

    def train_line(self) -> str:
        """The `%%train` line that launches the same run."""
        defaults = LaunchOptions()
        parts = [f"%%train --data {self.data} --workers {self.workers}"]
        for name, value in asdict(self).items():
            if name in ("data", "workers") or value == getattr(defaults, name):
                continue
            if name == "ps" and self.strategy != "parameter-server":
                continue
            parts.append(f"--{name.replace('_', '-')} {value:g}" if isinstance(value, float) else f"--{name.replace('_', '-')} {value}")
        return " ".join([*parts, "--background"])

    def train_kwargs(self) -> dict:
        return dict(data=self.data, label=self.label, workers=self.workers, strategy=self.strategy, parameter_servers=self.ps,
                    epochs=self.epochs, batch_size=self.batch_size, scale=self.scale, gpus_per_worker=self.gpus_per_worker,
                    experiment=self.experiment, pool=self.pool or None)


class LaunchForm:
    """The widgets; `on_launch(options, code, card)` does the work (the magic passes its background path)."""

    def __init__(self, datasets: list[str], code: str, on_launch: Callable[[LaunchOptions, str, "LaunchForm"], str]):
        import ipywidgets as w

        wide = {"description_width": "110px"}
        self.on_launch = on_launch
        self.data = w.Dropdown(options=datasets, value=datasets[0] if datasets else None, description="dataset", style=wide)
        self.label = w.Text(value="label", description="label column", style=wide)
        self.code = w.Textarea(value=code, description="model cell", style=wide, layout=w.Layout(width="640px", height="150px"))
        self.workers = w.BoundedIntText(value=2, min=1, max=256, description="workers", style=wide)
        self.strategy = w.Dropdown(options=[("all-reduce (MultiWorkerMirrored)", "multiworker"), ("parameter server", "parameter-server")],
                                   value="multiworker", description="strategy", style=wide)
        self.ps = w.BoundedIntText(value=1, min=1, max=16, description="param. servers", style=wide)
        self.epochs = w.BoundedIntText(value=5, min=1, max=100000, description="epochs", style=wide)
        self.batch_size = w.BoundedIntText(value=128, min=1, max=1 << 20, description="global batch", style=wide)
        self.scale = w.FloatText(value=1.0, description="divide by", style=wide)
        self.gpus = w.BoundedIntText(value=0, min=0, max=16, description="GPUs / worker", style=wide)
        self.experiment = w.Text(value="nbscale", description="experiment", style=wide)
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

    def options(self) -> LaunchOptions:
        return LaunchOptions(self.data.value or "", self.label.value, self.workers.value, self.strategy.value, self.ps.value,
                             self.epochs.value, self.batch_size.value, self.scale.value, self.gpus.value, self.experiment.value,
                             self.pool.value.strip())

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

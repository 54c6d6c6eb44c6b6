"""What a training hands back: the live card's progress after each epoch, and the finished result."""
from __future__ import annotations

from dataclasses import dataclass, field

from .card import render


@dataclass(frozen=True)
class TrainProgress:
    """What the live view needs after each epoch: the card, and the numbers for a one-line summary."""

    html: str
    epoch: int  # epochs done
    epochs: int
    metrics: dict

    def line(self) -> str:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items() if k in ("loss", "val_loss", "val_accuracy", "accuracy"))
        return f"epoch {self.epoch}/{self.epochs}" + (f", {shown}" if shown else "")


@dataclass
class TrainResult:
    title: str
    run_id: str
    run_url: str | None
    experiment: str
    dataset: str
    epochs: int
    history: dict[str, list[float]]
    samples_per_s: float
    device: str
    model: object = field(repr=False)
    model_uri: str = ""
    default_code: str = ""  # the model nbscale chose when the cell gave none

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items() if v}

    def _repr_html_(self) -> str:
        return render(self.title, self.history, self.epochs, self.samples_per_s, self.run_id, self.run_url, "finished", self.device,
                      default_code=self.default_code or None)

    def __repr__(self) -> str:
        last = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return f"<TrainResult {self.dataset}: {self.epochs} epochs, {last}; MLflow run {self.run_id}>"


@dataclass
class DistributedTrainResult(TrainResult):
    """A run on the cluster's workers: how many trained, how, in how many attempts, and where their logs are."""

    workers: int = 0
    strategy: str = ""
    attempts: int = 0
    job_dir: str = ""
    digests: dict[int, str | None] = field(default_factory=dict)  # each worker's digest of the final weights
    card_html: str = ""  # the job card (workers, attempts) in place of the plain one

    def _repr_html_(self) -> str:
        return self.card_html or super()._repr_html_()

"""The Keras callbacks nbscale adds to every local fit: each epoch's rows checked and logged, the live card's
step bar, a stop on request, and a stop on the first non-finite loss."""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..errors import NbscaleError


class TrainingCancelled(NbscaleError):
    """Training was stopped on request (e.g. `%jobs cancel`)."""


STEP_REFRESH_S = 0.5


def step_callback(tfk, refresh: Callable[..., None]):
    """The live card's step bar, redrawn at most every STEP_REFRESH_S (a redraw per batch would cost more than the batch)."""
    class StepProgress(tfk.callbacks.Callback):
        shown = 0.0

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() - self.shown >= STEP_REFRESH_S:
                self.shown = time.monotonic()
                refresh(step=batch + 1)

    return StepProgress()


class NonFiniteLoss(NbscaleError):
    """Training produced a NaN or infinite loss: the run failed, and its model is never logged."""


def non_finite_message(ref: str, epoch: int, metric: str, value: float) -> str:
    return (f"Training on {ref} stopped in epoch {epoch}: {metric} is {value} (not a finite number), so the model learned nothing "
            "usable. Check the features for NaN or infinite values and the options (--scale 0 divides by zero; a learning rate "
            "too high overflows); the MLflow run is marked FAILED and no model was logged.")


def finite_callback(tfk, found: dict):
    """Stop at the end of the first epoch whose loss (or validation loss) is NaN or infinite."""
    import math

    class StopOnNonFiniteLoss(tfk.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for metric in ("loss", "val_loss"):
                value = (logs or {}).get(metric)
                if value is not None and not math.isfinite(float(value)) and not found:
                    found.update(epoch=epoch + 1, metric=metric, value=float(value))
                    self.model.stop_training = True

    return StopOnNonFiniteLoss()


def stop_callback(tfk, stop: threading.Event):
    class StopOnRequest(tfk.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if stop.is_set():
                self.model.stop_training = True

    return StopOnRequest()


def epoch_callback(tfk, mlf, history: dict, logged: set[int], speed: dict, rows: int, delivered, ref: str,
                    refresh: Callable[[], None]):
    """Every epoch: its row count checked, metrics into MLflow and the history, samples/s, and a
    refresh of the live card."""
    from ..feed import ShortEpochError

    class EpochCallback(tfk.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
            delivered.assign(0)

        def on_epoch_end(self, epoch, logs=None):
            if self.model.stop_training:  # cancelled mid-epoch: neither a short read nor an epoch to log
                return
            got = int(delivered.numpy())
            if got != rows:
                raise ShortEpochError(f"Epoch {epoch + 1} trained on {got} of the {rows} rows of {ref}: training stopped "
                                      "rather than learn from part of the data. Run it again.")
            logs = {k: float(v) for k, v in (logs or {}).items()}
            speed["samples_per_s"] = rows / (time.perf_counter() - self.started)
            for key, value in logs.items():
                series = history.setdefault(key, [])
                if epoch < len(series):  # an epoch redone after a resume: its latest values
                    series[epoch] = value
                else:
                    series.append(value)
            if epoch not in logged:  # MLflow keeps each epoch once, also across a resume
                logged.add(epoch)
                mlf.log_metrics({**logs, "samples_per_s": speed["samples_per_s"]}, step=epoch)
            refresh()

    return EpochCallback()

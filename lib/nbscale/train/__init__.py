"""`nbscale.train.train(...)`: a compiled Keras model + a dataset version -> a fitted model and an MLflow run.

The cell's code builds the model with the `keras` nbscale provides (tf-keras: the Keras that also
trains under TF's multi-worker strategies); nbscale supplies the data through Petastorm, checks
every epoch's rows, logs the run, and leaves no run RUNNING when something fails."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import settings
from ..errors import NbscaleError
from .task import TASK_TAG, task_of
from ..limits import cap
from .card import render
from .cell import CellModel, build, check_model, default_model_code, describe, is_blank


def _native_log() -> Path:
    from ..datadir import local_dir

    return local_dir() / "logs" / "tensorflow.log"  # this process's own log


def keras():
    """The Keras nbscale trains with: tf-keras (Keras 2)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _importing:  # steps training side by side must not interleave the fd redirection below
        _import_quietly()
    return sys.modules["tf_keras"]


_importing = threading.Lock()


def _import_quietly() -> None:
    if "tf_keras" not in sys.modules:
        from ..session import native_output_to

        with native_output_to(_native_log()):  # TensorFlow's C++ start-up lines go to a log file
            import tensorflow as tf
            import tf_keras  # noqa: F401

            tf.config.list_physical_devices("GPU")  # the CUDA probe logs an error where there is no GPU


def accelerator() -> tuple[str, bool]:
    """(what TensorFlow trains on, e.g. "1 × NVIDIA H100 80GB HBM3" or "CPU"; whether mixed precision
    helps there: GPUs with tensor cores, compute capability 7.0 and up)."""
    keras()  # TensorFlow imported and its devices probed, quietly (before any `import tensorflow`)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU", False
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"{len(gpus)} × {details.get('device_name', 'GPU')}", tuple(details.get("compute_capability", (0, 0))) >= (7, 0)


def device() -> str:
    return accelerator()[0]


PRECISIONS = {"auto": None, "mixed": "mixed_float16", "float32": "float32"}


def precision_policy(precision: str, tensor_cores: bool | None = None) -> str:
    """The Keras dtype policy for --precision: `auto` is mixed_float16 where the GPU has tensor cores
    (float16 matrix work there is several times float32's), float32 elsewhere (on a CPU float16 is
    emulated, so slower). `tensor_cores` says where training runs; default: this process's devices."""
    if precision not in PRECISIONS:
        raise NbscaleError(f"--precision {precision!r} is not one nbscale knows: use auto, mixed or float32.")
    if PRECISIONS[precision]:
        return PRECISIONS[precision]
    return "mixed_float16" if (accelerator()[1] if tensor_cores is None else tensor_cores) else "float32"


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Layers built inside take `policy`; the notebook's global Keras policy is put back afterwards."""
    mixed_precision = keras().mixed_precision
    before = mixed_precision.global_policy()
    mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        mixed_precision.set_global_policy(before)


class TrainingCancelled(NbscaleError):
    """Training was stopped on request (e.g. `%jobs cancel`)."""


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
    card_html: str = ""  # a distributed run's card (workers, attempts) replaces the plain one
    default_code: str = ""  # the model nbscale chose when the cell gave none

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items() if v}

    def _repr_html_(self) -> str:
        if self.card_html:
            return self.card_html
        return render(self.title, self.history, self.epochs, self.samples_per_s, self.run_id, self.run_url, "finished", self.device,
                      default_code=self.default_code or None)

    def __repr__(self) -> str:
        last = ", ".join(f"{k} {v:.4f}" for k, v in self.metrics.items())
        return f"<TrainResult {self.dataset}: {self.epochs} epochs, {last}; MLflow run {self.run_id}>"


def _check_labels(model, spec, version) -> None:
    """Labels a classifier cannot learn from fail here in one line (TensorFlow would say "Graph execution error")."""
    manifest = version.manifest
    nulls = manifest.get("nulls", {}).get(spec.label, 0)
    if nulls:
        raise NbscaleError(f"{nulls} rows of {spec.ref} have no {spec.label!r} (null): train on labelled rows — e.g. %%ingest "
                           f"{version.name}_labelled with SELECT * FROM {version.name}@v{version.version} WHERE {spec.label} IS NOT NULL.")
    loss = getattr(model, "loss", None)
    loss = loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(loss, "__name__", "") or ""
    balance = manifest.get("label_balance") if manifest.get("label") == spec.label else None
    summary = manifest.get("label_summary") if manifest.get("label") == spec.label else None
    if summary and "crossentropy" in loss.lower():
        raise NbscaleError(f"{spec.label!r} of {spec.ref} is continuous ({summary['min']:.4g} to {summary['max']:.4g}, too many distinct "
                           f"values to be classes), which {loss} cannot learn: predict a value — a Dense(1) output with loss='mse' — "
                           "or train nbscale's default model for it (%train --data NAME, without a cell).")
    if not balance or "crossentropy" not in loss.lower() or not isinstance(model.output_shape, tuple):
        return
    units = model.output_shape[-1] or 1
    allowed = 2 if "binary" in loss.lower() else units
    if "sparse" not in loss.lower() and "binary" not in loss.lower():
        return  # one-hot labels: a vector per row, not checked here

    def fits(value: str) -> bool:
        try:
            number = float(value)
        except ValueError:
            return False
        return number.is_integer() and 0 <= number < allowed

    bad = {value: rows for value, rows in balance.items() if not fits(value)}
    if bad:
        largest = max((float(v) for v in balance if v not in ("NaN", "None") and _number(v)), default=0)
        shown = ", ".join(list(bad)[:5]) + (" ..." if len(bad) > 5 else "")
        fix = (f"give the last layer {int(largest) + 1} units" if "sparse" in loss.lower() and float(largest).is_integer() and largest >= 0
               else f"map the labels to 0..{allowed - 1}")
        raise NbscaleError(f"{sum(bad.values())} rows of {spec.ref} have labels outside 0..{allowed - 1} ({shown}), which {loss} with "
                           f"{units} output unit(s) cannot learn: {fix}, or map the labels to 0..{allowed - 1}.")


def _number(value: str) -> bool:
    try:
        float(value)
        return value.lower() != "nan"
    except ValueError:
        return False


def _check_split(spec, version, validation: float, train_rows: int) -> None:
    if train_rows == 0:
        raise NbscaleError(f"--validation {validation} leaves 0 of the {version.manifest['counts']['loaded']} rows of {spec.ref} for "
                           "training: use a smaller fraction (e.g. 0.2).")


def _check_shapes(model, spec, train_rows: int) -> None:
    shape = model.input_shape
    expected = tuple(shape[1:]) if isinstance(shape, tuple) else None  # a list: several inputs, not checked here
    mismatch = expected is not None and (
        len(expected) != len(spec.feature_shape) or any(e is not None and e != g for e, g in zip(expected, spec.feature_shape)))
    if mismatch:
        raise NbscaleError(f"The model expects inputs of shape {expected} but {spec.ref} gives {spec.feature_shape}: "
                           f"start the model with keras.Input(shape={spec.feature_shape}).")
    if spec.batch_size > train_rows:
        raise NbscaleError(f"--batch-size {spec.batch_size} is larger than the {train_rows} training rows of {spec.ref}: use a smaller batch.")


_claims_lock = threading.Lock()
_claimed: set[Path] = set()


def _claim(base: Path) -> Path:
    """The backup folder for one training: `base` unless a training of this kernel is using it (the same
    cell started twice side by side), then base-2, base-3, ...; their checkpoints would collide."""
    with _claims_lock:
        candidate, n = base, 1
        while candidate in _claimed:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        _claimed.add(candidate)
        return candidate


def _release(backups: Path) -> None:
    with _claims_lock:
        _claimed.discard(backups)


def _backup_dir(experiment: str, ref: str, code: str | None, root: Path | None = None) -> Path:
    """Epoch backups of one cell on one dataset version, under `root`: by default this process's folder (the
    data dir, or over Connect this machine's); distributed trainings pass the data dir, which their workers share."""
    key = hashlib.sha1(f"{experiment}|{ref}|{code}".encode()).hexdigest()[:12]
    from ..datadir import local_dir

    return (root or local_dir()) / "checkpoints" / experiment / key


def train(code: str | None = None, *, data: str, label: str | None = None, epochs: int = 5, batch_size: int = 128,
          validation: float = 0.2, seed: int = 42, scale: float = 1.0, experiment: str = "nbscale", resume: bool = False,
          precision: str = "auto", namespace: dict | None = None, model=None, on_epoch: Callable[[TrainProgress], None] | None = None,
          on_step: Callable[[TrainProgress], None] | None = None, stop: threading.Event | None = None,
          parent_run_id: str | None = None, run_name: str | None = None) -> TrainResult:
    """Fit the cell's model on dataset version `data`; one MLflow run per call.

    `on_epoch` receives the live card after every epoch, `on_step` within an epoch (at most twice a
    second, with the step progress); `parent_run_id` makes the run a child (a %%tune trial, `run_name`);
    setting `stop` ends training after the
    current batch (the run is marked KILLED, its epoch backups kept for `resume=True`). `precision`:
    auto (mixed float16 on a GPU with tensor cores, else float32), mixed or float32."""
    from .. import feed
    from ..datahost import require_writable
    from ..ingest import dataset as find_dataset
    from ..session import mlflow

    if epochs < 1 or batch_size < 1:
        raise NbscaleError(f"--epochs {epochs} and --batch-size {batch_size} must each be 1 or more.")
    epochs = cap("epochs", epochs)
    version = find_dataset(data)
    require_writable(f"Training on {version.ref}")  # logs, checkpoints, the run and its model
    spec = feed.spec_for(version, label, batch_size, scale, seed)
    default_code = None
    if model is None and is_blank(code):  # no model in the cell: one that fits the data, shown so it can be copied and edited
        code = default_code = default_model_code(spec, version)
    cell = CellModel(check_model(model)) if model is not None else build(code, namespace, seed, precision_policy(precision))
    built = cell.model
    _check_labels(built, spec, version)

    def writing_the_split():  # the first training on a version waits for a Spark job: say so, not just "starting"
        if on_epoch is not None:
            card = render(f"%%train {version.ref}", {}, epochs, None, None, None,
                          f"writing the training split of {version.ref} with Spark (once per version)", device())
            on_epoch(TrainProgress(card, 0, epochs, {}))

    train_split, val_split = feed.split(version, spec, validation, on_write=writing_the_split)
    _check_split(spec, version, validation, train_split.rows)
    _check_shapes(built, spec, train_split.rows)
    backups = _claim(_backup_dir(experiment, version.ref, f"{code}|{parent_run_id}|{run_name}"))
    try:
        if not resume:
            shutil.rmtree(backups, ignore_errors=True)

        mlf = mlflow()
        run, history, logged = open_run(mlf, experiment, run_name or f"{version.ref} {time.strftime('%H:%M:%S')}", backups, resume,
                                        parent_run_id)
        run_id = run.info.run_id
        uri = settings().tracking_uri
        run_url = f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}" if uri.startswith("http") else None
        title = f"%%train {version.ref}"
        where = f"{device()} · {built.dtype_policy.name}"
        speed = {"samples_per_s": 0.0}
        try:
            if not logged:  # a reopened run has its parameters already
                _log_params(mlf, built, version, spec, epochs, validation, train_split, val_split)
                mlf.log_params({**describe(cell), **({"model": "nbscale default"} if default_code else {})})
            import tensorflow as tf

            delivered = tf.Variable(0, dtype=tf.int64, trainable=False)
            steps = feed.steps(train_split.rows, batch_size)

            def refresh(state: str = "training", step: int | None = None):
                listener = on_epoch if step is None else on_step
                if listener:
                    card = render(title, history, epochs, speed["samples_per_s"] or None, run_id, run_url, state, where,
                                  (step, steps) if step is not None else None, default_code)
                    listener(TrainProgress(card, len(history.get("loss", [])), epochs, {k: v[-1] for k, v in history.items()}))

            non_finite: dict = {}
            callbacks = [_finite_callback(keras(), non_finite),  # first: a non-finite epoch is neither logged nor kept
                         _epoch_callback(keras(), mlf, history, logged, speed, train_split.rows, delivered, version.ref, refresh),
                         keras().callbacks.BackupAndRestore(str(backups)),
                         *cell.callbacks]  # after nbscale's: an epoch an EarlyStopping ends on is logged first
            if on_step is not None:
                callbacks.append(_step_callback(keras(), refresh))
            if stop is not None:
                callbacks.append(_stop_callback(keras(), stop))
            refresh("starting")
            built.fit(feed.tf_dataset(train_split, spec, shuffle=True, counter=delivered), epochs=epochs, verbose=0, callbacks=callbacks,
                      validation_data=feed.tf_dataset(val_split, spec, shuffle=False) if val_split else None, **cell.fit_kwargs)
            if non_finite:
                raise NonFiniteLoss(non_finite_message(version.ref, **non_finite))
            if stop is not None and stop.is_set():
                raise TrainingCancelled(f"Training on {version.ref} was cancelled after {len(history.get('loss', []))} of {epochs} "
                                        "epochs; its MLflow run is marked KILLED. Run the cell again with --resume to continue.")
            model_uri = _log_model(mlf, built, version, spec)
        except (KeyboardInterrupt, TrainingCancelled):
            _end_run(mlf, "KILLED")
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends the run FAILED, then is raised again
            kept = keep_if_unlogged(exc, built, run_id)
            _end_run(mlf, "FAILED")
            raise (kept or _one_line(exc)) from None
        mlf.end_run("FINISHED")
        shutil.rmtree(backups, ignore_errors=True)
        return TrainResult(title, run_id, run_url, experiment, version.ref, epochs, history, speed["samples_per_s"], where, built, model_uri,
                           default_code=default_code or "")
    finally:
        _release(backups)


BACKUP_TAG = "nbscale.backup_key"
MODEL_TAG = "nbscale.model_uri"


def open_run(mlf, experiment: str, name: str, backups: Path, resume: bool, parent_run_id: str | None = None,
             backups_exist: bool | None = None):
    """(active run, history so far, epochs already logged). With `resume` and backups left by an
    interrupted or failed run of the same cell and data, that run is reopened and continues.
    `backups_exist`: whether the backups are there, for a caller whose backups are on another machine."""
    from ..session import experiment_id

    exp = experiment_id(experiment)
    key = backups.name
    if resume and (backups.exists() if backups_exist is None else backups_exist):
        client = mlf.MlflowClient()
        found = client.search_runs([exp], filter_string=f"tags.`{BACKUP_TAG}` = '{key}' and attributes.status != 'FINISHED'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        if found:
            run = mlf.start_run(run_id=found[0].info.run_id)
            history: dict[str, list[float]] = {}
            logged: set[int] = set()
            for metric in found[0].data.metrics:
                points = sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)
                if metric != "samples_per_s":
                    history[metric] = [m.value for m in points]
                logged.update(m.step for m in points)
            return run, history, logged
    return mlf.start_run(experiment_id=exp, run_name=name, tags={BACKUP_TAG: key}, parent_run_id=parent_run_id), {}, set()


def _end_run(mlf, status: str) -> None:
    try:
        mlf.end_run(status)
    except Exception:  # noqa: BLE001 - the tracking server is gone: the run is off the stack all the same
        pass


def keep_if_unlogged(exc: BaseException, model, run_id: str) -> NbscaleError | None:
    """When the tracking server stops answering after training started, the trained model is saved
    under the data dir instead of being lost; the error says where."""
    import requests
    from mlflow.exceptions import MlflowException

    from ..errors import first_useful_line

    if not isinstance(exc, (MlflowException, requests.exceptions.RequestException)) or model.optimizer.iterations.numpy() == 0:
        return None
    from ..datadir import local_dir

    path = local_dir() / "unlogged" / run_id / "model.keras"  # where this process can write
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(path))
    return NbscaleError(f"MLflow at {settings().tracking_uri} stopped answering ({first_useful_line(str(exc))[:160]}): the trained model "
                        f"is kept at {path} (keras.models.load_model reads it); %nbscale connect to a live server before training again.")


def _one_line(exc: BaseException) -> BaseException:
    if isinstance(exc, NbscaleError):
        return exc
    from ..errors import first_useful_line
    from ..feed import ShortEpochError

    text = str(exc)
    if "ShortEpochError" in text:  # raised in the feed, wrapped by tf.data
        return ShortEpochError(text.split("ShortEpochError: ", 1)[1].splitlines()[0])
    return NbscaleError(f"Training failed: {first_useful_line(text)}")


_logging_inputs = threading.Lock()


def _log_params(mlf, model, version, spec, epochs, validation, train_split, val_split) -> None:
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # unwrapped from loss scaling
    mlf.log_params({
        "data": version.ref, "label": spec.label, "epochs": epochs, "batch_size": spec.batch_size, "validation": validation,
        "seed": spec.seed, "scale": spec.scale, "train_rows": train_split.rows, "validation_rows": val_split.rows if val_split else 0,
        "optimizer": type(optimizer).__name__, "learning_rate": float(optimizer.learning_rate.numpy()),
        "loss": str(model.loss), "parameters": model.count_params(), "precision": model.dtype_policy.name, "device": device(),
    })
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    mlf.log_text("\n".join(lines), "model_summary.txt")
    with warnings.catch_warnings():  # two equivalent local sources are registered; either is right
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(Path(version.path).as_uri())
    dataset = MetaDataset(source, name=version.ref, digest=hashlib.sha1(version.ref.encode()).hexdigest()[:8])
    log_input_once(mlf, dataset)


# How stores word "that row exists already" (SQLite, PostgreSQL, MySQL; a tracking server passes the text on).
_DUPLICATE_ROW = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry", "IntegrityError")


def log_input_once(mlf, dataset, attempts: int = 4) -> None:
    """Link `dataset` to the active run. MLflow's store looks the dataset row up, then inserts it: two
    trainings of one dataset starting together (the trials of a %%tune round, on any host) can both miss it
    and one insert fails. The row then exists, so the next try links to it; a lock only covers this process."""
    for attempt in range(attempts):
        try:
            with _logging_inputs:
                mlf.log_input(dataset, context="training")
            return
        except Exception as exc:
            if attempt == attempts - 1 or not any(mark in str(exc) for mark in _DUPLICATE_ROW):
                raise
            time.sleep(0.1 * (attempt + 1))


_quieting = threading.RLock()


@contextlib.contextmanager
def quiet_loggers(*names: str, output: bool = False):
    """Silence warnings that say nothing to the notebook user (e.g. TF's retracing notice when MLflow
    calls predict on an input example; absl's note on optimizer slots not restored); with `output`, the
    block's prints too. One block at a time: logger levels and sys.stdout belong to the process, and
    blocks in side-by-side threads (workflow steps) would restore each other's and leave them swapped."""
    import logging

    with _quieting:
        loggers = [logging.getLogger(name) for name in names]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        swallow = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())) if output else ()
        try:
            with contextlib.ExitStack() as stack:
                for redirect in swallow:
                    stack.enter_context(redirect)
                yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def _log_model(mlf, model, version, spec) -> str:
    """Log the model with its input contract (raw feature columns of `version`, the feed's transform) and
    two real rows of the version as its input example (read where the data dir is)."""
    from ..datahost import on_data_host
    from ..feed import raw_examples
    from .pyfunc import contract, log_keras

    example = on_data_host(raw_examples, str(version.path), spec.features, 2)
    task = task_of(model)
    # MLflow checks the input example by loading the model and predicting; TF may warn about retracing.
    with quiet_loggers("tensorflow", "absl", "mlflow.pyfunc", "mlflow.models", output=True):
        info = log_keras(model, contract(spec, task), example)
    mlf.set_tag(MODEL_TAG, info.model_uri)  # how %register finds a run's model
    mlf.set_tag(TASK_TAG, task)  # classes or values: how predictions are shown and written
    return info.model_uri


STEP_REFRESH_S = 0.5


def _step_callback(tfk, refresh: Callable[..., None]):
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


def _finite_callback(tfk, found: dict):
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


def _stop_callback(tfk, stop: threading.Event):
    class StopOnRequest(tfk.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if stop.is_set():
                self.model.stop_training = True

    return StopOnRequest()


def _epoch_callback(tfk, mlf, history: dict, logged: set[int], speed: dict, rows: int, delivered, ref: str,
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

"""`nbscale.train.train(...)`: a compiled Keras model + a dataset version -> a fitted model and an MLflow run.

The cell's code builds the model with the `keras` nbscale provides (tf-keras: the Keras that also
trains under TF's multi-worker strategies); nbscale supplies the data through Petastorm, checks
every epoch's rows, logs the run, and leaves no run RUNNING when something fails.

The training core other packages use (distributed training, its workers, %%tune) is public here and in
the modules beside this one: `cell` (the model a cell builds), `runtime` (tf-keras, device, precision),
`checks` (model against data), `tracking` (the MLflow run), `callbacks` (the local loop's), `result`, `options`
(what to train and where, declared once for the magics, the launcher and these functions)."""
from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from typing import Callable

from ..errors import NbscaleError
from ..limits import cap
from .callbacks import (NonFiniteLoss, TrainingCancelled, epoch_callback, finite_callback, non_finite_message, step_callback,
                        stop_callback)
from .card import render
from .cell import CellModel, build, check_model, default_model_code, describe, is_blank
from .checks import check_labels, check_shapes, check_split
from .options import ClusterOptions, TrainOptions, split_settings
from .result import DistributedTrainResult, TrainProgress, TrainResult
from .runtime import accelerator, device, dtype_policy, keras, precision_policy
from .tracking import (MODEL_TAG, backup_dir, claim_backups, end_run, keep_if_unlogged, log_input_once, log_model, log_params,
                       open_run, release_backups, run_url)

__all__ = ["train", "keras", "device", "accelerator", "precision_policy", "dtype_policy", "TrainResult", "TrainProgress",
           "DistributedTrainResult", "TrainOptions", "ClusterOptions", "TrainingCancelled", "NonFiniteLoss", "MODEL_TAG", "log_input_once"]


def train(code: str | None = None, *, options: TrainOptions | None = None, namespace: dict | None = None, model=None,
          on_epoch: Callable[[TrainProgress], None] | None = None, on_step: Callable[[TrainProgress], None] | None = None,
          stop: threading.Event | None = None, parent_run_id: str | None = None, run_name: str | None = None,
          **given) -> TrainResult:
    """Fit the cell's model on a dataset version; one MLflow run per call.

    What to train on and how is a `TrainOptions`, or its fields as keywords (`data="digits", epochs=3`): `data`,
    `label`, `epochs`, `batch_size`, `validation`, `seed`, `scale`, `experiment`, `resume`, `precision` (auto: mixed
    float16 on a GPU with tensor cores, else float32). `on_epoch` receives the live card after every epoch, `on_step`
    within an epoch (at most twice a second, with the step progress); `parent_run_id` makes the run a child (a
    %%tune trial, `run_name`); setting `stop` ends training after the current batch (the run is marked KILLED, its
    epoch backups kept for `resume=True`)."""
    from .. import feed
    from ..datahost import require_writable
    from ..ingest import dataset as find_dataset
    from ..session import mlflow

    (changes,) = split_settings("train", given, TrainOptions)
    opts = replace(options or TrainOptions(), **changes)
    if not opts.data:
        raise NbscaleError("Say which dataset version to train on: --data NAME (see %datasets).")
    data, label, epochs, batch_size, validation = opts.data, opts.label, opts.epochs, opts.batch_size, opts.validation
    seed, scale, experiment, resume, precision = opts.seed, opts.scale, opts.experiment, opts.resume, opts.precision
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
    check_labels(built, spec, version)

    def writing_the_split():  # the first training on a version waits for a Spark job: say so, not just "starting"
        if on_epoch is not None:
            card = render(f"%%train {version.ref}", {}, epochs, None, None, None,
                          f"writing the training split of {version.ref} with Spark (once per version)", device())
            on_epoch(TrainProgress(card, 0, epochs, {}))

    train_split, val_split = feed.split(version, spec, validation, on_write=writing_the_split)
    check_split(spec, version, validation, train_split.rows)
    check_shapes(built, spec, train_split.rows)
    backups = claim_backups(backup_dir(experiment, version.ref, f"{code}|{parent_run_id}|{run_name}"))
    try:
        if not resume:
            shutil.rmtree(backups, ignore_errors=True)

        mlf = mlflow()
        run, history, logged = open_run(mlf, experiment, run_name or f"{version.ref} {time.strftime('%H:%M:%S')}", backups, resume,
                                        parent_run_id)
        run_id = run.info.run_id
        page = run_url(run)
        title = f"%%train {version.ref}"
        where = f"{device()} · {built.dtype_policy.name}"
        speed = {"samples_per_s": 0.0}
        try:
            if not logged:  # a reopened run has its parameters already
                log_params(mlf, built, version, spec, epochs, validation, train_split, val_split)
                mlf.log_params({**describe(cell), **({"model": "nbscale default"} if default_code else {})})
            import tensorflow as tf

            delivered = tf.Variable(0, dtype=tf.int64, trainable=False)
            steps = feed.steps(train_split.rows, batch_size)

            def refresh(state: str = "training", step: int | None = None):
                listener = on_epoch if step is None else on_step
                if listener:
                    card = render(title, history, epochs, speed["samples_per_s"] or None, run_id, page, state, where,
                                  (step, steps) if step is not None else None, default_code)
                    listener(TrainProgress(card, len(history.get("loss", [])), epochs, {k: v[-1] for k, v in history.items()}))

            non_finite: dict = {}
            callbacks = [finite_callback(keras(), non_finite),  # first: a non-finite epoch is neither logged nor kept
                         epoch_callback(keras(), mlf, history, logged, speed, train_split.rows, delivered, version.ref, refresh),
                         keras().callbacks.BackupAndRestore(str(backups)),
                         *cell.callbacks]  # after nbscale's: an epoch an EarlyStopping ends on is logged first
            if on_step is not None:
                callbacks.append(step_callback(keras(), refresh))
            if stop is not None:
                callbacks.append(stop_callback(keras(), stop))
            refresh("starting")
            built.fit(feed.tf_dataset(train_split, spec, shuffle=True, counter=delivered), epochs=epochs, verbose=0, callbacks=callbacks,
                      validation_data=feed.tf_dataset(val_split, spec, shuffle=False) if val_split else None, **cell.fit_kwargs)
            if non_finite:
                raise NonFiniteLoss(non_finite_message(version.ref, **non_finite))
            if stop is not None and stop.is_set():
                raise TrainingCancelled(f"Training on {version.ref} was cancelled after {len(history.get('loss', []))} of {epochs} "
                                        "epochs; its MLflow run is marked KILLED. Run the cell again with --resume to continue.")
            model_uri = log_model(mlf, built, version, spec)
        except (KeyboardInterrupt, TrainingCancelled):
            end_run(mlf, "KILLED")
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure ends the run FAILED, then is raised again
            kept = keep_if_unlogged(exc, built, run_id)
            end_run(mlf, "FAILED")
            raise (kept or _one_line(exc)) from None
        mlf.end_run("FINISHED")
        shutil.rmtree(backups, ignore_errors=True)
        return TrainResult(title, run_id, page, experiment, version.ref, epochs, history, speed["samples_per_s"], where, built, model_uri,
                           default_code=default_code or "")
    finally:
        release_backups(backups)


def _one_line(exc: BaseException) -> BaseException:
    if isinstance(exc, NbscaleError):
        return exc
    from ..errors import first_useful_line
    from ..feed import ShortEpochError

    text = str(exc)
    if "ShortEpochError" in text:  # raised in the feed, wrapped by tf.data
        return ShortEpochError(text.split("ShortEpochError: ", 1)[1].splitlines()[0])
    return NbscaleError(f"Training failed: {first_useful_line(text)}")

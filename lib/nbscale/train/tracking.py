"""A training's MLflow run: opened (or reopened to resume), its parameters, dataset and model logged, its
backups folder, and the model kept on disk when the tracking server stops answering."""
from __future__ import annotations

import hashlib
import threading
import time
import warnings
from pathlib import Path

from ..config import settings
from ..errors import NbscaleError
from ..quiet import quiet_loggers
from ..tags import BACKUP_KEY as BACKUP_TAG, MODEL_URI as MODEL_TAG, TASK as TASK_TAG
from .runtime import device
from .task import task_of


def run_url(run) -> str | None:
    """The run's page on the tracking server (None on a local store, which has no web page of its own)."""
    uri = settings().tracking_uri
    return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" if uri.startswith("http") else None


_claims_lock = threading.Lock()
_claimed: set[Path] = set()


def claim_backups(base: Path) -> Path:
    """The backup folder for one training: `base` unless a training of this kernel is using it (the same
    cell started twice side by side), then base-2, base-3, ...; their checkpoints would collide."""
    with _claims_lock:
        candidate, n = base, 1
        while candidate in _claimed:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")
        _claimed.add(candidate)
        return candidate


def release_backups(backups: Path) -> None:
    with _claims_lock:
        _claimed.discard(backups)


def backup_dir(experiment: str, ref: str, code: str | None, root: Path | None = None) -> Path:
    """Epoch backups of one cell on one dataset version, under `root`: by default this process's folder (the
    data dir, or over Connect this machine's); distributed trainings pass the data dir, which their workers share."""
    key = hashlib.sha1(f"{experiment}|{ref}|{code}".encode()).hexdigest()[:12]
    from ..datadir import local_dir

    return (root or local_dir()) / "checkpoints" / experiment / key


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


def end_run(mlf, status: str) -> None:
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


_logging_inputs = threading.Lock()


def log_params(mlf, model, version, spec, epochs, validation, train_split, val_split) -> None:
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


def log_model(mlf, model, version, spec) -> str:
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

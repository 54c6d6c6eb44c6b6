"""The MLflow tags nbscale writes in one package and reads in another: named once, here."""
from __future__ import annotations

MODEL_URI = "nbscale.model_uri"  # on a training run: its logged model (how %register finds it)
TASK = "nbscale.task"  # on a run and its registered versions: classification or regression
BACKUP_KEY = "nbscale.backup_key"  # on a run: the epoch backups it resumes from
RUN_ID = "nbscale.run_id"  # on a registered version: the training run it came from
DATA = "nbscale.data"  # on a registered version: the dataset version it was trained on


def run_of(version) -> str:
    """The training run of a registered model version (the tag survives copies between registries; MLflow's own
    run_id field does not)."""
    return (version.tags or {}).get(RUN_ID) or version.run_id or ""

"""What a model predicts — classes or values — known from its loss, recorded with the model, and used
wherever a prediction is shown or written (an argmax over one regression output is always class 0)."""
from __future__ import annotations

from ..tags import RUN_ID, TASK as TASK_TAG

CLASSIFICATION, REGRESSION = "classification", "regression"
_CLASS_LOSSES = ("crossentropy", "hinge", "focal", "kl_divergence", "kld")


def task_of(model) -> str:
    """classification for cross-entropy/hinge-like losses, regression for every other (mse, mae, huber...)."""
    loss = getattr(model, "loss", None)
    losses = list(loss.values()) if isinstance(loss, dict) else list(loss) if isinstance(loss, (list, tuple)) else [loss]
    text = " ".join(item if isinstance(item, str) else getattr(item, "name", None) or getattr(item, "__name__", None)
                    or type(item).__name__ for item in losses if item is not None).lower()
    return CLASSIFICATION if any(word in text for word in _CLASS_LOSSES) else REGRESSION


def task_of_version(name: str, version) -> str:
    """The task recorded with a registered version (or its training run). A version without one is refused:
    showing its outputs as classes or as values would be a guess."""
    from ..errors import NbscaleError
    from ..session import tracking_client

    client = tracking_client()
    tags = client.get_model_version(name, str(version)).tags or {}
    task = tags.get(TASK_TAG)
    if not task and tags.get(RUN_ID):
        task = client.get_run(tags[RUN_ID]).data.tags.get(TASK_TAG)
    if task not in (CLASSIFICATION, REGRESSION):
        raise NbscaleError(f"{name} v{version} does not record whether it predicts classes or values (it was not trained by this "
                           "version of nbscale): train and register it again with %%train and %register.")
    return task

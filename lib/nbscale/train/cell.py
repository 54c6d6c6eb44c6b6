"""What a %%train cell gives: its compiled model, the callbacks and fit arguments it adds, or — for %train without
a cell, or a cell of comments only — nbscale's default model for the dataset, as code to copy into a cell and edit."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import NbscaleError

# The fit() arguments a cell may set: the data, epochs and batch size come from the dataset and the flags.
FIT_KWARGS = ("class_weight", "validation_freq")
MAX_DEFAULT_CLASSES = 100  # more integer labels than this: a count or an id, not classes — the user says which


@dataclass
class CellModel:
    model: object
    callbacks: list = field(default_factory=list)
    fit_kwargs: dict = field(default_factory=dict)


def is_blank(code: str | None) -> bool:
    """Nothing but blank lines and comments."""
    return not any(line.strip() and not line.strip().startswith("#") for line in (code or "").splitlines())


def default_model_code(spec, version) -> str:
    """The code of a small model that fits `spec`'s data: a CNN for images, an MLP for numeric columns; softmax over
    the classes for an integer label, one linear output (mean squared error) for a float label."""
    if spec.label_dtype == "float32":
        head, compiled = ("keras.layers.Dense(1)",
                          'model.compile(optimizer="adam", loss="mse", metrics=["mae"])')
    else:
        classes = _classes(spec, version)
        head, compiled = (f'keras.layers.Dense({classes}, activation="softmax")',
                          'model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])')
    shape = tuple(spec.feature_shape)
    if len(shape) >= 2:
        image = shape if len(shape) == 3 else (*shape, 1)
        body = [f"keras.Input(shape={shape}),",
                *([f"keras.layers.Reshape({image}),"] if image != shape else []),
                'keras.layers.Conv2D(16, 3, padding="same", activation="relu"),',
                "keras.layers.MaxPooling2D(),",
                'keras.layers.Conv2D(32, 3, padding="same", activation="relu"),',
                "keras.layers.GlobalAveragePooling2D(),",
                f"{head},"]
        kind = "a small CNN"
    else:
        body = [f"keras.Input(shape={shape}),",
                "keras.layers.BatchNormalization(),  # columns on different scales",
                'keras.layers.Dense(64, activation="relu"),',
                'keras.layers.Dense(32, activation="relu"),',
                f"{head},"]
        kind = "a small MLP"
    lines = [f"# nbscale's default model for {spec.ref}: {kind}. Copy this into the cell to change it.",
             "model = keras.Sequential([", *(f"    {line}" for line in body), "])", compiled]
    return "\n".join(lines) + "\n"


def _classes(spec, version) -> int:
    """One unit per class 0..max label: from the balance the ingest recorded, else counted now (never guessed)."""
    manifest = version.manifest
    recorded = manifest.get("label") == spec.label
    if recorded and manifest.get("label_summary"):
        raise NbscaleError(f"{spec.label!r} of {spec.ref} is an integer label with too many distinct values to be classes: nbscale's default "
                           "model cannot tell classes from a count — write the model in the cell (e.g. a Dense(1) output with "
                           "loss='mse' for a count).")
    balance = manifest.get("label_balance") if recorded else None
    if not balance:  # trained on another column than the one ingested as the label
        from ..sources import quoted

        counted = version.df.groupBy(quoted(spec.label)).count().limit(MAX_DEFAULT_CLASSES + 1).collect()
        balance = {str(row[0]): row[1] for row in counted}
    values = [int(v) for v in balance if re.fullmatch(r"-?\d+", v)]
    if not values or len(values) != len(balance) or min(values) < 0 or max(values) >= MAX_DEFAULT_CLASSES:
        raise NbscaleError(f"{spec.label!r} of {spec.ref} is not classes 0..{MAX_DEFAULT_CLASSES - 1} (values outside that range, "
                           "or none): nbscale's default model would be a guess — write the model in a %%train cell (e.g. a Dense(1) output with "
                           "loss='mse' for a count).")
    return max(values) + 1


def build(code: str | None, namespace: dict | None, seed: int, policy: str = "float32") -> CellModel:
    """Run the cell (with `keras`, and the notebook's variables) and collect what it defines."""
    from . import dtype_policy, keras

    tfk = keras()
    tfk.utils.set_random_seed(seed)  # the same cell and --seed give the same initial weights
    before = namespace or {}
    scope = {**before, "keras": tfk}
    with dtype_policy(policy):  # compile() wraps the optimizer for loss scaling under mixed_float16
        exec(compile(code or "", "<%%train cell>", "exec"), scope)  # noqa: S102 - the user's own cell

    def defined(name: str):  # what this cell defines wins over what an earlier cell left
        return scope[name] if name in scope and scope[name] is not before.get(name) else None

    if callable(defined("build_model")):
        model = scope["build_model"]()
    elif defined("model") is not None:
        model = scope["model"]
    else:
        raise NbscaleError("The %%train cell defines no `model` and no `build_model()`: end it with model = keras.Sequential([...]) "
                           "and model.compile(...), or run %train --data NAME without a cell for nbscale's default model.")
    return CellModel(check_model(model), _callbacks(tfk, defined("callbacks")), _fit_kwargs(defined("fit_kwargs")))


def check_model(model):
    """A compiled tf-keras model, or one line saying what it is instead."""
    from . import keras

    tfk = keras()
    if not isinstance(model, tfk.Model):
        origin = type(model).__module__.split(".")[0]
        if origin == "keras":
            raise NbscaleError("The model was built with Keras 3 (`import keras`); nbscale trains with tf-keras: "
                               "drop the `import keras` line and use the `keras` nbscale provides in the cell.")
        raise NbscaleError(f"`model` is a {type(model).__name__}, not a Keras model: build it with keras.Sequential or keras.Model.")
    if model.optimizer is None or not getattr(model, "_is_compiled", True):
        raise NbscaleError("The model is not compiled: add model.compile(optimizer=..., loss=..., metrics=[...]) to the cell.")
    return model


def _callbacks(tfk, given) -> list:
    if given is None:
        return []
    items = list(given) if isinstance(given, (list, tuple)) else [given]
    wrong = [type(item).__name__ for item in items if not isinstance(item, tfk.callbacks.Callback)]
    if wrong:
        raise NbscaleError(f"`callbacks` holds {', '.join(wrong)}, not Keras callbacks: use the cell's keras, e.g. "
                           "callbacks = [keras.callbacks.EarlyStopping(patience=2)] (not Keras 3's `import keras`).")
    return items


def _fit_kwargs(given) -> dict:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise NbscaleError(f"`fit_kwargs` is a {type(given).__name__}: make it a dict, e.g. fit_kwargs = {{'class_weight': {{0: 1, 1: 5}}}}.")
    other = sorted(set(given) - set(FIT_KWARGS))
    if other:
        raise NbscaleError(f"fit_kwargs cannot set {', '.join(other)}: nbscale feeds the data and takes epochs and batch size from "
                           f"--epochs and --batch-size; a cell may set {' and '.join(FIT_KWARGS)}.")
    return dict(given)


def describe(cell: CellModel) -> dict[str, str]:
    """What the run's parameters record of the cell's additions."""
    params = {}
    if cell.callbacks:
        params["callbacks"] = ", ".join(type(c).__name__ for c in cell.callbacks)
    for key, value in cell.fit_kwargs.items():
        params[key] = repr(value)[:250]
    return params

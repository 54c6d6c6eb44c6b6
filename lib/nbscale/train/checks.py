"""What a model and a dataset version must agree on before training starts: each mismatch is one line
naming the fix (TensorFlow would say "Graph execution error" mid-epoch)."""
from __future__ import annotations

from ..errors import NbscaleError


def check_labels(model, spec, version) -> None:
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


def check_split(spec, version, validation: float, train_rows: int) -> None:
    if train_rows == 0:
        raise NbscaleError(f"--validation {validation} leaves 0 of the {version.manifest['counts']['loaded']} rows of {spec.ref} for "
                           "training: use a smaller fraction (e.g. 0.2).")


def check_shapes(model, spec, train_rows: int) -> None:
    shape = model.input_shape
    expected = tuple(shape[1:]) if isinstance(shape, tuple) else None  # a list: several inputs, not checked here
    mismatch = expected is not None and (
        len(expected) != len(spec.feature_shape) or any(e is not None and e != g for e, g in zip(expected, spec.feature_shape)))
    if mismatch:
        raise NbscaleError(f"The model expects inputs of shape {expected} but {spec.ref} gives {spec.feature_shape}: "
                           f"start the model with keras.Input(shape={spec.feature_shape}).")
    if spec.batch_size > train_rows:
        raise NbscaleError(f"--batch-size {spec.batch_size} is larger than the {train_rows} training rows of {spec.ref}: use a smaller batch.")

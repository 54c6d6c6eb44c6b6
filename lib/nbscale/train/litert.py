"""The LiteRT export of a logged Keras model (the Binder profile's replicas run it: nbscale.limits.litert_replicas),
made and checked in a child process:

    python -m nbscale.train.litert MODEL.keras OUT.tflite      # prints one JSON line

A child, not the kernel: TensorFlow's converter grows the process that runs it by 0.15-0.35 GiB that it keeps
(benchmarks/suite.py --profile binder), more than a LiteRT replica saves. The child reloads the saved model as a
TensorFlow replica would, converts the forward pass compiled_keras runs, and keeps the export only when it answers as
TensorFlow does on CHECK_ROWS random inputs: every output within CHECK_TOLERANCE and the same class chosen."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ..errors import first_useful_line
from ..tfenv import TENSORFLOW_ENV

CHECK_ROWS = 256
CHECK_TOLERANCE = 1e-5  # float32 rounding between the two runtimes is ~1e-7 on nbscale's models
TIMEOUT_S = 300


def export(keras_model: Path, out: Path) -> dict | None:
    """The check the export at `out` passed ({"rows", "max_abs_difference"}), or None and one line saying why there
    is none (the model's replicas then run TensorFlow; nothing that would answer differently is kept)."""
    env = {**os.environ, **TENSORFLOW_ENV, "TF_CPP_MIN_LOG_LEVEL": "3"}  # the converter's own lines too
    try:
        child = subprocess.run([sys.executable, "-m", "nbscale.train.litert", str(keras_model), str(out)], env=env,
                               capture_output=True, text=True, timeout=TIMEOUT_S)
        lines = child.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if child.returncode == 0 and lines else {"refused": first_useful_line(child.stderr) or "no answer"}
    except subprocess.TimeoutExpired:
        answer = {"refused": f"the export took over {TIMEOUT_S} s"}
    if "refused" in answer:
        out.unlink(missing_ok=True)
        print(f"No LiteRT export of this model ({answer['refused']}): its replicas run TensorFlow.")
        return None
    return answer


def convert_and_check(keras_model: str, out: str) -> dict:
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from .compiled_keras import LiteRTForward, compiled_forward  # what the replicas run, either way

    model = tf_keras.models.load_model(keras_model, compile=False)
    shape = tuple(model.input_shape[1:])
    forward = compiled_forward(model)
    try:
        flatbuffer = tf.lite.TFLiteConverter.from_concrete_functions([forward], model).convert()
    except Exception as exc:  # noqa: BLE001 - an op LiteRT lacks: TensorFlow serves the model
        return {"refused": first_useful_line(str(exc))}
    rows = np.random.default_rng(0).random((CHECK_ROWS, *shape), dtype=np.float32)
    expected, answered = forward(rows).numpy(), LiteRTForward(flatbuffer)(rows)
    difference = float(np.abs(expected - answered).max())
    same_classes = expected.shape[1] == 1 or bool((expected.argmax(axis=1) == answered.argmax(axis=1)).all())
    if not (difference <= CHECK_TOLERANCE and same_classes):
        return {"refused": f"it answers differently from TensorFlow, by up to {difference:.2g} on {CHECK_ROWS} random rows"}
    Path(out).write_bytes(flatbuffer)
    return {"rows": CHECK_ROWS, "max_abs_difference": difference}


if __name__ == "__main__":
    print(json.dumps(convert_and_check(*sys.argv[1:3])))

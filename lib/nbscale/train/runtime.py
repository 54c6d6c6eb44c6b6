"""The TensorFlow side of training: tf-keras imported quietly, the accelerator found, the precision chosen."""
from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path

from ..errors import NbscaleError


def _native_log() -> Path:
    from ..datadir import local_dir

    return local_dir() / "logs" / "tensorflow.log"  # this process's own log


def keras():
    """The Keras nbscale trains with: tf-keras (Keras 2)."""
    from ..tfenv import set_tensorflow_defaults

    set_tensorflow_defaults()
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

"""TensorFlow's environment, which it reads once, at its import: tf-keras (Keras 2, the one Keras that trains
single-node and under TF's multi-worker strategies) and its C++ info lines off. Every process that may import
TensorFlow (the kernel, replicas, distributed workers, tuning trials) sets it from here first."""
import os

TENSORFLOW_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def set_tensorflow_defaults() -> None:
    """In this process, before TensorFlow is imported; what the user set already stays."""
    for name, value in TENSORFLOW_ENV.items():
        os.environ.setdefault(name, value)

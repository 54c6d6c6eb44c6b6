"""MLflow model code (logged with the model, "models from code"): a pyfunc whose predict calls the
Keras model through one traced TensorFlow function. Self-contained on purpose: a server needs
TensorFlow, tf-keras, pandas and MLflow, not nbscale.

The model owns its input contract (its `model_config`): it takes the dataset's raw feature columns by
name, as the ingested dataset has them (MLflow's signature checks names and types and puts them in
order), and applies exactly the training feed's transform (column order, image shape, the scale).
It answers a frame: `prediction` (the class, or the value) and, for a classifier, `probabilities`.
A model logged before the contract existed has no config: it takes pre-scaled float rows and
answers the raw outputs, as it always did.

MLflow's own Keras flavour calls `model.predict`, which builds a data adapter and a predict loop on
every call: ~100x the forward pass for one row (benchmarks/serve.py).

A model logged with a LiteRT export (artifact `litert_model`, kept only when it answers as TensorFlow does)
runs that export instead when the environment says NBSCALE_REPLICA_RUNTIME=litert: the process then never
imports TensorFlow (~0.2 GiB instead of ~0.4; nbscale's Binder profile starts its replicas so)."""
import os
import threading

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


RUNTIME_VARIABLE = "NBSCALE_REPLICA_RUNTIME"  # the name nbscale.limits gives it (this file cannot import nbscale)


class LiteRTForward:
    """A LiteRT flatbuffer as a function of a float32 batch; one call at a time (an interpreter is not thread-safe)."""

    def __init__(self, model):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=model)
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.interpreter.resize_tensor_input(self.input, x.shape)
            self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(self.input, np.ascontiguousarray(x, dtype=np.float32))
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output).copy()


def compiled_forward(model):
    """`model`'s forward pass as one traced TensorFlow function of a float32 batch (what a TensorFlow replica runs,
    and what the LiteRT export is converted from)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
    def forward(x):
        return tf.cast(model(x, training=False), tf.float32)  # float32 out, also under mixed precision

    return forward.get_concrete_function()


class CompiledKeras(PythonModel):
    def load_context(self, context):
        self.config = dict(getattr(context, "model_config", None) or {})
        litert = context.artifacts.get("litert_model")
        if litert and os.environ.get(RUNTIME_VARIABLE) == "litert":
            self.input_shape = tuple(self.config["input_shape"])
            self._forward = LiteRTForward(litert)
            return
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # nbscale.tfenv's, spelt out: this file cannot import nbscale
        import tf_keras

        self.keras_model = tf_keras.models.load_model(context.artifacts["keras_model"], compile=False)
        self.input_shape = tuple(self.keras_model.input_shape[1:])
        concrete = compiled_forward(self.keras_model)
        self._forward = lambda x: concrete(x).numpy()

    def features(self, model_input) -> np.ndarray:
        """Raw rows -> what the network takes: the training feed's transform."""
        config = self.config
        if not config.get("features"):  # logged before the input contract: pre-scaled float rows
            return np.asarray(model_input, dtype=np.float32).reshape((-1, *self.input_shape))
        names = config["features"]
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input, columns=names)
        if config.get("vector"):  # one column holding each row's whole vector (an image, as ingested)
            x = np.stack([np.asarray(v, dtype=np.float32).ravel() for v in frame[names[0]]]) if len(frame) else np.zeros((0, 0), np.float32)
        else:
            x = frame[names].to_numpy(dtype=np.float32)
        x = x.reshape((-1, *self.input_shape))
        scale = float(config.get("scale", 1.0))
        return x / np.float32(scale) if scale != 1 else x

    # The hint says "a frame" without asking MLflow to infer a schema from it: the logged signature validates names and types.
    def predict(self, context, model_input: pd.DataFrame, params=None):
        outputs = self._forward(self.features(model_input))
        task = self.config.get("task")
        if not task:
            return outputs
        if task != "classification":
            return pd.DataFrame({"prediction": outputs[:, 0].astype(np.float64)})
        classes = (outputs[:, 0] >= 0.5).astype(np.int64) if outputs.shape[1] == 1 else outputs.argmax(axis=1).astype(np.int64)
        return pd.DataFrame({"prediction": classes, "probabilities": list(outputs)})


mlflow.models.set_model(CompiledKeras())

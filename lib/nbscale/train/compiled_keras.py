"""MLflow model code (logged with the model, "models from code"): a pyfunc whose predict calls the
Keras model through one traced TensorFlow function. Self-contained on purpose: a server needs
TensorFlow, tf-keras and MLflow, not nbscale.

MLflow's own Keras flavour calls `model.predict`, which builds a data adapter and a predict loop on
every call: ~100x the forward pass for one row (benchmarks/serve.py)."""
import os

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class CompiledKeras(PythonModel):
    def load_context(self, context):
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        import tensorflow as tf
        import tf_keras

        self.keras_model = tf_keras.models.load_model(context.artifacts["keras_model"], compile=False)
        self.input_shape = tuple(self.keras_model.input_shape[1:])
        model = self.keras_model

        @tf.function(input_signature=[tf.TensorSpec((None, *self.input_shape), tf.float32)])
        def forward(x):
            return tf.cast(model(x, training=False), tf.float32)  # float32 out, also under mixed precision

        self._forward = forward.get_concrete_function()

    def predict(self, context, model_input: np.ndarray, params=None):  # the signature (tensor spec) validates it
        x = np.asarray(model_input, dtype=np.float32).reshape((-1, *self.input_shape))
        return self._forward(x).numpy()


mlflow.models.set_model(CompiledKeras())

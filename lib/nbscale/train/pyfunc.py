"""How nbscale logs a Keras model to MLflow: a standard pyfunc model from code (compiled_keras.py),
with the Keras model as its artifact `keras_model`, a signature and an input example. Plain
`mlflow models serve`, `mlflow.pyfunc.load_model` and `spark_udf` all take it."""
from __future__ import annotations

from pathlib import Path

MODEL_CODE = Path(__file__).with_name("compiled_keras.py")


def log_keras(model, example, name: str = "model"):
    """Log `model`; returns MLflow's ModelInfo."""
    import tempfile

    import mlflow
    import mlflow.pyfunc
    import tensorflow as tf
    import tf_keras
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory(prefix="nbscale-model-") as folder:
        path = str(Path(folder) / "model.keras")
        model.save(path)
        outputs = model(example, training=False).numpy().astype("float32")
        # Requirements stated, not inferred: inferring them loads the model in a subprocess (seconds).
        return mlflow.pyfunc.log_model(name=name, python_model=str(MODEL_CODE), artifacts={"keras_model": path},
                                       signature=infer_signature(example, outputs), input_example=example[:2],
                                       pip_requirements=[f"tensorflow=={tf.__version__}", f"tf-keras=={tf_keras.__version__}",
                                                         f"mlflow=={mlflow.__version__}"])

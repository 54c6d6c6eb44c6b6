"""How nbscale logs a Keras model to MLflow: a standard pyfunc model from code (compiled_keras.py),
with the Keras model as its artifact `keras_model` and its input contract as its `model_config`: the
dataset's raw feature columns by name (the signature names them, with a real row as the input
example), the training feed's transform, and what it answers. Plain `mlflow models serve`,
`mlflow.pyfunc.load_model` and `spark_udf` all take it. Where replicas run LiteRT (`limits.litert_replicas`),
a LiteRT export of the same forward pass is logged beside it when it answers as TensorFlow does."""
from __future__ import annotations

from pathlib import Path

from .. import limits
from . import litert

MODEL_CODE = Path(__file__).with_name("compiled_keras.py")


def contract(spec, task: str) -> dict:
    """The model_config that makes a logged model take raw rows: feature columns, the feed's transform, the task."""
    vector = len(spec.features) == 1 and spec.feature_shape != (1,)
    return {"features": list(spec.features), "vector": vector, "scale": float(spec.scale), "task": task}


def signature(config: dict):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    if config["vector"]:
        inputs = Schema([ColSpec(Array(DataType.double), config["features"][0])])
    else:  # any number type is taken (MLflow casts int and float32 up to double); names are required, order is not
        inputs = Schema([ColSpec(DataType.double, name) for name in config["features"]])
    if config["task"] == "classification":
        outputs = Schema([ColSpec(DataType.long, "prediction"), ColSpec(Array(DataType.float), "probabilities")])
    else:
        outputs = Schema([ColSpec(DataType.double, "prediction")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_keras(model, config: dict, example, name: str = "model"):
    """Log `model` with its contract `config` and `example` (a pandas frame of raw rows); returns MLflow's ModelInfo."""
    import tempfile

    import mlflow
    import mlflow.pyfunc
    import tensorflow as tf
    import tf_keras

    with tempfile.TemporaryDirectory(prefix="nbscale-model-") as folder:
        path = str(Path(folder) / "model.keras")
        model.save(path)
        artifacts = {"keras_model": path}
        if limits.litert_replicas():
            config = {**config, "input_shape": list(model.input_shape[1:])}  # what the LiteRT runtime cannot ask Keras
            flatbuffer = Path(folder) / "model.tflite"
            checked = litert.export(Path(path), flatbuffer)
            if checked is not None:
                artifacts["litert_model"], config["litert_check"] = str(flatbuffer), checked
        # Requirements stated, not inferred: inferring them loads the model in a subprocess (seconds).
        info = mlflow.pyfunc.log_model(name=name, python_model=str(MODEL_CODE), artifacts=artifacts,
                                       model_config=config, signature=signature(config), input_example=example,
                                       pip_requirements=[f"tensorflow=={tf.__version__}", f"tf-keras=={tf_keras.__version__}",
                                                         f"mlflow=={mlflow.__version__}", "pandas", "numpy"])
        _forget_local_paths(info, Path(folder))
    return info


def _forget_local_paths(info, scratch: Path) -> None:
    """MLflow writes where the artifacts and the model code came from (this checkout, a deleted temporary
    file) into MLmodel. Nothing reads those paths (the model loads from its own folder); they only tell
    every reader about this machine, so the MLmodel is re-uploaded without them."""
    import mlflow
    import yaml

    client = mlflow.MlflowClient()
    location = client.get_logged_model(info.model_id).artifact_location.rstrip("/")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{location}/MLmodel", dst_path=str(scratch / "mlmodel")))
    text = yaml.safe_load(local.read_text())
    flavour = text["flavors"]["python_function"]
    for artifact in (flavour.get("artifacts") or {}).values():
        artifact.pop("uri", None)
    if flavour.get("model_code_path"):
        flavour["model_code_path"] = Path(flavour["model_code_path"]).name
    local.write_text(yaml.safe_dump(text, sort_keys=False))
    client.log_model_artifact(info.model_id, str(local))

"""Batch inference: a registered model over a dataset version with `mlflow.pyfunc.spark_udf` (env
manager local), published as a new dataset version (the input's columns + prediction + probabilities)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Callable

from ..errors import NbscaleError, spark_errors
from ..jobs.progress import SparkProgress
from ..jobs.work import spark_work


def with_predictions(df, spec, predict, task: str, contract):
    """`df` plus `prediction`: for a classifier also its `probabilities`, and the class (argmax, or output
    >= 0.5 for one sigmoid output); for a regression the value itself (double) — never an argmax over one
    output, which would always say class 0. `predict` is the version's Spark UDF: given the raw feature
    columns by name when the model owns its input contract, else the features scaled as in training."""
    from pyspark.sql import functions as F

    from ..feed import feature_vector
    from ..sources import quoted
    from ..train.task import CLASSIFICATION

    if contract.features is not None:
        answer = predict(F.struct(*[F.col(quoted(c)) for c in contract.features]))
        if task == CLASSIFICATION:
            return df.withColumn("probabilities", answer["probabilities"]).withColumn("prediction", answer["prediction"].cast("int"))
        return df.withColumn("prediction", answer.cast("double"))  # one output column: MLflow's UDF gives the value itself
    outputs = predict(feature_vector(df, spec))
    if task == CLASSIFICATION:
        p = F.col("probabilities")
        return df.withColumn("probabilities", outputs).withColumn(
            "prediction", F.when(F.size(p) == 1, (F.element_at(p, 1) >= 0.5).cast("int"))
                           .otherwise((F.array_position(p, F.array_max(p)) - 1).cast("int")))
    return df.withColumn("prediction", F.element_at(outputs, 1).cast("double"))


def model_udf(session, name: str, version: int, contract):
    """MLflow's Spark UDF of a registered version, in this Python environment (the one that trained it); its
    result type from the model's signature (a model owning its contract answers a struct), else array<float>."""
    import mlflow.pyfunc

    from ..quiet import quiet_loggers

    result_type = None if contract.features is not None else "array<float>"
    # MLflow warns that env_manager="local" does not rebuild the training environment: here it is that environment.
    with quiet_loggers("mlflow.pyfunc", "mlflow.models"):
        return mlflow.pyfunc.spark_udf(session, f"models:/{name}/{version}", env_manager="local", result_type=result_type)


def score(model: str, *, data: str, to: str | None = None, where: str | None = None,
          progress: Callable[[SparkProgress], None] | None = None):
    """Predictions of `model` ("name@alias", "name/N") for every row of dataset version `data` (or the
    rows matching the Spark SQL condition `where`), written as the next version of dataset `to`
    (default: DATA_scored). Returns the published dataset. `progress` receives the Spark jobs' progress
    every half second; an interrupt cancels them."""
    from ..datahost import on_data_host, require_shared_tracking
    from ..ingest import Dataset, store
    from ..ingest.profile import profile, written_facts
    from ..session import spark

    require_shared_tracking("%score", "the executors load the model from it")
    from ..train.task import task_of_version
    from .contract import contract_of
    from .versions import resolve, trained_feed

    name, version = resolve(model)
    spec, source = trained_feed(name, version, data)
    label = spec.label
    to = store.check_name(to or f"{source.name}_scored")
    session = spark()
    contract = contract_of(name, version)
    predict = model_udf(session, name, version, contract)
    df = source.df
    if where:
        with spark_errors(f"Selecting rows of {source.ref} with {where!r}", "Write a Spark SQL condition on its columns, e.g. label = 3."):
            df = df.where(where)
            _ = df.schema  # analysed now: an unknown column fails here, not halfway through the write
    scored = with_predictions(df, spec, predict, task_of_version(name, version), contract)
    with spark_work(session, f"nbscale-score-{to}-{uuid.uuid4().hex[:8]}", f"%score {model}", progress), store.staging(to) as staged:
        expected = df.count()
        scored.write.parquet(str(staged / "data"))
        facts = on_data_host(written_facts, str(staged / "data"), None)  # rows and nulls from the footers
        written = session.read.parquet(str(staged / "data"))
        rows = facts["rows"]
        if rows != expected:
            raise NbscaleError(f"Scoring {source.ref} wrote {rows} rows for {expected} input rows; nothing was published. Run it again.")
        manifest = {**profile(written, label if label in written.columns else None, facts["nulls"]), "shards": facts["shards"],
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "format": "scored",
                    "source": source.ref, "files": [], "options": {"model": f"{name}/{version}", "asked": model, "data": source.ref, "where": where},
                    "counts": {"read": expected, "loaded": rows, "quarantined": 0}, "notes": []}
        if "image_shape" in source.manifest:
            manifest["image_shape"] = source.manifest["image_shape"]
        published = store.publish(to, staged, manifest)
    return Dataset(published)

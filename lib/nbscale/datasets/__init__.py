"""Data that ships offline with the stack, and readers that turn it into Spark DataFrames."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import NbscaleError

DIGITS_PIXELS = 64  # 8x8 grey levels 0..16
DIGITS_COLUMNS = [f"pixel_{i}" for i in range(DIGITS_PIXELS)] + ["label"]


def digits_csv() -> Path:
    """The UCI Optical Recognition of Handwritten Digits test set (1,797 8x8 images, 10 classes)
    as the gzipped CSV scikit-learn ships: real image data that needs no download.

    Found without importing scikit-learn (which would pull in SciPy)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise NbscaleError("The digits data ships with scikit-learn, which is not installed: pip install scikit-learn.")
    return path


def digits(spark=None):
    """The digits as a Spark DataFrame: pixel_0 … pixel_63 (double) and label (int)."""
    from pyspark.sql import functions as F

    from ..errors import spark_errors
    from ..session import spark as current_spark

    spark = spark or current_spark()
    with spark_errors("Reading the digits CSV"):
        raw = spark.read.csv(str(digits_csv()), inferSchema=True, header=False)
        return raw.select(
            *[F.col(f"_c{i}").cast("double").alias(name) for i, name in enumerate(DIGITS_COLUMNS[:-1])],
            F.col(f"_c{DIGITS_PIXELS}").cast("int").alias("label"),
        )

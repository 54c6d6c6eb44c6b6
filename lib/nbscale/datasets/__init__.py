"""Data that ships offline with the stack, and readers that turn it into Spark DataFrames."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import NbscaleError
from ..files import write_atomic

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


def digits_idx(folder: Path) -> tuple[Path, Path]:
    """The digits as MNIST-style IDX files in `folder` (written once): an 8x8 images file and a labels
    file — the offline stand-in for Fashion-MNIST's 28x28 ones, read by the same `--format idx`."""
    import gzip
    import struct

    import numpy as np

    images, labels = folder / "digits-images-idx3-ubyte", folder / "digits-labels-idx1-ubyte"
    if images.is_file() and labels.is_file():
        return images, labels
    table = np.loadtxt(gzip.open(digits_csv(), "rt"), delimiter=",").astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for path, array in ((images, table[:, :DIGITS_PIXELS].reshape(-1, 8, 8)), (labels, table[:, DIGITS_PIXELS])):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        write_atomic(path, header + array.tobytes())
    return images, labels


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

"""IDX files (the MNIST / Fashion-MNIST format): an images file and a labels file.

The files are checked whole first (magic, counts, sizes); then Spark decodes them in parallel,
each task reading its own slice of at most --batch-rows records (bounded memory)."""
from __future__ import annotations

import gzip
import math
import shutil
import struct
from pathlib import Path

from ..config import settings
from ..errors import NbscaleError
from ..files import replacing
from .readers import URI_RE, Read, expand, items


def _plain_copy(path: Path) -> Path:
    """An uncompressed copy of a .gz file (cached), so tasks can seek to their slice."""
    if path.suffix != ".gz":
        return path
    stat = path.stat()
    target = Path(settings().data_dir) / "cache" / "idx" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not target.is_file():
        with replacing(target) as partial:
            try:
                with gzip.open(path, "rb") as src, open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, EOFError) as exc:
                raise NbscaleError(f"{path} is not a readable gzip file ({exc}): download it again.") from None
    return target


def header(path: Path) -> tuple[list[int], int]:
    """(dimensions, data offset) of an unsigned-byte IDX file."""
    with open(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08:
            raise NbscaleError(f"{path.name} is not an unsigned-byte IDX file (bad magic number): --format idx expects MNIST-style files.")
        ndim = head[3]
        dims = list(struct.unpack(f">{ndim}I", f.read(4 * ndim)))
    offset = 4 + 4 * ndim
    expected = offset + math.prod(dims)
    if path.stat().st_size != expected:
        raise NbscaleError(f"{path.name} is {path.stat().st_size} bytes but its header promises {expected}: the file is truncated or damaged.")
    return dims, offset


def read_idx(spark, source: str, batch_rows: int) -> Read:
    if any(URI_RE.match(item) for item in items(source)):
        raise NbscaleError("--format idx reads its two files on this machine (it decodes their headers here): give local paths "
                           "or a shared mount's paths, not URIs.")
    files = [_plain_copy(Path(p)) for p in expand(source)]
    found = {len(dims): (path, dims, offset) for path in files for dims, offset in [header(path)]}
    if len(files) != 2 or set(found) != {1, 3}:
        raise NbscaleError("--format idx needs two files: an images file (3 dimensions) and a labels file (1 dimension).")
    images, image_dims, image_offset = found[3]
    labels, label_dims, label_offset = found[1]
    count, height, width = image_dims
    if label_dims[0] != count:
        raise NbscaleError(f"{images.name} holds {count} images but {labels.name} holds {label_dims[0]} labels: use the matching pair.")
    pixels = height * width

    def decode(batches):
        import numpy as np
        import pandas as pd

        image_map = np.memmap(images, dtype=np.uint8, mode="r", offset=image_offset, shape=(count, pixels))
        label_map = np.memmap(labels, dtype=np.uint8, mode="r", offset=label_offset, shape=(count,))
        for batch in batches:  # --batch-rows ids at a time (Arrow batch size)
            ids = batch["id"].to_numpy()
            block = image_map[ids].astype(np.float32)
            yield pd.DataFrame({"image": list(block), "label": label_map[ids].astype(np.int32)})

    partitions = max(1, math.ceil(count / batch_rows))
    df = spark.range(0, count, numPartitions=partitions).mapInPandas(decode, "image array<float>, label int")
    notes = [f"batching: decoded by {partitions} Spark task(s) of at most {batch_rows} rows each"]
    return Read(df, None, count, [str(p) for p in files], notes, image_shape=[height, width, 1])

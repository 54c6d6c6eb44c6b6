"""Parquet -> Petastorm -> batches for Keras, with every epoch's row count checked.

Petastorm 0.13.1's default thread pool sometimes returns zero rows without an error (see
DESIGN.md), so nothing here trusts a read: each Petastorm pass over a split counts its rows and
fails loudly when they differ from what the split holds, and training counts what every epoch
delivered (`counter` in `tf_dataset`). The reader pool is `dummy` (in-process): it read completely
in every measurement (DESIGN.md; tests/test_train.py reads a split 20 times), where the `thread`
pool lost whole reads; benchmarks/feed.py measures what it costs. Row groups are read and decoded one step
ahead of the trainer in a thread, through a queue of READ_AHEAD groups (`_read_ahead`)."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import threading
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import over_connect, settings
from ..datahost import on_data_host, remove_tree
from ..errors import NbscaleError, connect_server_gone
from ..files import replacing
from ..sources import quoted

READER_POOL = "dummy"
# A split this small (features as float32) is read through Petastorm once, checked, and then served
# from tf.data's in-memory cache for the following epochs.
CACHE_BYTES = 512 * 2**20
# Python hands tf.data this many batches at a time (cut into batches in the graph): one generator
# step per batch held the GIL often enough to halve an uncached epoch's speed (benchmarks/feed.py).
CHUNK_BATCHES = 32
# Petastorm 0.13.1 calls pyarrow 14's legacy dataset API, which warns on every read.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\..*)?$")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm(\..*)?$")
NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")


class ShortEpochError(NbscaleError):
    """A pass over a split yielded a different number of rows than the split holds."""


@dataclass(frozen=True)
class Split:
    path: str | list[str]  # Parquet directory Petastorm reads (or a worker's files of it)
    rows: int
    encoding: str = "float32"  # how the packed features are stored: uint8 or float32


@dataclass(frozen=True)
class FeedSpec:
    """How a dataset version becomes (features, label) batches."""

    ref: str
    label: str
    features: tuple[str, ...]
    feature_shape: tuple[int, ...]  # one example, e.g. (8, 8, 1) or (12,)
    scale: float  # features are divided by this
    batch_size: int
    seed: int
    label_dtype: str = "int64"  # integer classes; float32 for a float label


def spec_for(dataset, label: str | None, batch_size: int, scale: float, seed: int) -> FeedSpec:
    """Features and their shape from the version's manifest: an image column, or numeric columns.
    `label` None: the label given when the dataset was ingested (%%ingest --label), else "label"."""
    import math

    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise NbscaleError(f"--scale {scale}: features are divided by it, so it must be a positive number (e.g. 255 for 8-bit pixels, "
                           "16 for the digits, 1 to keep the values).")
    manifest = dataset.manifest
    label = label or manifest.get("label") or "label"
    types = dict(map(tuple, manifest["schema"]))
    if label not in types:
        raise NbscaleError(f"Label column {label!r} is not in {dataset.ref} (columns: {', '.join(types)}): pass --label with one of them.")
    if types[label] not in NUMERIC:
        raise NbscaleError(f"Label column {label!r} of {dataset.ref} is {types[label]}: train on a numeric label (ingest it as an integer class).")
    label_dtype = "float32" if types[label] in ("float", "double") else "int64"
    if "image_shape" in manifest:
        return FeedSpec(dataset.ref, label, ("image",), tuple(manifest["image_shape"]), scale, batch_size, seed, label_dtype)
    skip = {label, "label_name", "path"}
    features = tuple(c for c in types if c not in skip)
    arrays = [c for c in features if types[c] in {f"array<{t}>" for t in NUMERIC}]
    if arrays == list(features) and len(arrays) == 1:  # one vector column: feed it flat
        length = on_data_host(_vector_length, str(dataset.path), arrays[0])
        return FeedSpec(dataset.ref, label, features, (length,), scale, batch_size, seed, label_dtype)
    other = [f"{c} ({types[c]})" for c in features if types[c] not in NUMERIC]
    if other:
        raise NbscaleError(f"{dataset.ref} has non-numeric feature columns {', '.join(other)}: select numeric features with "
                           f"%%ingest NAME\\nSELECT ... FROM {dataset.name} (or encode them) first.")
    return FeedSpec(dataset.ref, label, features, (len(features),), scale, batch_size, seed, label_dtype)


FEATURES = "nbscale_features"  # the split's one packed feature column
LABEL = "nbscale_label"  # the split's label column: a plain name whatever the dataset calls it ("the label", "y.true")


def split(dataset, spec: FeedSpec, validation: float, row_groups: int = 4, pull: bool = True,
          on_write: Callable[[], None] | None = None) -> tuple[Split, Split | None]:
    """A seeded train/validation split of a version, written once and reused (versions are immutable).

    The split is laid out for the feed: each row's features packed into one binary value (row-major,
    uint8 where every value is a whole number in 0..255, as pixels are, else float32) beside the label.
    Decoding that is one `np.frombuffer` per row group, where a list<float> column costs Petastorm a
    copy per row and 4x the bytes (benchmarks/feed.py). Over Spark Connect the split is written on the
    cluster and, with `pull`, copied to this machine for a single-node training; without it (distributed
    workers read it there) its cluster path is returned. `on_write` is called before a split is written (the
    first training on a version waits for a Spark job: the cell says so)."""
    if not 0 <= validation < 1:
        raise NbscaleError(f"--validation {validation} must be a fraction in [0, 1).")
    key = hashlib.sha1(json.dumps([LAYOUT, dataset.ref, validation, spec.seed, row_groups, spec.features, spec.label]).encode()).hexdigest()[:12]
    folder = Path(settings().data_dir) / "cache" / "splits" / dataset.name / f"v{dataset.version}-{key}"
    meta = folder / "split.json"
    with _writing:  # trainings started side by side (a workflow's fan-out) write a split once
        text = on_data_host(_read_or_none, str(meta))
        if text is None:
            if on_write is not None:
                on_write()
            _write_split(dataset, spec, validation, row_groups, folder)
            text = on_data_host(_read_or_none, str(meta))
    rows = json.loads(text)
    encoding = rows.get("encoding", "float32")
    train = Split((folder / "train").as_uri(), rows["train"], encoding)
    held = Split((folder / "validation").as_uri(), rows["validation"], encoding) if validation else None
    if over_connect() and pull:  # Petastorm reads files of this machine: bring the split here, through Spark
        # The copy is named by everything that makes it this split: the server, the cluster folder, the version's creation
        # (a data dir wiped and re-ingested makes a new v1) and the split's own record.
        copy = hashlib.sha1(json.dumps([settings().master, str(folder), dataset.manifest.get("created"), text]).encode()).hexdigest()[:16]
        return _pulled(train, copy, "train", row_groups), _pulled(held, copy, "validation", row_groups) if held else None
    return train, held


def _vector_length(path: str, column: str) -> int:
    """Length of the first row's vector in `column` of a version's Parquet files (runs where the data dir is)."""
    import pyarrow.parquet as pq

    first = next(Path(path).glob("*.parquet"))
    return len(pq.read_table(first, columns=[column]).slice(0, 1).column(0)[0])


def _read_or_none(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def _pulled(split_: Split, copy: str, part: str, row_groups: int) -> Split:
    """Over Spark Connect: the split's rows fetched through Spark into this machine's cache (once; splits of a
    version never change), in `row_groups` row groups so shuffling by row group still works, and checked:
    the copy must hold exactly the rows the split holds."""
    import pyarrow.parquet as pq

    from ..datadir import local_dir
    from ..session import spark

    here = local_dir() / "cache" / "splits-pulled" / copy / part
    file = here / "part-0.parquet"
    if not file.is_file() or pq.ParquetFile(file).metadata.num_rows != split_.rows:
        table = spark().read.parquet(split_.path.removeprefix("file://")).toArrow()
        if table.num_rows != split_.rows:
            raise ShortEpochError(f"Fetching the {part} split through Spark Connect gave {table.num_rows} of its {split_.rows} rows: "
                                  "nothing was trained. Run the cell again.")
        fitting = ROW_GROUP_BYTES // max(1, table.nbytes // max(1, table.num_rows))  # rows in ROW_GROUP_BYTES, as on the cluster
        with replacing(file) as partial:
            pq.write_table(table, partial, row_group_size=max(1, min(math.ceil(table.num_rows / row_groups), fitting)),
                           compression=CODEC[split_.encoding])
    return dataclasses.replace(split_, path=here.as_uri())


_writing = threading.Lock()
LAYOUT = 5  # bumped when the split's layout changes, so older cached splits are not read
# float32 splits are stored uncompressed: a streamed epoch re-reads them, and Snappy's decompression was most of that
# read (0.97 -> 0.28 s for 100k x 784 on this project's 2-core machine), a dear price for the disk a cache saves.
# uint8 (pixels) is a quarter of the bytes: it keeps Spark's default.
CODEC = {"float32": "none", "uint8": "snappy"}


def feature_vector(df, spec: FeedSpec, scaled: bool = True):
    """A row's features as one array<float> column (an image/vector column, or the numeric columns in
    order), divided by the spec's scale unless `scaled` is False: what the model takes."""
    from pyspark.sql import functions as F

    if len(spec.features) == 1 and df.schema[spec.features[0]].dataType.typeName() == "array":
        vector = F.col(quoted(spec.features[0])).cast("array<float>")
    else:
        vector = F.array(*[F.col(quoted(c)).cast("float") for c in spec.features])
    return F.transform(vector, lambda v: v / F.lit(spec.scale)) if scaled and spec.scale != 1 else vector


def _write_split(dataset, spec: FeedSpec, validation: float, row_groups: int, folder: Path) -> None:
    """One Spark job: read the version, pack each row's features, assign it to train or validation by a seeded
    hash of its content, deal it to one of `row_groups` files, and write both parts. The packing's encoding
    is read from the version's Parquet footers beforehand; a uint8 guess the rows disprove is rewritten as float32."""
    from ..errors import spark_errors

    width = math.prod(spec.feature_shape)
    encoding = on_data_host(_likely_encoding, str(dataset.path), list(spec.features))
    for attempt in (encoding, "float32") if encoding == "uint8" else (encoding,):
        staging = str(folder.with_name(f"{folder.name}.staging-{uuid.uuid4().hex[:8]}"))  # another kernel may be writing too
        try:
            _write_packed(dataset, spec, validation, row_groups, staging, width, attempt)
        except BaseException as exc:  # an interrupt too: no half-written split stays behind
            if not connect_server_gone(exc):  # (a server that is gone cannot remove it)
                on_data_host(remove_tree, staging)
            if not isinstance(exc, Exception):
                raise
            if UNEVEN in str(exc):
                raise NbscaleError(f"Rows of {dataset.ref} hold feature vectors of different lengths (the first has {width}), or "
                                   "none: re-ingest it with images of one size or vectors of one length.") from None
            if attempt == "uint8" and NOT_BYTES in str(exc):
                continue  # a fractional, negative, large or missing value: the split needs float32
            with spark_errors(f"Writing the training split of {dataset.ref}"):
                raise
        on_data_host(_publish_split, staging, str(folder), attempt, bool(validation))
        return


UNEVEN = "nbscale-split: uneven feature vectors"  # raised by the packer in Spark's Python workers, matched here
NOT_BYTES = "nbscale-split: not all whole numbers in 0..255"
PART = "nbscale_part"  # the write's partition column: the folder each row goes to


def _write_packed(dataset, spec: FeedSpec, validation: float, row_groups: int, staging: str, width: int, encoding: str) -> None:
    from pyspark.sql import functions as F

    from ..session import spark

    df = spark().read.parquet(dataset.path)
    df = df.select(feature_vector(df, spec, scaled=False).alias(FEATURES), F.col(quoted(spec.label)).alias(LABEL))
    label_type = df.schema[LABEL].dataType.simpleString()
    packed = df.mapInArrow(_packer(encoding, width), f"{FEATURES} binary, {LABEL} {label_type}")
    # A row's part and file follow from its bytes and the seed, not from where it sat in the source: the same split
    # on any cluster layout, duplicates never on both sides, and the deal spreads a source sorted by label over
    # every file (hash partitioning needs no sort before it, as a round-robin deal would).
    mixed = packed.withColumn("nbscale_mix", F.xxhash64(F.lit(spec.seed), F.col(FEATURES), F.col(LABEL)))
    held = F.pmod(F.col("nbscale_mix"), F.lit(1_000_000)) < F.lit(int(round(validation * 1_000_000)))
    dealt = (mixed.withColumn(PART, F.when(held, "validation").otherwise("train"))
             .repartition(row_groups, "nbscale_mix").drop("nbscale_mix"))
    # Row groups of at most ROW_GROUP_BYTES so a streamed epoch holds a few small groups (uint8 decodes to 4x its size).
    (dealt.write.partitionBy(PART).option("parquet.block.size", ROW_GROUP_BYTES).option("compression", CODEC[encoding])
     .parquet(staging))


def _likely_encoding(path: str, features: list[str]) -> str:
    """uint8 when the version's Parquet footers show every feature value in 0..255 with no nulls, and the values are
    integers or a first row group of them is whole; else float32. Runs where the data dir is. A uint8 answer is a
    guess the packer checks on every value (NOT_BYTES); float32 is always lossless for what the feed takes."""
    import numpy as np
    import pyarrow.parquet as pq

    files = sorted(Path(path).glob("*.parquet"))
    fractional = set()
    for file in files:
        meta = pq.ParquetFile(file).metadata
        owners = _leaf_owners(meta.schema.to_arrow_schema())
        for index, owner in enumerate(owners):
            if owner not in features:
                continue
            column = meta.schema.column(index)
            if column.physical_type not in ("INT32", "INT64", "BOOLEAN", "FLOAT", "DOUBLE"):
                return "float32"
            if column.physical_type in ("FLOAT", "DOUBLE"):
                fractional.add(owner)
            for group in range(meta.num_row_groups):
                if meta.row_group(group).num_rows == 0:
                    continue
                stats = meta.row_group(group).column(index).statistics
                if stats is None or not stats.has_min_max or not stats.has_null_count or stats.null_count:
                    return "float32"
                if not 0 <= stats.min <= stats.max <= 255:
                    return "float32"
    if fractional and files:
        first = pq.ParquetFile(files[0])
        if first.metadata.num_row_groups:
            sample = first.read_row_group(0, columns=sorted(fractional))
            for column in sample.columns:
                values = column.combine_chunks()
                while _is_list(values.type):  # a vector column: its values
                    values = values.flatten()
                numbers = values.to_numpy(zero_copy_only=False)
                if not np.array_equal(numbers, np.floor(numbers)):
                    return "float32"
    return "uint8"


def _is_list(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _leaf_owners(schema) -> list[str]:
    """The top-level column each Parquet leaf column belongs to, in leaf order."""
    import pyarrow as pa

    def leaves(kind) -> int:
        if pa.types.is_struct(kind):
            return sum(leaves(kind.field(i).type) for i in range(kind.num_fields))
        if pa.types.is_map(kind):
            return leaves(kind.key_type) + leaves(kind.item_type)
        return leaves(kind.value_type) if _is_list(kind) else 1

    return [field.name for field in schema for _ in range(leaves(field.type))]


def _publish_split(staging: str, folder: str, encoding: str, has_validation: bool) -> None:
    """Move the write's part folders to train/ and validation/ (an empty part gets an empty file of the same schema),
    count their rows from the Parquet footers, write split.json, then rename the staged split into place. Runs where
    the data dir is."""
    import pyarrow.parquet as pq

    staged, final = Path(staging), Path(folder)
    parts = ("train", "validation") if has_validation else ("train",)
    counts = {"validation": 0}
    for part in parts:
        target = staged / part
        source = staged / f"{PART}={part}"
        if source.is_dir():
            os.rename(source, target)
        else:  # no row landed here (a tiny version): an empty part Petastorm can still open
            target.mkdir(parents=True)
            written = next(staged.glob("*/*.parquet"), None)  # the other part's schema
            if written is not None:
                pq.write_table(pq.read_schema(written).empty_table(), target / "part-empty.parquet")
        counts[part] = sum(pq.ParquetFile(f).metadata.num_rows for f in target.glob("*.parquet"))
    (staged / "split.json").write_text(json.dumps({**counts, "encoding": encoding}))
    if final.exists() and not (final / "split.json").is_file():
        shutil.rmtree(final)  # left half-written by a crash
    try:
        os.rename(staged, final)
    except OSError:  # another kernel published the same split first: it is identical (seeded); keep that one
        shutil.rmtree(staged, ignore_errors=True)
        if not (final / "split.json").is_file():
            raise


def _packer(encoding: str, width: int):
    """Arrow batches of (list<float> features, label) -> (binary features, label), in Spark's Python workers. Every
    row must hold `width` values (UNEVEN), and a uint8 packing must hold every value exactly (NOT_BYTES)."""
    def pack(record_batches):
        import numpy as np
        import pyarrow as pa

        for batch in record_batches:
            n, vectors = batch.num_rows, batch.column(0)
            lengths = vectors.value_lengths().to_numpy(zero_copy_only=False)
            if vectors.null_count or (lengths != width).any():
                raise ValueError(UNEVEN)
            values = vectors.flatten().to_numpy(zero_copy_only=False)
            if encoding == "uint8":
                with np.errstate(invalid="ignore"):
                    stored = values.astype(np.uint8)
                if not np.array_equal(stored, values):
                    raise ValueError(NOT_BYTES)
            else:
                stored = values.astype(np.float32, copy=False)
            offsets = np.arange(n + 1, dtype=np.int32) * (width * stored.itemsize)
            column = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(stored.tobytes())])
            yield pa.RecordBatch.from_arrays([column, batch.column(1)], names=[FEATURES, LABEL])

    return pack


def batches(split_: Split, spec: FeedSpec, shuffle: bool, epoch: int = 0, cur_shard: int | None = None, shard_count: int | None = None,
            stored: bool = False):
    """One pass over a split as (x, y) numpy batches; raises ShortEpochError if rows go missing. Row groups are
    read and decoded one step ahead in a thread (Parquet reads and numpy decoding release the GIL), so the
    next group is on its way while the trainer consumes this one; at most READ_AHEAD groups wait decoded.
    `stored`: x as the split stores it (uint8 or float32, unscaled), for a tf.data pipeline that decodes it itself."""
    import numpy as np

    size, seen, expected = spec.batch_size, 0, split_.rows if shard_count is None else None
    carry_x = carry_y = None  # fewer than a batch of rows left by the last row group
    for x, y in _read_ahead(split_, spec, shuffle, epoch, cur_shard, shard_count, stored):
        # Rows arrive shuffled within their group (by the reader), so batches are slices: views, no copy.
        seen += len(y)
        start = 0
        if carry_y is not None:
            need = min(size - len(carry_y), len(y))
            carry_x, carry_y, start = np.concatenate([carry_x, x[:need]]), np.concatenate([carry_y, y[:need]]), need
            if len(carry_y) < size:
                continue
            yield carry_x, carry_y
            carry_x = carry_y = None
        while start + size <= len(y):
            yield x[start:start + size], y[start:start + size]
            start += size
        if start < len(y):
            carry_x, carry_y = np.copy(x[start:]), np.copy(y[start:])  # a copy: the group can go
    if carry_y is not None and len(carry_y):
        yield carry_x, carry_y
    if expected is not None and seen != expected:
        raise ShortEpochError(f"Epoch {epoch + 1} read {seen} of the {expected} rows of {spec.ref}: the read was incomplete, "
                              "so training stopped rather than learn from part of the data. Run it again.")


ROW_GROUP_BYTES = 32 * 2**20
READ_AHEAD = 2  # decoded row groups waiting for the trainer: the feed's memory is bounded by these, not the split


def _read_ahead(split_: Split, spec: FeedSpec, shuffle: bool, epoch: int, cur_shard: int | None, shard_count: int | None,
                stored: bool = False):
    """(x, y) per row group, read by Petastorm and decoded in a thread, handed over through a bounded queue.
    A reader error is raised here; a consumer that stops early (a short fit, an interrupt) stops the thread."""
    import queue

    from petastorm import make_batch_reader

    ready: queue.Queue = queue.Queue(maxsize=READ_AHEAD)
    done, stop = object(), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read():
        try:
            reader = make_batch_reader(split_.path, schema_fields=[FEATURES, LABEL], num_epochs=1, reader_pool_type=READER_POOL,
                                       shuffle_row_groups=shuffle, shuffle_rows=shuffle, seed=_reader_seed(spec.seed, epoch),
                                       cur_shard=cur_shard, shard_count=shard_count)
            if not hasattr(reader, "_results_queue_reader"):
                raise RuntimeError("This Petastorm has no _results_queue_reader: nbscale's feed needs the version constraints.txt pins.")
            reader._results_queue_reader = _ArrowTables()
            try:  # not `with reader`: its exit prints "Cache cleanup complete." into the cell on every epoch
                for group in reader:
                    decoded = (_features(group.column(FEATURES), split_, spec, stored),
                               group.column(LABEL).to_numpy().astype(spec.label_dtype, copy=False))
                    if not put(decoded):
                        return
            finally:
                reader.stop()
                reader.join()
            put(done)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it in its own thread
            put(exc)

    worker = threading.Thread(target=read, name="nbscale-feed-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _reader_seed(seed: int, epoch: int) -> int:
    """Petastorm's seed for an epoch's order of row groups and of rows within each. Its worker copies every row group
    in a `take` whether or not it shuffles the rows (0.13.1), so the rows' shuffle costs nothing more there. It
    shuffles unseeded when given 0 and refuses a negative seed, hence a positive one for any --seed."""
    return (seed * 100_003 + epoch) % 2**62 + 1


class _ArrowTables:
    """Petastorm's results reader for its Arrow worker, minus the conversion: each row group as the Arrow table the
    worker read. Petastorm's own turns the packed column into one Python bytes object per row (through pandas); the
    split's rows are of one width, so the column's data buffer is the feature matrix, viewed in place by `_features`."""
    batched_output = True

    def read_next(self, workers_pool, schema, ngram):
        from petastorm.workers_pool import EmptyResultError

        try:
            return workers_pool.get_results()
        except EmptyResultError:
            raise StopIteration from None


def _features(column, split_: Split, spec: FeedSpec, stored: bool = False):
    """A row group's packed feature column (Arrow binary, one fixed-width value per row) as a matrix: a view of its
    data buffer, then (unless `stored`) float32 and scaled in one new array."""
    import numpy as np
    import pyarrow as pa

    packed = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()  # combining one chunk copies it
    width = math.prod(spec.feature_shape) * np.dtype(split_.encoding).itemsize
    kind = np.int64 if pa.types.is_large_binary(packed.type) else np.int32
    offsets = np.frombuffer(packed.buffers()[1], kind, len(packed) + 1, packed.offset * np.dtype(kind).itemsize)
    if packed.null_count or (np.diff(offsets) != width).any():  # one short row would shift every row after it
        folder = split_.path.removeprefix("file://").rsplit("/", 1)[0]
        raise NbscaleError(f"A row group of the split of {spec.ref} in {folder} does not hold {len(packed)} rows of {width} bytes each: "
                           "the split was damaged after it was written. Delete that folder and train again (it is rewritten from the version).")
    x = np.frombuffer(packed.buffers()[2], np.uint8)[offsets[0]:offsets[-1]].view(split_.encoding).reshape((-1, *spec.feature_shape))
    if stored:
        return x
    if spec.scale != 1:
        return np.divide(x, np.float32(spec.scale), dtype=np.float32)
    return x.astype(np.float32)  # a copy also for float32: the view is read-only


def steps(rows: int, batch_size: int) -> int:
    return math.ceil(rows / batch_size)


def tf_dataset(split_: Split, spec: FeedSpec, shuffle: bool, counter=None):
    """A tf.data pipeline over `batches`, which hands over rows in the dtype the split stores (uint8 pixels: a quarter
    of float32's bytes through the generator); TensorFlow's own threads make them float32 and scale them. A small split
    is cached after its first complete (checked) epoch, as stored, with the batch order reshuffled every epoch; a large
    one is re-read and re-counted each epoch. `counter` (a tf.Variable) adds up the rows every epoch really delivers,
    cached or not."""
    import tensorflow as tf

    epoch = {"n": 0}
    chunks = dataclasses.replace(spec, batch_size=spec.batch_size * CHUNK_BATCHES)
    stored = tf.as_dtype(split_.encoding)
    cached = split_.rows * math.prod(spec.feature_shape) * stored.size <= CACHE_BYTES

    def one_pass():
        n, epoch["n"] = epoch["n"], epoch["n"] + 1
        yield from batches(split_, chunks, shuffle, epoch=n, stored=True)

    scale = tf.constant(spec.scale, tf.float32)
    decoded = stored == tf.float32 and spec.scale == 1

    def decode(ds):  # the float32 division `batches` does in numpy when it decodes
        return ds if decoded else ds.map(lambda x, y: (tf.cast(x, tf.float32) / scale, y), num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)

    signature = (tf.TensorSpec((None, *spec.feature_shape), stored), tf.TensorSpec((None,), tf.as_dtype(spec.label_dtype)))
    ds = tf.data.Dataset.from_generator(one_pass, output_signature=signature)
    if cached:
        # tf.data keeps the cache only when a pass ends normally; a short pass raises, so never caches.
        ds = ds.rebatch(spec.batch_size).cache()
        if shuffle:
            ds = ds.shuffle(steps(split_.rows, spec.batch_size), seed=spec.seed, reshuffle_each_iteration=True)
        ds = decode(ds)
    else:  # decoded a chunk at a time, then cut into batches
        ds = decode(ds).rebatch(spec.batch_size)
    if counter is not None:
        def count(x, y):
            counter.assign_add(tf.shape(y, out_type=tf.int64)[0])
            return x, y

        ds = ds.map(count)
    return ds.prefetch(tf.data.AUTOTUNE)


def shard(split_: Split, index: int, count: int) -> Split:
    """Worker `index` of `count`'s part of a split: every count-th Parquet file, with its row count
    from the file footers (so each worker can check its own reads)."""
    import pyarrow.parquet as pq

    folder = Path(split_.path.removeprefix("file://"))
    files = sorted(folder.glob("*.parquet"))
    mine = files[index::count]
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in mine)
    return Split([f.as_uri() for f in mine], rows, split_.encoding)


def shard_rows(split_: Split, count: int) -> list[int]:
    """Rows of each of `count` workers' shards (runs where the split is)."""
    return [shard(split_, index, count).rows for index in range(count)]


def raw_examples(path: str, features: tuple[str, ...], rows: int):
    """The first `rows` rows of a dataset version's feature columns as ingested (a pandas frame, lists for
    vector columns): a logged model's input example (runs where the data dir is)."""
    import pyarrow.dataset as pads

    frame = pads.dataset(path, format="parquet").head(rows, columns=list(features)).to_pandas()
    for column in frame.columns:
        if frame[column].dtype == object:  # a vector column: plain lists of floats, as a JSON client sends
            frame[column] = [[float(v) for v in values] for values in frame[column]]
    return frame


def endless_batches(split_: Split, spec: FeedSpec, batch_size: int, shuffle: bool):
    """Full batches of `batch_size` from a split, pass after pass (each pass's rows checked), for
    workers that must all run the same number of steps whatever their shard's size."""
    import numpy as np

    local = dataclasses.replace(spec, batch_size=batch_size)
    held_x, held_y, epoch = [], [], 0
    while True:
        for x, y in batches(split_, local, shuffle, epoch=epoch):
            held_x.append(x)
            held_y.append(y)
            while sum(len(b) for b in held_y) >= batch_size:
                x_all, y_all = np.concatenate(held_x), np.concatenate(held_y)
                yield x_all[:batch_size], y_all[:batch_size]
                held_x, held_y = [x_all[batch_size:]], [y_all[batch_size:]]
        epoch += 1

"""Source readers. Each returns a `Read`: the good rows, the malformed rows (with their raw text
and a reason) and how many records the source held, so that read = loaded + quarantined."""
from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import over_connect
from ..datahost import on_data_host
from ..errors import NbscaleError
from ..sources import items, joined  # noqa: F401 - readers.items/joined are used across ingest

FORMATS = ("csv", "json", "parquet", "images", "idx", "sql")
CORRUPT = "_corrupt_record"
SOURCE = "_source_file"
SQL_RE = re.compile(r"^\s*(SELECT|WITH)\b", re.I)


@dataclass
class Read:
    df: object  # Spark DataFrame of good rows
    quarantine: object | None  # Spark DataFrame: source, raw, reason
    records: int  # records in the source, counted independently of the parser
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    image_shape: list[int] | None = None  # (height, width, channels) of an image column
    cached: list = field(default_factory=list)  # frames to unpersist once the version is written
    type_failures: dict = field(default_factory=dict)  # column -> values that did not parse as its (inferred) type
    # CSV and JSON: writing `df` also counts the malformed rows it leaves out (a Spark Observation named
    # "malformed"), so a clean source is parsed once; `quarantine_of()` builds the quarantine (a second parse)
    # only when that count is not zero. Other readers give `quarantine` itself.
    observation: object | None = None
    quarantine_of: Callable[[], object] | None = None


def detect_format(source: str) -> str:
    if SQL_RE.match(source):
        return "sql"
    first = items(source)[0].lower()
    for ending, fmt in ((".csv", "csv"), (".csv.gz", "csv"), (".json", "json"), (".jsonl", "json"),
                        (".parquet", "parquet"), ("-ubyte", "idx"), ("-ubyte.gz", "idx")):
        if first.rstrip("/*").endswith(ending):
            return fmt
    if (holds_folders(first) if Path(first).exists() else on_data_host(holds_folders, first)):
        return "images"
    raise NbscaleError(f"Cannot tell the format of {first!r}: add --format with one of {', '.join(FORMATS)}.")


URI_RE = re.compile(r"^[A-Za-z][\w+.\-]*://")


def holds_folders(path: str) -> bool:
    return Path(path).is_dir() and any(p.is_dir() for p in Path(path).iterdir())


def expand(source: str) -> list[str]:
    """Paths and globs (several, separated by whitespace) -> existing files, sorted, where the data dir is
    (over Spark Connect, on the cluster). A URI with a scheme (hdfs://, s3a://, file://, abfss://...) goes
    to Spark's filesystem layer unchanged: Spark expands its globs and reads it where the executors are."""
    return on_data_host(expand_here, source, not over_connect())


def expand_here(source: str, notebook_side: bool = True) -> list[str]:
    """`expand` on the files of the machine it runs on (`notebook_side`: the notebook's own)."""
    files: list[str] = []
    for item in items(source):
        if URI_RE.match(item):
            files.append(item)
            continue
        matched = sorted(glob.glob(str(Path(item).expanduser()), recursive=True))
        if not matched:
            where = f"(relative paths start at {Path.cwd()})" if notebook_side else "on this machine or on the cluster"
            raise NbscaleError(f"No file matches {item!r} {where}: check the path.")
        for path in matched:
            p = Path(path)
            files.extend(sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", "."))) if p.is_dir() else [str(p)])
    if not files:
        raise NbscaleError(f"{source!r} holds no files: check the path.")
    return files


def check_encoding(encoding: str) -> str:
    """The Java charset name Spark's readers take for a Python/IANA encoding name (latin-1 -> ISO-8859-1)."""
    import codecs
    import re as _re

    try:
        name = codecs.lookup(encoding).name  # canonical: 'iso8859-1', 'cp1252', 'utf-16-le'...
    except LookupError:
        raise NbscaleError(f"--encoding {encoding!r} is not a text encoding: use e.g. utf-8, latin-1, cp1252, utf-16.") from None
    if match := _re.fullmatch(r"iso8859-(\d+)", name):
        return f"ISO-8859-{match.group(1)}"
    if match := _re.fullmatch(r"cp(125\d)", name):
        return f"windows-{match.group(1)}"
    return {"ascii": "US-ASCII", "utf-16-le": "UTF-16LE", "utf-16-be": "UTF-16BE", "utf-8-sig": "UTF-8"}.get(name, name.upper())


# Below this many bytes in all, the data host counts a source's lines itself: a Spark job over the text took ~1 s
# at 1 M rows (26 MB) where one pass in Python takes 0.1 s; above it Spark's parallel scan wins.
LINES_HERE_BYTES = 256 << 20
_CHUNK = 16 << 20


def _line_records(spark, files: list[str], header: bool, encoding: str | None = None) -> int:
    """Non-blank lines, less one header line per file: what a line-based source holds. Without
    --encoding the files must be UTF-8: Spark's CSV and JSON readers would silently turn other bytes into
    U+FFFD ('café' in latin-1 becomes 'caf\ufffd'), so such a source stops here, naming the file and line."""
    paths = [_plain_path(f) for f in files]
    counted = on_data_host(count_lines_here, paths, LINES_HERE_BYTES) if encoding is None and None not in paths else None
    per_file, undecodable, first_bad = counted or _count_lines_with_spark(spark, files, encoding is None)
    if undecodable and encoding is None:
        name, text = first_bad
        raise NbscaleError(f"{name.rsplit('/', 1)[-1]} is not UTF-8: {undecodable} line(s) hold bytes that do not decode "
                           f"(e.g. {text[:60]!r}). Ingest it with --encoding and the file's encoding (often latin-1 or cp1252); "
                           "nothing was written.")
    return sum(per_file) - (sum(1 for lines in per_file if lines) if header else 0)  # one header line in each file that is not empty


# Hadoop's codecs, which Spark's readers pick by the file's suffix: such a file is decompressed by Spark, so counted there.
_COMPRESSED = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst")


def _plain_path(name: str) -> str | None:
    """A file of the data host's own file system as a path; None for a URI Spark's file systems must read, or a
    file Spark decompresses."""
    if name.endswith(_COMPRESSED):
        return None
    if name.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(name).path)
    return None if URI_RE.match(name) else name


def count_lines_here(paths: list[str], limit: int) -> tuple[list[int], int, tuple[str, str] | None] | None:
    """Per file its non-blank lines, split and skipped as Spark's text, CSV and JSON readers do (at \\n, \\r\\n or \\r;
    a line of ASCII whitespace only is no record), then the lines that are not UTF-8 and the first of them (file,
    text). None when the files hold more than `limit` bytes together: Spark counts those (runs on the data host)."""
    import os

    if sum(os.path.getsize(p) for p in paths) > limit:
        return None
    per_file, undecodable, first_bad = [], 0, None
    for path in paths:
        lines, carry = 0, b""
        with open(path, "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                data = carry + chunk
                cut = len(data) if not chunk else data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next chunk
                block, carry = data[:cut], data[cut:]
                split = block.splitlines()
                lines += sum(1 for line in split if line.strip())
                if not _is_utf8(block):  # only a chunk that fails is walked line by line
                    bad = [line for line in split if not _is_utf8(line)]
                    undecodable += len(bad)
                    first_bad = first_bad or (path, bad[0].decode("utf-8", "replace"))
                if not chunk:
                    break
        per_file.append(lines)
    return per_file, undecodable, first_bad


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _count_lines_with_spark(spark, files: list[str], check_utf8: bool) -> tuple[list[int], int, tuple[str, str] | None]:
    """What count_lines_here answers, as a Spark job (large sources, and URIs of Spark's file systems)."""
    from pyspark.sql import functions as F

    lines = spark.read.text(files).where(F.col("value").rlike(r"\S"))  # Spark's parsers skip whitespace-only lines (a lone tab)
    # Per file (a grouping is cheaper than a distinct count of files): its lines, and those that are not UTF-8.
    per_file = lines.groupBy(F.col("_metadata.file_path")).agg(F.count("*").alias("lines"),
                                                               F.count(F.when(~F.is_valid_utf8("value"), 1)).alias("undecodable")).collect()
    undecodable = sum(row["undecodable"] for row in per_file)
    first_bad = None
    if undecodable and check_utf8:
        bad = lines.where(~F.is_valid_utf8("value")).select(F.make_valid_utf8("value").alias("value"),
                                                            F.col("_metadata.file_path").alias("file")).first()
        first_bad = (bad["file"], bad["value"])
    return [row["lines"] for row in per_file], undecodable, first_bad


def _quarantine(df, raw_col: str, reason):
    from pyspark.sql import functions as F

    return df.where(F.col(raw_col).isNotNull()).select(F.col(SOURCE).alias("source"), F.col(raw_col).alias("raw"), reason.alias("reason"))


def _with_source(df):
    """Keep each row's file as a plain column, then cache: Spark refuses queries that touch only the
    corrupt-record column of a raw file scan, and a cached frame is no longer a raw scan. The cache
    must be dropped after the ingest: Spark would serve a later read of the same path from it."""
    from pyspark.sql import functions as F

    return df.withColumn(SOURCE, F.col("_metadata.file_path")).cache()


def _one_pass(scan, reason, records: int, files: list[str], **facts) -> Read:
    """The good rows of a parse with the corrupt-record column, counting the malformed ones as they are written; the
    quarantine (their file, raw text and reason) is parsed again from a cached scan only when there are some."""
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    observation = Observation("malformed")
    good = scan.observe(observation, F.count(F.col(CORRUPT)).alias("malformed")).where(F.col(CORRUPT).isNull()).drop(CORRUPT)
    read = Read(good, None, records, files, observation=observation, **facts)

    def quarantine_of():
        parsed = _with_source(scan)
        read.cached.append(parsed)
        return _quarantine(parsed, CORRUPT, reason)

    read.quarantine_of = quarantine_of
    return read


def read_csv(spark, source: str, schema: str | None, header: bool, sep: str, encoding: str | None = None) -> Read:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    files = expand(source)
    # escape '"': a quote inside a quoted field is doubled (RFC 4180, what spreadsheets write); Spark's default is '\\'.
    options = {"header": header, "sep": sep, "escape": '"', "mode": "PERMISSIVE", **({"encoding": check_encoding(encoding)} if encoding else {})}
    records = _line_records(spark, files, header, encoding)  # first: a source that is not UTF-8 stops before any parsing
    notes: list[str] = []
    promoted: dict[str, str] = {}
    failed: dict[str, int] = {}
    if schema:
        base = _ddl_schema(spark, schema)
    else:
        base, promoted, failed, notes = _infer_by_majority(spark, files, options)
    if header:
        notes += _duplicate_names(spark, files[0], sep, [f.name for f in base.fields])
    full = StructType([*base.fields, StructField(CORRUPT, StringType())])
    # With the corrupt-record column in an explicit schema, Spark 4 flags type errors and short
    # and long rows alike; the raw text is kept for the quarantine table.
    scan = spark.read.options(**options, columnNameOfCorruptRecord=CORRUPT).schema(full).csv(files)
    expected = len(base.fields)
    stripped = F.regexp_replace(F.col(CORRUPT), '"[^"]*"', "")
    fields = F.length(stripped) - F.length(F.regexp_replace(stripped, re.escape(sep), "")) + 1
    quotes = F.length(F.col(CORRUPT)) - F.length(F.regexp_replace(F.col(CORRUPT), '"', ""))
    reason = (F.when(quotes % 2 == 1, "unbalanced quote")
              .when(fields < expected, F.format_string(f"short row (%d of {expected} fields)", fields))
              .when(fields > expected, F.format_string(f"long row (%d of {expected} fields)", fields))
              .otherwise(_type_reason(promoted, [f.name for f in base.fields], sep) if promoted else F.lit("a value does not parse as its column's type")))
    return _one_pass(scan, reason, records, files, notes=notes, type_failures=failed)


def _duplicate_names(spark, first_file: str, sep: str, names: list[str]) -> list[str]:
    """Spark renames repeated header names (x, x -> x0, x1) without a word: say so on the card."""
    import csv
    from collections import Counter

    line = spark.read.text(first_file).first()
    if line is None:
        return []
    header = next(csv.reader([line["value"]], delimiter=sep), [])
    repeated = sorted(name for name, count in Counter(h.strip() for h in header).items() if count > 1 and name)
    if not repeated:
        return []
    return [f"the header repeats {', '.join(repeated)}: Spark named those columns {', '.join(n for n in names if any(n.startswith(r) for r in repeated))}"
            " — rename them in the source, or give --schema"]


NUMERIC_MAJORITY = 0.9  # a column is numeric when at least this share of its non-empty values parse as numbers


def _infer_by_majority(spark, files: list[str], options: dict):
    """(schema, {column: type} promoted, {column: values that did not parse}, notes). Spark's inference makes a whole column a string on one bad
    cell; here a column whose values are mostly numbers is numeric, and the cells that do not parse are
    type errors (their rows quarantined) — never a silently demoted column."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

    inferred = spark.read.options(**options).csv(files, inferSchema=True).schema
    strings = [f.name for f in inferred.fields if isinstance(f.dataType, StringType)]
    if not strings:
        return inferred, {}, {}, []
    raw = spark.read.options(**options).csv(files)  # every column as text, the same header and separator
    aggregates = []
    for i, name in enumerate(strings):
        column = F.col(f"`{name}`")
        aggregates += [F.count(F.when(column.isNotNull() & (F.trim(column) != ""), 1)).alias(f"n{i}"),
                       F.count(F.when(F.expr(f"try_cast(`{name}` AS DOUBLE)").isNotNull(), 1)).alias(f"d{i}"),
                       F.count(F.when(F.expr(f"try_cast(`{name}` AS INT)").isNotNull(), 1)).alias(f"i{i}")]
    counts = raw.agg(*aggregates).first()
    promoted, failed = {}, {}
    for i, name in enumerate(strings):
        values, doubles, ints = counts[f"n{i}"], counts[f"d{i}"], counts[f"i{i}"]
        if values and doubles >= NUMERIC_MAJORITY * values:
            promoted[name] = "INT" if ints == doubles else "DOUBLE"
            failed[name] = values - (ints if ints == doubles else doubles)
    if not promoted:
        return inferred, {}, {}, []
    kinds = {"INT": IntegerType(), "DOUBLE": DoubleType()}
    fields = [StructField(f.name, kinds[promoted[f.name]], True) if f.name in promoted else f for f in inferred.fields]
    detail = ", ".join(f"{name} {kind} ({failed[name]} value{'s' if failed[name] != 1 else ''} did not parse)" for name, kind in promoted.items())
    notes = [f"column types by majority: a column is numeric when at least {NUMERIC_MAJORITY:.0%} of its non-empty values parse as "
             f"numbers; {detail} — rows with such a value are quarantined (reason: type). --schema sets the types yourself."]
    return StructType(fields), promoted, failed, notes


def _type_reason(promoted: dict[str, str], names: list[str], sep: str):
    """'type: COLUMN = 'VALUE' is not TYPE' for a quarantined row, naming the first cell that does not parse."""
    from pyspark.sql import functions as F

    ddl = ", ".join(f"`{n}` STRING" for n in names)
    cells = F.from_csv(F.col(CORRUPT), ddl, {"sep": sep, "escape": '"'})
    checks = [F.when(cells[name].isNotNull() & (F.trim(cells[name]) != "") & cells[name].try_cast(kind.lower()).isNull(),
                     F.format_string(f"type: {name} = '%s' is not {kind}", cells[name]))
              for name, kind in promoted.items()]
    return F.coalesce(*checks, F.lit("type: a value does not parse as its column's type"))


def read_json(spark, source: str, schema: str | None, encoding: str | None = None) -> Read:
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    files = expand(source)
    records = _line_records(spark, files, False, encoding)
    options = {"encoding": check_encoding(encoding)} if encoding else {}
    base = _ddl_schema(spark, schema) if schema else spark.read.options(**options).json(files).schema
    fields = [f for f in base.fields if f.name != CORRUPT]
    full = StructType([*fields, StructField(CORRUPT, StringType())])
    scan = spark.read.options(**options).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT).schema(full).json(files)
    return _one_pass(scan, F.lit("not a JSON object matching the schema"), records, files)


def read_parquet(spark, source: str) -> Read:
    files = expand(source)
    df = spark.read.parquet(*files)
    return Read(df, None, df.count(), files)


def read_sql(spark, query: str) -> Read:
    from . import store

    # The datasets the query names become views: NAME is its latest version, NAME@vK (written
    # NAME__vK for Spark) a fixed one; an unknown version fails here with nbscale's one line.
    known = set(store.names())
    for name, number in set(re.findall(r"\b([A-Za-z][\w\-]*)(?:@v(\d+))?\b", query)):
        if name in known:
            version = store.resolve(f"{name}@v{number}" if number else name)
            spark.read.parquet(str(version.data_path)).createOrReplaceTempView(f"{name}__v{number}" if number else name)
    rewritten = re.sub(r"\b([A-Za-z][\w\-]*)@v(\d+)\b", r"\1__v\2", query)
    df = spark.sql(rewritten)
    return Read(df, None, df.count(), [query.strip()])


def _ddl_schema(spark, ddl: str):
    try:
        return spark.createDataFrame([], ddl).schema
    except Exception:  # noqa: BLE001 - any parse error is the user's DDL
        raise NbscaleError(f"--schema {ddl!r} is not a Spark DDL schema: write it like 'id INT, name STRING, score DOUBLE'.") from None

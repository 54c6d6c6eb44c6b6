"""What the validation card shows: counts, schema, nulls, label balance, samples, shards, and
what changed against the previous version."""
from __future__ import annotations

from pathlib import Path

from ..errors import NbscaleError
from ..sources import quoted

SAMPLE_ROWS = 5


def schema_of(df) -> list[list[str]]:
    return [[f.name, f.dataType.simpleString()] for f in df.schema.fields]


def check_label(df, label: str | None) -> None:
    if label and label not in df.columns:
        raise NbscaleError(f"Label column {label!r} is not in the data (columns: {', '.join(df.columns)}): pass --label with one of them.")


def profile(df, label: str | None, known_nulls: dict[str, int | None] | None = None) -> dict:
    """The card's facts about `df`. `known_nulls`: exact null counts already read from the files' footers;
    the columns it lacks (or holds None for) are counted by Spark."""
    from pyspark.sql import functions as F

    known = {c: n for c, n in (known_nulls or {}).items() if n is not None}
    missing = [c for c in df.columns if c not in known]
    nulls_row = df.agg(*[F.sum(F.col(f"`{c}`").isNull().cast("long")).alias(c) for c in missing]).first().asDict() if missing else {}
    balance, summary = (_label_facts(df, label) if label else ({}, None))
    sample = [{k: _short(v) for k, v in row.asDict().items()} for row in df.limit(SAMPLE_ROWS).collect()]
    return {
        "schema": schema_of(df),
        "nulls": {c: int(known[c] if c in known else nulls_row[c] or 0) for c in df.columns},
        "label": label,
        "label_balance": balance,
        **({"label_summary": summary} if summary else {}),
        "sample": sample,
    }


MAX_CLASSES = 1000  # more distinct labels than this are no classes: counted as a distribution instead
MAX_FLOAT_CLASSES = 20  # a float label with this few distinct values (0.0/1.0...) is still shown as classes
HISTOGRAM_BINS = 10


def _label_facts(df, label: str) -> tuple[dict[str, int], dict | None]:
    """The label balance (rows per value) for class-like labels; for a continuous one (a float with many values,
    or more than MAX_CLASSES values) a summary and a histogram instead of a row per distinct value."""
    from pyspark.sql import functions as F

    column = F.col(quoted(label))  # a name with a dot or a space is one column, not a struct field
    continuous_type = dict(schema_of(df))[label] in ("float", "double")
    bound = MAX_FLOAT_CLASSES if continuous_type else MAX_CLASSES
    counted = df.groupBy(column).count().orderBy(column).limit(bound + 1).collect()
    if len(counted) <= bound:
        return {str(r[0]): r[1] for r in counted}, None
    finite = df.where(column.isNotNull() & ~F.isnan(column))  # NaN sorts above every number in Spark: it would be the max
    stats = finite.select(F.min(column), F.max(column), F.avg(column), F.percentile_approx(column, [0.25, 0.5, 0.75], 1000)).first()
    if stats[0] is None:
        return {}, None
    low, high, mean, quartiles = float(stats[0]), float(stats[1]), float(stats[2]), [float(q) for q in stats[3]]
    width = (high - low) / HISTOGRAM_BINS or 1.0
    bucket = F.least(F.floor((column - F.lit(low)) / F.lit(width)), F.lit(HISTOGRAM_BINS - 1)).cast("int")
    per_bin = dict(finite.groupBy(bucket.alias("bin")).count().collect())
    counts = [int(per_bin.get(i, 0)) for i in range(HISTOGRAM_BINS)]
    return {}, {"min": low, "max": high, "mean": mean, "quartiles": quartiles,
                "edges": [low + i * width for i in range(HISTOGRAM_BINS + 1)], "counts": counts}


def _short(value):
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{', '.join(map(str, value[:4]))}, … {len(value)} values]"
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def written_facts(data_path: str, quarantine_path: str | None) -> dict:
    """What the Parquet footers of a staged version say, exactly and without a Spark job (runs where the data
    dir is): rows per file, rows in all, null counts of top-level primitive columns (None where a file carries
    no statistics; nested columns are left out: Spark counts those), and the quarantine's rows."""
    import pyarrow.parquet as pq

    files, nulls, rows = [], {}, 0
    for f in sorted(Path(data_path).glob("*.parquet")):
        meta = pq.ParquetFile(f).metadata
        files.append({"file": f.name, "rows": meta.num_rows, "row_groups": meta.num_row_groups})
        rows += meta.num_rows
        # A top-level primitive column: no repetition, at most one definition level (nullable). Leaves of lists
        # and structs count null elements or fields, not null rows: those columns are left to Spark.
        flat = [i for i in range(meta.num_columns)
                if meta.schema.column(i).max_repetition_level == 0 and meta.schema.column(i).max_definition_level <= 1]
        for group in range(meta.num_row_groups):
            for index in flat:
                chunk = meta.row_group(group).column(index)
                name, stats = meta.schema.column(index).path, chunk.statistics
                known = stats is not None and stats.has_null_count and nulls.get(name, 0) is not None
                nulls[name] = (nulls.get(name, 0) + stats.null_count) if known else None
    quarantined = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(quarantine_path).glob("*.parquet")) if quarantine_path else 0
    return {"shards": files, "rows": rows, "nulls": nulls, "quarantined": quarantined}


def schema_drift(old: list[list[str]], new: list[list[str]]) -> list[str]:
    before, after = dict(map(tuple, old)), dict(map(tuple, new))
    changes = [f"new column {c} ({t})" for c, t in after.items() if c not in before]
    changes += [f"column {c} removed" for c in before if c not in after]
    changes += [f"{c}: {before[c]} -> {t}" for c, t in after.items() if c in before and before[c] != t]
    return changes


def compare(previous: dict | None, current: dict) -> dict | None:
    """What changed against the previous version's manifest."""
    if not previous:
        return None
    old_balance, new_balance = previous.get("label_balance", {}), current.get("label_balance", {})
    return {
        "against": f"{previous['name']}@v{previous['version']}",
        "schema": schema_drift(previous["schema"], current["schema"]),
        "rows": current["counts"]["loaded"] - previous["counts"]["loaded"],
        "label_balance": {k: new_balance.get(k, 0) - old_balance.get(k, 0) for k in sorted(set(old_balance) | set(new_balance))
                          if new_balance.get(k, 0) != old_balance.get(k, 0)},
    }

"""`%%ingest` and `%datasets`."""
from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .help import accepts_help
from IPython.display import HTML


def _unquote(value: str | None) -> str | None:
    # IPython's argument splitter keeps the quotes around "a INT, b STRING".
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


@magics_class
class IngestMagics(Magics):
    @accepts_help
    @magic_arguments()
    @argument("name", help="Dataset name; each ingest publishes its next version NAME@vK.")
    @argument("source", nargs="*", help="Line form only: the source. In a %%ingest cell the body is the source: "
              "paths, globs or URLs (whitespace-separated), a Spark SQL query over datasets, or "
              "nbscale:digits / nbscale:digit-images / nbscale:fashion-mnist / nbscale:fashion-mnist-test.")
    @argument("--format", choices=["csv", "json", "parquet", "images", "idx", "sql"], help="Source format (default: from the file names).")
    @argument("--label", help="Label column: checked to exist; the card shows its balance.")
    @argument("--shards", type=int, help="Write N Parquet shards (row groups) so N workers read disjoint parts.")
    @argument("--batch-rows", type=int, default=10_000, help="Rows per batch for per-row work such as decoding (bounded memory).")
    @argument("--cache", default="none", choices=["none", "memory", "disk"], help="Persist the new version for fast multi-epoch re-reads.")
    @argument("--mode", default="permissive", choices=["permissive", "failfast"],
              help="permissive: malformed rows go to quarantine; failfast: stop at the first one.")
    @argument("--schema", help="Spark DDL schema instead of inferring one, e.g. 'id INT, name STRING'.")
    @argument("--no-header", action="store_true", help="CSV files have no header line.")
    @argument("--sep", default=",", help="CSV field separator.")
    @argument("--encoding", help="Text encoding of CSV/JSON files, e.g. latin-1 or cp1252 (default: UTF-8; bytes that are not "
              "UTF-8 stop the ingest and name the file).")
    @argument("--allow-schema-change", action="store_true", help="Publish even if the schema differs from the previous version.")
    @argument("-o", "--output", metavar="VAR", help="Bind the new dataset (.df, .path, .version, .to_pandas(n)) to VAR.")
    @line_cell_magic
    def ingest(self, line, cell=None):
        """Ingest a source into the next version of a Parquet dataset, validated, with Spark."""
        from ..ingest import ingest
        from ..session import active_spark
        from ..widgets.progress import ProgressBar

        args = parse_argstring(self.ingest, line)
        # A cell body may use {python_variables}, as line magics may (IPython expands only those).
        source = self.shell.var_expand(cell) if cell is not None else " ".join(args.source)
        bar = ProgressBar(f"ingest {args.name}")
        if active_spark() is None:  # the first Spark cell waits for the JVM before any job exists: say so
            bar.note("Starting Spark for this session (the first Spark cell takes a few seconds)...")
        try:
            result = ingest(args.name, source, format=args.format, label=args.label, shards=args.shards,
                            batch_rows=args.batch_rows, cache=args.cache, mode=args.mode, schema=_unquote(args.schema),
                            header=not args.no_header, sep=_unquote(args.sep), allow_schema_change=args.allow_schema_change,
                            encoding=args.encoding, progress=bar.update)
        finally:
            bar.done()
        if args.output:
            self.shell.user_ns[args.output] = result.dataset
        return result

    @accepts_help
    @magic_arguments()
    @argument("name", nargs="?", help="Only this dataset's versions.")
    @line_magic
    def datasets(self, line):
        """List datasets and their versions: rows, schema, source, creation time."""
        from ..ingest import datasets
        from ..ingest.card import datasets_card

        args = parse_argstring(self.datasets, line)
        rows = [r for r in datasets() if args.name is None or r["dataset"].split("@")[0] == args.name]
        return HTML(datasets_card(rows))

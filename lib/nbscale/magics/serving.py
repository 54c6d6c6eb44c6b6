"""`%serve`, `%predict`, `%%score`, `%drift` and `%promote`: registered models served over REST, scored in batch, watched, and promoted."""
from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .help import accepts_help


@magics_class
class ServingMagics(Magics):
    @accepts_help
    @magic_arguments()
    @argument("model", nargs="?", help="What to serve: NAME@ALIAS, NAME/VERSION or NAME (latest version).")
    @argument("--replicas", type=int, default=1, help="Server processes behind the service's one URL (balanced, health-checked).")
    @argument("--port", type=int, help="Port of the service's URL (default: a free one).")
    @argument("--canary", metavar="NAME@ALIAS", help="Serve MODEL as a canary beside this (running or started) service.")
    @argument("--weight", type=float, default=10.0, help="With --canary: the canary's share of requests, in percent.")
    @argument("--shard-by", metavar="COLUMN", help="Each replica is a shard: requests are routed by this column's value.")
    @argument("--stream", metavar="IN_DIR", help="Score JSON-lines files moved into IN_DIR as they arrive (Spark Structured Streaming).")
    @argument("--to", metavar="OUT_DIR", help="With --stream: folder of the scored Parquet output (exactly once, checkpointed).")
    @argument("--stop", action="store_true", help="Stop MODEL's service and streams (every one when MODEL is left out).")
    @line_magic
    def serve(self, line):
        """Serve a registered model over REST: %serve fashion-cnn@champion --replicas 2; without MODEL, list the services."""
        from .. import serving
        from ..errors import NbscaleError

        args = parse_argstring(self.serve, line)
        if args.stop:
            print(serving.stop(args.model))
            return None
        if not args.model:
            if not serving.services():
                print("Nothing is served: %serve NAME@ALIAS.")
            return serving.services() or None
        if args.stream or args.to:
            if not (args.stream and args.to):
                raise NbscaleError("Streaming needs both folders: %serve MODEL --stream IN_DIR --to OUT_DIR.")
            from ..serving.stream import stream

            return stream(args.model, args.stream, args.to)
        if args.canary is None and args.weight != 10.0:
            raise NbscaleError("--weight is the share of a canary: use it with --canary NAME@ALIAS.")
        from ..widgets.placeholder import Placeholder

        loading = Placeholder()  # replicas load a TensorFlow model: seconds to minutes
        try:
            return serving.serve(args.model, replicas=args.replicas, port=args.port, canary=args.canary, weight=args.weight,
                                 shard_by=args.shard_by, on_progress=lambda line: loading.show({"text/plain": line}))
        finally:
            loading.clear()

    @accepts_help
    @magic_arguments()
    @argument("model", nargs="?", help="A served model version: NAME@ALIAS, NAME/VERSION or NAME (latest version).")
    @argument("--against", metavar="DATA@vK", help="Reference dataset version (default: the one the model was trained on).")
    @argument("--data", metavar="DATA@vK", help="Without MODEL: the dataset version to compare against --against (batch drift).")
    @argument("--window", default="1h", help="Served traffic of the last 30m, 1h, 2d... (default 1h).")
    @argument("--psi", type=float, default=0.2, help="A feature drifted when its PSI is at least this (default 0.2)...")
    @argument("--alpha", type=float, default=0.01, help="...and its test's p-value is below this (default 0.01).")
    @line_magic
    def drift(self, line):
        """Drift of a served model's traffic against its training data, ranked per feature and logged to MLflow:
        %drift digits@champion --window 1h; between two dataset versions: %drift --data digits@v2 --against digits@v1"""
        from ..drift import drift

        args = parse_argstring(self.drift, line)
        return drift(args.model, data=args.data, against=args.against, window=args.window, psi_threshold=args.psi, alpha=args.alpha)

    @accepts_help
    @magic_arguments()
    @argument("model", help="Registered model NAME.")
    @argument("--from", dest="source", default="challenger", help="Alias of the candidate version (default challenger).")
    @argument("--to", dest="target", default="champion", help="Alias to move to it when it holds (default champion).")
    @argument("--canary", type=float, default=10.0, help="The candidate's share of the live requests, in percent (default 10).")
    @argument("--for", dest="run_for", nargs="+", default=["200", "requests"], metavar="N requests|TIME",
              help="How long the canary runs: a count of its requests (200 requests) or a time (10m, 90s).")
    @argument("--guard", choices=("errors", "latency", "accuracy"),
              help="Only this measure decides (default: errors and latency, and accuracy when requests carry the label column).")
    @argument("--timeout", type=float, default=600.0, help="Seconds to wait for the requests of --for N requests before rolling back.")
    @line_magic
    def promote(self, line):
        """A guarded canary that promotes or rolls back: %promote digits --from challenger --to champion --canary 10 --for 200 requests"""
        from IPython.display import HTML, display

        from ..promote import promote

        args = parse_argstring(self.promote, line)
        handle = display(HTML("<div>starting the canary...</div>"), display_id=True)
        return promote(args.model, source=args.source, target=args.target, canary=args.canary, run_for=" ".join(args.run_for),
                       guard=args.guard, timeout_s=args.timeout, on_progress=lambda p: handle.update(HTML(p._repr_html_())))

    @accepts_help
    @magic_arguments()
    @argument("model", help="A served model: NAME (or NAME@ALIAS) of a %%serve'd service.")
    @argument("data", nargs="+", help="A Python expression giving the rows, e.g. test_images[:8].")
    @line_magic
    def predict(self, line):
        """Send rows to a served model and show its predictions and latency: %predict fashion-cnn@champion x_test[:8]"""
        from .. import serving

        args = parse_argstring(self.predict, line)
        return serving.predict(args.model, self.shell.ev(" ".join(args.data)))

    @accepts_help
    @magic_arguments()
    @argument("model", help="Registered model to score with: NAME@ALIAS, NAME/VERSION or NAME.")
    @argument("--data", required=True, help="Dataset version to score: NAME, NAME@latest or NAME@vK.")
    @argument("--to", help="Dataset to publish the predictions to, as its next version (default: DATA_scored).")
    @argument("-o", "--output", metavar="VAR", help="Bind the published predictions dataset to VAR.")
    @line_cell_magic
    def score(self, line, cell=None):
        """Batch inference with Spark: %score fashion-cnn@champion --data fashion@v2 -o scored scores every row;
        as a cell magic, the cell body is a Spark SQL condition choosing the rows (e.g. label = 3)."""
        from ..serving.score import score
        from ..widgets.progress import ProgressBar

        args = parse_argstring(self.score, line)
        result = score(args.model, data=args.data, to=args.to, where=(cell or "").strip() or None,
                       progress=ProgressBar(f"score {args.model}").update)
        if args.output:
            self.shell.user_ns[args.output] = result
        rows = result.manifest["counts"]["loaded"]
        print(f"Scored {rows} rows of {result.manifest['source']} with {result.manifest['options']['model']}: published {result.ref}.")
        return None if args.output else result

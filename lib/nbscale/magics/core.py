"""`%nbscale`: the status card, `connect`, `start`, `stop`."""
from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring


@magics_class
class NbscaleMagics(Magics):
    def __init__(self, shell, settings):
        super().__init__(shell)
        self.settings = settings

    @magic_arguments()
    @argument(
        "action",
        nargs="?",
        default="status",
        choices=["status", "connect", "start", "stop"],
        help="status (default): show the status card; connect: change master / tracking URI; "
        "start: start Spark now and bind it to `spark`; stop: stop the Spark session.",
    )
    @argument("--master", help="Spark master URL, e.g. local[*], spark://127.0.0.1:7077, yarn, k8s://https://HOST:443.")
    @argument("--tracking-uri", help="MLflow tracking URI, e.g. http://127.0.0.1:5000 or sqlite:////path/mlflow.db.")
    @argument("--data-dir", help="Directory for datasets, the default MLflow store, checkpoints and job state.")
    @argument("--host", help="Address the driver and servers bind to (default 127.0.0.1).")
    @line_magic
    def nbscale(self, line):
        """Show where nbscale sends work, or point it somewhere else.

        %nbscale                                   status card (does not start Spark)
        %nbscale connect --master spark://127.0.0.1:7077 [--tracking-uri URI]
        %nbscale start                             start Spark now; binds `spark`
        %nbscale stop                              stop the Spark session
        """
        import nbscale

        args = parse_argstring(self.nbscale, line)
        if args.action == "connect":
            return nbscale.connect(master=args.master, tracking_uri=args.tracking_uri, data_dir=args.data_dir, host=args.host)
        if args.action == "start":
            self.shell.user_ns["spark"] = nbscale.spark()
            return nbscale.status()
        if args.action == "stop":
            from ..session import stop_spark

            print("Spark session stopped." if stop_spark() else "No Spark session was running.")
            return None
        return nbscale.status()

"""`%nbscale`: the status card, `connect`, `start`, `stop`."""
from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .help import accepts_help


@magics_class
class NbscaleMagics(Magics):
    def __init__(self, shell, settings):
        super().__init__(shell)
        self.settings = settings

    @accepts_help
    @magic_arguments()
    @argument(
        "action",
        nargs="?",
        default="status",
        choices=["status", "connect", "start", "stop", "cluster", "ui"],
        help="status (default): show the status card; connect: change master / tracking URI; "
        "start: start Spark now and bind it to `spark`; stop: stop the Spark session; "
        "cluster up|down|status: a Spark standalone cluster on 127.0.0.1; ui: the MLflow UI (started on 127.0.0.1 for a local store).",
    )
    @argument("cluster_action", nargs="?", choices=["up", "down", "status"], help="For cluster: up, down or status (default).")
    @argument("--workers", type=int, default=1, help="cluster up: number of Spark workers (default 1).")
    @argument("--cores", type=int, default=2, help="cluster up: task slots per worker (default 2).")
    @argument("--memory", default="2g", help="cluster up: memory per worker for executors (default 2g).")
    @argument("--port", type=int, default=7077, help="cluster up: master port (default 7077).")
    @argument("--connect", action="store_true", help="cluster up: also point this notebook's Spark session at the cluster.")
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
        %nbscale cluster up --workers 2            a Spark standalone master + workers on 127.0.0.1
        %nbscale cluster down | status
        %nbscale ui                                the MLflow UI: a tracking server's, or one started for the local store
        """
        from ..connection import connect
        from ..session import spark
        from ..statuscard import status

        args = parse_argstring(self.nbscale, line)
        if args.action == "connect":
            return connect(master=args.master, tracking_uri=args.tracking_uri, data_dir=args.data_dir, host=args.host)
        if args.action == "start":
            self.shell.user_ns["spark"] = spark()
            return status()
        if args.action == "cluster":
            from .. import cluster

            if args.cluster_action == "up":
                started = cluster.up(workers=args.workers, cores=args.cores, memory=args.memory, port=args.port)
                if args.connect:
                    connect(master=started.master_url)
                return started
            if args.cluster_action == "down":
                print("Cluster stopped." if cluster.down() else "No nbscale cluster was running.")
                return None
            return cluster.status()
        if args.action == "ui":
            from ..mlflowui import mlflow_ui

            return mlflow_ui()
        if args.action == "stop":
            from ..session import stop_spark

            print("Spark session stopped." if stop_spark() else "No Spark session was running.")
            return None
        return status()

"""`%%train`: the cell builds a compiled Keras model; nbscale feeds it a dataset version and logs the run."""
from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .help import accepts_help

from ..widgets.placeholder import Placeholder


class _LiveCard(Placeholder):
    """The training card, redrawn in place after every epoch."""

    def update(self, progress) -> None:
        self.show({"text/html": progress.html, "text/plain": progress.line()})


def _trainer(options: dict):
    """One function per kind of run: in this kernel, or on the cluster's workers."""
    if "workers" in options:
        from ..distributed import train_distributed

        return train_distributed
    from ..train import train

    return train


@magics_class
class TrainMagics(Magics):
    @accepts_help
    @magic_arguments()
    @argument("--data", required=True, help="Dataset version to train on: NAME, NAME@latest or NAME@vK.")
    @argument("--label", help="Label column (default: the one given at %%ingest --label, else 'label').")
    @argument("--epochs", type=int, default=5)
    @argument("--batch-size", type=int, default=128)
    @argument("--validation", type=float, default=0.2, help="Fraction held out for validation, split reproducibly by --seed.")
    @argument("--seed", type=int, default=42)
    @argument("--scale", type=float, default=1.0, help="Divide features by this (e.g. 255 for 8-bit images).")
    @argument("--experiment", default="nbscale", help="MLflow experiment of the run.")
    @argument("--resume", action="store_true", help="Continue from the last completed epoch of an interrupted run of this cell.")
    @argument("--precision", default="auto", choices=["auto", "mixed", "float32"],
              help="auto: mixed float16 on a GPU with tensor cores, float32 elsewhere; mixed or float32 to choose.")
    @argument("--workers", type=int, default=0, help="Train on N workers of the Spark cluster (0: here, in the kernel).")
    @argument("--strategy", default="multiworker", choices=["multiworker", "parameter-server"],
              help="With --workers: all-reduce (MultiWorkerMirroredStrategy) or parameter servers (ParameterServerStrategy).")
    @argument("--ps", type=int, default=1, help="Parameter servers for --strategy parameter-server (a chief task is added too).")
    @argument("--gpus-per-worker", type=int, default=0, help="With --workers: GPUs Spark gives each worker task (stage-level scheduling).")
    @argument("--min-workers", type=int, help="Elastic: if the cluster loses capacity, go on with as few as this many workers "
                                                "(default: --workers, i.e. not elastic).")
    @argument("--pool", help="Spark fair-scheduler pool for the workers, so interactive cells are not starved.")
    @argument("--background", action="store_true", help="Train on a thread of this kernel and return at once; watch it with %%jobs.")
    @argument("-o", "--output", metavar="VAR", help="Bind the result (.model, .history, .run_id, .metrics) to VAR.")
    @line_cell_magic
    def train(self, line, cell=None):
        """Train the cell's compiled `model` (or `build_model()`) on a dataset version, fed by Petastorm.

        In the cell, `keras` is the Keras nbscale trains with (tf-keras); the notebook's variables are visible;
        `callbacks = [...]` and `fit_kwargs = {...}` (class_weight, validation_freq) are passed to fit().
        As a line magic (%train --data NAME) or with a cell of comments only, it trains nbscale's default model
        for the data, shown on the card to copy and edit. After training, `model` in the notebook is the trained model."""
        args = parse_argstring(self.train, line)
        cell = cell or ""
        self.last_cell = cell
        options = dict(data=args.data, label=args.label, epochs=args.epochs, batch_size=args.batch_size, validation=args.validation,
                       seed=args.seed, scale=args.scale, experiment=args.experiment, resume=args.resume,
                       precision=args.precision, namespace=dict(self.shell.user_ns))
        if args.workers:
            options.update(workers=args.workers, strategy=args.strategy, parameter_servers=args.ps, pool=args.pool,
                           gpus_per_worker=args.gpus_per_worker, min_workers=args.min_workers)
        if args.background:
            from IPython.display import display

            from ..widgets.jobcard import JobCard

            live = JobCard(f"%%train {args.data}")
            display(live)
            job = self._in_background(cell, options, live, args.output)
            print(f"Training in the background as job {job.id}: %jobs shows it, %jobs cancel {job.id} stops it"
                  + (f"; {args.output} is bound when it ends." if args.output else "."))
            return None
        live = _LiveCard()
        try:
            steps = {} if "workers" in options else {"on_step": live.update}  # a distributed card has per-worker steps
            result = _trainer(options)(cell, on_epoch=live.update, **steps, **options)
        finally:
            live.clear()
        self._bind(result, args.output)
        return result

    def _bind(self, result, output: str | None) -> None:
        self.shell.user_ns["model"] = result.model
        if output:
            self.shell.user_ns[output] = result

    def _in_background(self, cell, options, live, output):
        from ..jobs import registry

        def work(job):
            def on_epoch(progress):
                job.progress, job.epochs_done = progress.line(), progress.epoch
                live.update(progress)

            extra = {"on_start": lambda run: setattr(job, "handle", run)} if "workers" in options else {"on_step": live.update}
            try:
                result = _trainer(options)(cell, on_epoch=on_epoch, stop=job.stop, **options, **extra)
            except BaseException as exc:
                if hasattr(live, "ended"):
                    live.ended("cancelled" if job.stop.is_set() else "failed", str(exc))
                raise
            live.show(result)  # the finished card replaces the live one
            self._bind(result, output)
            return result

        where = f" --workers {options['workers']}" if "workers" in options else ""
        job = registry.start("train", f"%%train {options['data']}{where}", work)
        job.view = live
        if hasattr(live, "attach"):
            live.attach(job, distributed="workers" in options)
        return job

    @accepts_help
    @magic_arguments()
    @argument("--data", help="Dataset to preselect (default: the first one).")
    @argument("--workers", type=int, default=2, help="Workers to preselect (default 2).")
    @line_magic
    def launch(self, line):
        """A form to launch a distributed training: dataset, model cell, workers, strategy, epochs, GPUs per
        worker. It shows the equivalent %%train cell and runs the job in the background (see %jobs)."""
        from ..ingest import datasets
        from ..widgets.launcher import TEMPLATE, LaunchForm

        args = parse_argstring(self.launch, line)
        names = sorted({row["dataset"].split("@")[0] for row in datasets()})

        def on_launch(options, code, form):
            if not options.data:
                from ..errors import NbscaleError

                raise NbscaleError("No dataset to train on: ingest one first (%%ingest NAME).")
            kwargs = dict(options.train_kwargs(), namespace=dict(self.shell.user_ns))
            job = self._in_background(code, kwargs, form, None)
            return f"Launched as job {job.id}: %jobs shows it, %jobs cancel {job.id} stops it."

        form = LaunchForm(names, getattr(self, "last_cell", None) or TEMPLATE, on_launch)
        if args.data:
            if args.data not in names:
                from ..errors import NbscaleError

                raise NbscaleError(f"No dataset {args.data!r} (datasets: {', '.join(names) or 'none'}): ingest it first with %%ingest {args.data}.")
            form.data.value = args.data
        form.workers.value = args.workers
        return form

"""`%%train`: the cell builds a compiled Keras model; nbscale feeds it a dataset version and logs the run."""
from __future__ import annotations

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..train.options import ClusterOptions, TrainOptions, from_args, option_arguments
from ..widgets.placeholder import Placeholder
from .help import accepts_help


class _LiveCard(Placeholder):
    """The training card, redrawn in place after every epoch."""

    def update(self, progress) -> None:
        self.show({"text/html": progress.html, "text/plain": progress.line()})


def _trainer(run: dict):
    """One function per kind of run: in this kernel, or on the cluster's workers (`run` has their options)."""
    if "cluster" in run:
        from ..distributed import train_distributed

        return train_distributed
    from ..train import train

    return train


@magics_class
class TrainMagics(Magics):
    @accepts_help
    @magic_arguments()
    @option_arguments(TrainOptions, ClusterOptions)
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
        options, cluster = from_args(TrainOptions, args), from_args(ClusterOptions, args)
        run = dict(options=options, namespace=dict(self.shell.user_ns), **({"cluster": cluster} if cluster.workers else {}))
        if args.background:
            from IPython.display import display

            from ..widgets.jobcard import JobCard

            live = JobCard(f"%%train {options.data}")
            display(live)
            job = self._in_background(cell, run, live, args.output)
            print(f"Training in the background as job {job.id}: %jobs shows it, %jobs cancel {job.id} stops it"
                  + (f"; {args.output} is bound when it ends." if args.output else "."))
            return None
        live = _LiveCard()
        try:
            steps = {} if "cluster" in run else {"on_step": live.update}  # a distributed card has per-worker steps
            result = _trainer(run)(cell, on_epoch=live.update, **steps, **run)
        finally:
            live.clear()
        self._bind(result, args.output)
        return result

    def _bind(self, result, output: str | None) -> None:
        self.shell.user_ns["model"] = result.model
        if output:
            self.shell.user_ns[output] = result

    def _in_background(self, cell, run: dict, live, output):
        from ..jobs import background

        def work(job):
            def on_epoch(progress):
                job.progress, job.epochs_done = progress.line(), progress.epoch
                live.update(progress)

            extra = {"on_start": lambda handle: setattr(job, "handle", handle)} if "cluster" in run else {"on_step": live.update}
            try:
                result = _trainer(run)(cell, on_epoch=on_epoch, stop=job.stop, **run, **extra)
            except BaseException as exc:
                if hasattr(live, "ended"):
                    live.ended("cancelled" if job.stop.is_set() else "failed", str(exc))
                raise
            live.show(result)  # the finished card replaces the live one
            self._bind(result, output)
            return result

        where = f" --workers {run['cluster'].workers}" if "cluster" in run else ""
        job = background.start("train", f"%%train {run['options'].data}{where}", work)
        job.view = live
        if hasattr(live, "attach"):
            live.attach(job, distributed="cluster" in run)
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

        def on_launch(request, code, form):
            if not request.options.data:
                from ..errors import NbscaleError

                raise NbscaleError("No dataset to train on: ingest one first (%%ingest NAME).")
            run = dict(options=request.options, cluster=request.cluster, namespace=dict(self.shell.user_ns))
            job = self._in_background(code, run, form, None)
            return f"Launched as job {job.id}: %jobs shows it, %jobs cancel {job.id} stops it."

        form = LaunchForm(names, getattr(self, "last_cell", None) or TEMPLATE, on_launch)
        if args.data:
            if args.data not in names:
                from ..errors import NbscaleError

                raise NbscaleError(f"No dataset {args.data!r} (datasets: {', '.join(names) or 'none'}): ingest it first with %%ingest {args.data}.")
            form.data.value = args.data
        form.workers.value = args.workers
        return form

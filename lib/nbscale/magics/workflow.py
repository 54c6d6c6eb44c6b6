"""`%%step` and `%pipeline`: a workflow of cells with dependencies and memoization."""
from __future__ import annotations

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from ..train.options import TrainOptions, from_args, option_arguments
from ..workflow.tune import TUNE_DEFAULTS, TUNED_OPTIONS
from .help import accepts_help


@magics_class
class WorkflowMagics(Magics):
    def _runner(self):
        shell = self.shell

        def run(code: str, namespace: dict) -> None:
            # IPython syntax (%ingest ..., a leading %%train) becomes Python the way a cell's would.
            exec(compile(shell.transform_cell(code), "<%%step>", "exec"), namespace)  # noqa: S102 - the user's cell

        return run

    @accepts_help
    @magic_arguments()
    @argument("name", help="The step's name, e.g. train_cnn.")
    @argument("--after", default="", help="Comma-separated upstream steps this one waits for (fan-in).")
    @argument("--memo", action="store_true", help="Skip the step when its code, upstream steps and dataset versions are unchanged.")
    @argument("--sync", action="store_true", help="In %%pipeline run: run alone, not beside other steps (default: async, concurrent).")
    @argument("--define-only", action="store_true", help="Define the step without running it (%%pipeline run runs it).")
    @cell_magic
    def step(self, line, cell):
        """A workflow step: the cell runs now (or its memo restores its variables) and joins the DAG %pipeline runs."""
        from .. import workflow

        args = parse_argstring(self.step, line)
        step = workflow.define(args.name, cell, [a.strip() for a in args.after.split(",")], memo=args.memo, sync=args.sync)
        if not args.define_only:
            workflow.run_step(step.name, self.shell.user_ns, self._runner())
        print(step.line())

    @accepts_help
    @magic_arguments()
    @argument("action", nargs="?", default="show", choices=["show", "run", "reset"])
    @argument("--forget-memo", action="store_true", help="With reset: also delete the steps' memo records.")
    @line_magic
    def pipeline(self, line):
        """%pipeline show: the DAG and each step's state; %pipeline run: run it (independent steps at once); %pipeline reset."""
        from .. import workflow
        from ..workflow.view import PipelineView

        args = parse_argstring(self.pipeline, line)
        if args.action == "run":
            from ..widgets.placeholder import Placeholder

            live = Placeholder()  # the DAG, its steps' states updating while they run
            try:
                return workflow.run(self.shell.user_ns, self._runner(), on_change=live.show)
            finally:
                live.clear()
        if args.action == "reset":
            print(workflow.reset(args.forget_memo))
            return None
        return PipelineView(workflow.steps())

    @accepts_help
    @magic_arguments()
    @argument("--trials", type=int, default=6)
    @argument("--parallel", type=int, default=2, help="Trials trained at once, as tasks of one Spark job.")
    @argument("--metric", default="val_accuracy", help="What the search optimises (a metric every trial logs).")
    @argument("--lowest", dest="lowest", action="store_const", const=True, default=None,
              help="Lower is better (default: from the metric's name — loss, error, mae, mse... lower; accuracy, auc... higher).")
    @argument("--highest", dest="lowest", action="store_const", const=False, help="Higher is better.")
    @option_arguments(TrainOptions, only=TUNED_OPTIONS, defaults=TUNE_DEFAULTS)
    @argument("--register", metavar="NAME", help="Register the best trial's model under NAME.")
    @argument("--alias", help="With --register: point this alias at it.")
    @argument("-o", "--output", metavar="VAR", help="Bind the search result (.best, .trials) to VAR.")
    @cell_magic
    def tune(self, line, cell):
        """Hyperparameter search on Spark: the cell defines build_model(hp) asking hp.suggest_int/float/categorical."""
        from ..widgets.placeholder import Placeholder
        from ..workflow.tune import tune

        args = parse_argstring(self.tune, line)
        live = Placeholder()
        try:
            result = tune(cell, options=from_args(TrainOptions, args, TrainOptions(**TUNE_DEFAULTS)), trials=args.trials,
                          parallel=args.parallel, metric=args.metric, lowest=args.lowest, register=args.register, alias=args.alias,
                          namespace=dict(self.shell.user_ns),
                          on_round=lambda r: live.show({"text/html": r._repr_html_(), "text/plain": repr(r)}))
        finally:
            live.clear()
        if args.output:
            self.shell.user_ns[args.output] = result
        return result

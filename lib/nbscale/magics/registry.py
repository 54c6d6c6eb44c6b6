"""`%register`, `%models` and `%lineage`: the MLflow model registry from the notebook."""
from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from .help import accepts_help


@magics_class
class RegistryMagics(Magics):
    @accepts_help
    @magic_arguments()
    @argument("--name", required=True, help="Registered model name, e.g. fashion-cnn.")
    @argument("--run", help="Register this run's model (the id on a training card).")
    @argument("--best", metavar="METRIC", help="Register the best finished run of --experiment by this metric (model selection).")
    @argument("--experiment", default="nbscale", help="Experiment to select from with --best.")
    @argument("--lowest", dest="lowest", action="store_const", const=True, default=None,
              help="With --best: lower is better (default: from the metric's name — loss, error, mae, mse... lower; accuracy, auc... higher).")
    @argument("--highest", dest="lowest", action="store_const", const=False, help="With --best: higher is better.")
    @argument("--alias", help="Point this alias (e.g. champion, challenger) at the new version.")
    @argument("--no-evaluate", dest="evaluate", action="store_false",
              help="Skip evaluating the new version on its held-out split beside the current champion.")
    @line_magic
    def register(self, line):
        """Register a trained model: %register --best val_accuracy --experiment fashion --name fashion-cnn --alias champion"""
        from ..registry import register

        args = parse_argstring(self.register, line)
        return register(args.name, run_id=args.run, best=args.best, experiment=args.experiment, alias=args.alias, lowest=args.lowest,
                        evaluate=args.evaluate)

    @accepts_help
    @magic_arguments()
    @argument("name", nargs="?", help="Only this registered model.")
    @argument("--alias", help="Move this alias of NAME to --version (a rollback moves it back).")
    @argument("--version", type=int, help="Version the alias points to.")
    @line_magic
    def models(self, line):
        """Registered models, versions, aliases, metrics and dataset lineage; %models NAME --alias champion --version 1 moves an alias."""
        from ..errors import NbscaleError
        from ..registry import models, set_alias

        args = parse_argstring(self.models, line)
        if args.alias or args.version is not None:
            if not (args.name and args.alias and args.version is not None):
                raise NbscaleError("Moving an alias needs all three: %models NAME --alias ALIAS --version N.")
            return set_alias(args.name, args.alias, args.version)
        return models(args.name)

    @accepts_help
    @magic_arguments()
    @argument("ref", help="A model version (NAME@ALIAS, NAME/3, NAME) or a dataset version (NAME@v2, NAME@latest).")
    @line_magic
    def lineage(self, line):
        """Dataset version -> training run -> model version -> service: %lineage fashion-cnn@champion, %lineage fashion@v2"""
        from ..lineage import lineage

        return lineage(parse_argstring(self.lineage, line).ref)

"""`%%train`: the cell builds a compiled Keras model; nbscale feeds it a dataset version and logs the run."""
from __future__ import annotations

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display


class _LiveCard:
    """The training card, redrawn in place after every epoch and removed when the result card shows."""

    def __init__(self):
        self.handle = display({"text/plain": ""}, raw=True, display_id=True)

    def update(self, html: str) -> None:
        self.handle.update({"text/html": html, "text/plain": "training…"}, raw=True)

    def clear(self) -> None:
        self.handle.update({"text/plain": ""}, raw=True)


@magics_class
class TrainMagics(Magics):
    @magic_arguments()
    @argument("--data", required=True, help="Dataset version to train on: NAME, NAME@latest or NAME@vK.")
    @argument("--label", default="label", help="Label column (default: label).")
    @argument("--epochs", type=int, default=5)
    @argument("--batch-size", type=int, default=128)
    @argument("--validation", type=float, default=0.2, help="Fraction held out for validation, split reproducibly by --seed.")
    @argument("--seed", type=int, default=42)
    @argument("--scale", type=float, default=1.0, help="Divide features by this (e.g. 255 for 8-bit images).")
    @argument("--experiment", default="nbscale", help="MLflow experiment of the run.")
    @argument("--resume", action="store_true", help="Continue from the last completed epoch of an interrupted run of this cell.")
    @argument("-o", "--output", metavar="VAR", help="Bind the result (.model, .history, .run_id, .metrics) to VAR.")
    @cell_magic
    def train(self, line, cell):
        """Train the cell's compiled `model` (or `build_model()`) on a dataset version, fed by Petastorm.

        In the cell, `keras` is the Keras nbscale trains with (tf-keras); the notebook's variables are visible.
        After training, `model` in the notebook is the trained model."""
        from ..train import train

        args = parse_argstring(self.train, line)
        live = _LiveCard()
        try:
            result = train(cell, data=args.data, label=args.label, epochs=args.epochs, batch_size=args.batch_size,
                           validation=args.validation, seed=args.seed, scale=args.scale, experiment=args.experiment,
                           resume=args.resume, namespace=self.shell.user_ns, on_epoch=live.update)
        finally:
            live.clear()
        self.shell.user_ns["model"] = result.model
        if args.output:
            self.shell.user_ns[args.output] = result
        return result

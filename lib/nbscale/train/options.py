"""The options of a training, declared once. The `%%train` flags (and `%%tune`'s share of them), the launcher
form's equivalent `%%train` line and the keyword arguments of `train`, `train_distributed` and `tune` all come
from these two dataclasses: a new option is one field here, with its default and its help."""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace


def option(default, help: str, *, kind: type | None = None, choices: tuple[str, ...] = (), flag: str | None = None):
    """A field with what its command-line flag needs: help, type (from the default unless that is None),
    choices, and a spelling other than --field-name where one is older (--ps)."""
    return field(default=default, metadata={"help": help, "kind": kind or type(default), "choices": choices, "flag": flag})


@dataclass(frozen=True)
class TrainOptions:
    """What to train on and how: the same for a training in the kernel and on the cluster's workers."""

    data: str = option("", "Dataset version to train on: NAME, NAME@latest or NAME@vK.")
    label: str | None = option(None, "Label column (default: the one given at %%ingest --label, else 'label').", kind=str)
    epochs: int = option(5, "Passes over the training split.")
    batch_size: int = option(128, "Rows per step (with --workers: the global batch, split over the workers).")
    validation: float = option(0.2, "Fraction held out for validation, split reproducibly by --seed.")
    seed: int = option(42, "Seeds the split, the initial weights and (in %%tune) the sampler.")
    scale: float = option(1.0, "Divide features by this (e.g. 255 for 8-bit images).")
    experiment: str = option("nbscale", "MLflow experiment of the run.")
    resume: bool = option(False, "Continue from the last completed epoch of an interrupted run of this cell.")
    precision: str = option("auto", "auto: mixed float16 on a GPU with tensor cores, float32 elsewhere; mixed or float32 to choose.",
                            choices=("auto", "mixed", "float32"))


@dataclass(frozen=True)
class ClusterOptions:
    """Where a distributed training runs: how many workers of the Spark cluster, and how they share the work."""

    workers: int = option(0, "Train on N workers of the Spark cluster (0: here, in the kernel).")
    strategy: str = option("multiworker", "With --workers: all-reduce (MultiWorkerMirroredStrategy) or parameter servers "
                           "(ParameterServerStrategy).", choices=("multiworker", "parameter-server"))
    parameter_servers: int = option(1, "Parameter servers for --strategy parameter-server (a chief task is added too).", flag="--ps")
    gpus_per_worker: int = option(0, "With --workers: GPUs Spark gives each worker task (stage-level scheduling).")
    min_workers: int | None = option(None, "Elastic: if the cluster loses capacity, go on with as few as this many workers "
                                           "(default: --workers, i.e. not elastic).", kind=int)
    pool: str | None = option(None, "Spark fair-scheduler pool for the workers, so interactive cells are not starved.", kind=str)


def flag_of(item) -> str:
    return item.metadata["flag"] or "--" + item.name.replace("_", "-")


def option_arguments(*groups: type, only: tuple[str, ...] | None = None, defaults: dict | None = None, required: tuple[str, ...] = ("data",)):
    """IPython `magic_arguments` flags for the fields of `groups` (an argument group, as ipyparallel's
    `exec_args`): place it under `@magic_arguments()`. `only` picks fields; `defaults` are a command's own
    (%%tune trains shorter), shown in its help."""
    from IPython.core.magic_arguments import argument

    chosen = [item for group in groups for item in fields(group) if only is None or item.name in only]

    def decorate(func):
        for item in reversed(chosen):  # decorators apply bottom-up; reversed keeps the declared order in the help
            default = (defaults or {}).get(item.name, item.default)
            meta = item.metadata
            if meta["kind"] is bool:
                spec = dict(action="store_true")
            else:
                spec = dict(type=meta["kind"], default=default, **({"choices": list(meta["choices"])} if meta["choices"] else {}))
            if item.name in required:
                spec = {key: value for key, value in spec.items() if key != "default"} | {"required": True}
            func = argument(flag_of(item), dest=item.name, help=meta["help"], **spec)(func)
        return func

    return decorate


def from_args(group: type, args, base=None):
    """The `group` options a magic's parsed arguments hold (fields it has no flag for keep `base`'s values)."""
    values = {item.name: getattr(args, item.name) for item in fields(group) if hasattr(args, item.name)}
    return replace(base or group(), **values)


def split_settings(caller: str, given: dict, *groups: type) -> list[dict]:
    """Keyword arguments of a library call, sorted into `groups`; a name no group has is refused as Python would."""
    names = [{item.name for item in fields(group)} for group in groups]
    unknown = sorted(set(given) - set().union(*names))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    return [{key: value for key, value in given.items() if key in known} for known in names]


def train_line(options: TrainOptions, cluster: ClusterOptions, *, background: bool = False) -> str:
    """The `%%train` line that runs the same training: the dataset and workers first, then every option that
    differs from its default (--ps only where parameter servers are used)."""
    parts = [f"%%train --data {options.data}"] + ([f"--workers {cluster.workers}"] if cluster.workers else [])
    shown = [(cluster, item) for item in fields(ClusterOptions) if item.name != "workers" and cluster.workers] + \
            [(options, item) for item in fields(TrainOptions) if item.name != "data"]
    for holder, item in shown:
        value = getattr(holder, item.name)
        if value == item.default or value in ("", None) or (item.name == "parameter_servers" and cluster.strategy != "parameter-server"):
            continue
        if value is True:
            parts.append(flag_of(item))
        else:
            parts.append(f"{flag_of(item)} {value:g}" if isinstance(value, float) else f"{flag_of(item)} {value}")
    return " ".join(parts + (["--background"] if background else []))

"""`%%tune`: a hyperparameter search whose trials are Spark tasks.

The cell defines `build_model(hp)`, asking `hp` for values the way Optuna's trials do
(`hp.suggest_int("units", 8, 64, log=True)`). The driver owns the Optuna study (TPE sampler, seeded) and
works in rounds of `parallel` trials with ask/tell: it asks, runs `build_model` on each trial to sample
its values (and to check the model builds), then one Spark job trains the round — each task replays
its trial's values with `optuna.trial.FixedTrial` and trains through `nbscale.train.train`, so every
trial is an ordinary nbscale run (Petastorm feed, checked epochs, its model logged), a child run of the
search's parent run. The driver tells the study each result and redraws the trials table."""
from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import NbscaleError, first_useful_line
from ..limits import cap
from ..train.options import TrainOptions, split_settings


@dataclass
class Trial:
    number: int
    params: dict
    state: str = "waiting"  # waiting, running, done, failed
    value: float | None = None
    run_id: str = ""
    error: str = ""


@dataclass
class TuneResult:
    metric: str
    lowest: bool
    trials: list[Trial]
    parent_run_id: str
    note: str = ""
    seconds: float = 0.0
    registered: str = ""
    figures: dict = field(default_factory=dict)  # name -> PNG bytes: Optuna's optimisation history, parameter importances

    @property
    def best(self) -> Trial | None:
        done = [t for t in self.trials if t.state == "done" and t.value is not None]
        return (min if self.lowest else max)(done, key=lambda t: t.value) if done else None

    def _repr_html_(self) -> str:
        best = self.best
        keys = sorted({k for t in self.trials for k in t.params})
        head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>" for h in ["trial", *keys, self.metric, "state", "run"])
        rows = []
        for t in self.trials:
            mark = " style='background:#e8f5e9;font-weight:bold'" if best is t else ""
            cells = [str(t.number), *[_fmt(t.params.get(k)) for k in keys], _fmt(t.value), t.state + (f": {t.error}" if t.error else ""),
                     t.run_id[:8]]
            rows.append(f"<tr{mark}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        summary = f"best {self.metric} {best.value:.4f} (trial {best.number})" if best else "no finished trial yet"
        extra = f" · {html.escape(self.registered)}" if self.registered else ""
        pictures = "".join(f"<img alt='{html.escape(name)}' title='{html.escape(name)}' style='max-width:420px;margin-right:8px' "
                           f"src='data:image/png;base64,{base64.b64encode(png).decode()}'/>" for name, png in self.figures.items())
        return (f"<div class='nbscale-tune' style='border:1px solid var(--jp-border-color2, #ccc);border-radius:6px;padding:6px 10px'>"
                f"<b>%%tune</b> — {summary}{extra}<br><span style='font-size:11px'>{html.escape(self.note)}</span>"
                f"<table><tr>{head}</tr>{''.join(rows)}</table>{f'<div>{pictures}</div>' if pictures else ''}</div>")

    def __repr__(self) -> str:
        best = self.best
        lines = [f"trial {t.number} {t.params} -> {_fmt(t.value)} [{t.state}{': ' + t.error if t.error else ''}]" for t in self.trials]
        lines.append(f"best: trial {best.number}, {self.metric} {best.value:.4f}" if best else "best: none")
        return "\n".join(lines + ([self.registered] if self.registered else []))


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _build(code: str, namespace: dict, hp, seed: int):
    """The cell's `build_model(hp)`, checked like %%train's model; the same seed gives the same initial weights."""
    from ..train import keras
    from ..train.cell import check_model

    keras().utils.set_random_seed(seed)
    scope = {**(namespace or {}), "keras": keras()}
    exec(compile(code, "<%%tune cell>", "exec"), scope)  # noqa: S102 - the user's own cell
    if not callable(scope.get("build_model")):
        raise NbscaleError("The %%tune cell must define build_model(hp): ask hp for values, e.g. units = hp.suggest_int('units', 8, 64).")
    return check_model(scope["build_model"](hp))


def _run_trial(payload: dict) -> dict:
    """One trial, in a Spark task: replay its values, train as an ordinary child run."""
    from ..tfenv import set_tensorflow_defaults

    set_tensorflow_defaults()
    import cloudpickle
    import optuna

    from ..config import settings
    from ..train import train

    cfg = settings()
    cfg.data_dir, cfg.tracking_uri = payload["data_dir"], payload["tracking_uri"]
    try:
        namespace = cloudpickle.loads(payload["namespace"])
        model = _build(payload["code"], namespace, optuna.trial.FixedTrial(payload["params"]), payload["options"].seed)
        result = train(None, model=model, options=payload["options"], parent_run_id=payload["parent"],
                       run_name=f"trial {payload['number']}")
        value = result.metrics.get(payload["metric"])
        if value is None:
            return {"number": payload["number"], "error": f"no metric {payload['metric']!r} (it logged {', '.join(result.metrics)})",
                    "run_id": result.run_id}
        return {"number": payload["number"], "value": float(value), "run_id": result.run_id}
    except Exception as exc:  # noqa: BLE001 - a failed trial is a result, not the end of the search
        return {"number": payload["number"], "error": first_useful_line(str(exc) or type(exc).__name__, 200)}


def _run_round(payloads: list[dict], group: str) -> list[dict]:
    """One Spark job, a task per trial (`mapInPandas` over a range: the same plan on a classic master and over
    Spark Connect); an interrupt cancels it by job group or Connect tag. The answers of every trial."""
    import cloudpickle

    from ..jobs.work import spark_work
    from ..session import spark

    blob = cloudpickle.dumps(payloads)

    def round_task(batches):  # on an executor: the trial whose number is this partition's
        import cloudpickle as pickler
        import pandas as pd
        from pyspark import TaskContext

        for _ in batches:
            pass
        payload = pickler.loads(blob)[TaskContext.get().partitionId()]
        yield pd.DataFrame({"answer": [pickler.dumps(_run_trial(payload))]})

    session = spark()
    with spark_work(session, group, f"%%tune trials {payloads[0]['number']}-{payloads[-1]['number']}"):
        rows = session.range(0, len(payloads), 1, len(payloads)).mapInPandas(round_task, "answer binary").collect()
    return [cloudpickle.loads(row["answer"]) for row in rows]


# The training options a %%tune cell takes, and its own defaults (trials train shorter than a %%train).
TUNED_OPTIONS = ("data", "label", "epochs", "batch_size", "validation", "seed", "scale", "experiment")
TUNE_DEFAULTS = {"epochs": 3, "batch_size": 64, "experiment": "nbscale-tune"}


def tune(code: str, *, trials: int = 6, parallel: int = 2, metric: str = "val_accuracy", lowest: bool | None = None,
         register: str | None = None, alias: str | None = None, namespace: dict | None = None,
         on_round: Callable[[TuneResult], None] | None = None, options: TrainOptions | None = None, **given) -> TuneResult:
    """Search `trials` hyperparameter sets of the cell's build_model(hp), `parallel` at a time as Spark tasks.
    Each trial trains with `options` (a `TrainOptions`, or its fields as keywords: data, label, epochs, batch_size,
    validation, seed, scale, experiment; by default 3 epochs of batch 64 into the experiment nbscale-tune)."""
    import logging

    import optuna

    from .. import feed
    from ..config import settings
    from ..datahost import require_shared_tracking, require_writable
    from ..distributed.shipping import capture
    from ..ingest import dataset
    from ..session import experiment_id, mlflow

    from ..registry import direction

    (changes,) = split_settings("tune", given, TrainOptions)
    opts = replace(options or TrainOptions(**TUNE_DEFAULTS), **changes)
    if set(changes) - set(TUNED_OPTIONS) or opts.resume:
        raise NbscaleError(f"%%tune trains each trial afresh with {', '.join(TUNED_OPTIONS)}: "
                           f"{', '.join(sorted(set(changes) - set(TUNED_OPTIONS)) or ['resume'])} is for %%train.")
    if not opts.data:
        raise NbscaleError("Say which dataset version the trials train on: --data NAME (see %datasets).")
    data, label, batch_size, validation, seed, scale = opts.data, opts.label, opts.batch_size, opts.validation, opts.seed, opts.scale
    experiment = opts.experiment
    require_shared_tracking("%%tune", "each trial logs its own run and model from the executor that trains it")
    if trials < 1 or parallel < 1 or batch_size < 1:
        raise NbscaleError(f"--trials {trials}, --parallel {parallel} and --batch-size {batch_size} must each be 1 or more.")
    lowest, rule = direction(metric, lowest)
    require_writable(f"Tuning on {data}")
    parallel = cap("parallel", parallel)
    version = dataset(data)
    spec = feed.spec_for(version, label, batch_size, scale, seed)
    feed.split(version, spec, validation, pull=False)  # written once here (where the data dir is), so the tasks only read it
    shipped = capture(code, namespace)
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="minimize" if lowest else "maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    mlf = mlflow()
    parent = mlf.MlflowClient().create_run(experiment_id(experiment), run_name=f"%%tune {version.ref}",
                                           tags={"nbscale.search": "optuna-tpe"}).info.run_id
    result = TuneResult(metric, lowest, [], parent, note=f"Optuna TPE (seed {seed}) · {parallel} trials at a time as Spark tasks · {version.ref} · {metric}: {rule}")
    started = time.time()
    try:
        while len(result.trials) < trials:
            asked = [study.ask() for _ in range(min(parallel, trials - len(result.trials)))]
            for trial in asked:
                _build(code, namespace, trial, seed)  # samples its values here; a broken cell fails before any task starts
                result.trials.append(Trial(trial.number, dict(trial.params), "running"))
            payloads = [{"number": t.number, "params": t.params, "code": code, "namespace": shipped, "options": replace(opts, data=version.ref),
                         "parent": parent, "metric": metric, "data_dir": settings().data_dir, "tracking_uri": settings().tracking_uri}
                        for t in asked]
            if on_round:
                on_round(result)
            answers = {a["number"]: a for a in _run_round(payloads, f"nbscale-tune-{parent[:8]}")}
            by_number = {t.number: t for t in result.trials}
            for trial in asked:
                answer = answers[trial.number]
                entry = by_number[trial.number]
                entry.run_id = answer.get("run_id", "")
                if "value" in answer:
                    entry.state, entry.value = "done", answer["value"]
                    study.tell(trial, answer["value"])
                else:
                    entry.state, entry.error = "failed", answer["error"]
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if on_round:
                on_round(result)
    except BaseException as exc:
        mlf.MlflowClient().set_terminated(parent, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    result.seconds = time.time() - started
    client = mlf.MlflowClient()
    best = result.best
    if best:
        for key, value in best.params.items():
            client.log_param(parent, f"best_{key}", value)
        client.log_metric(parent, f"best_{metric}", best.value)
        client.set_tag(parent, "nbscale.best_run_id", best.run_id)
    result.figures = search_figures(study, metric)
    for name, png in result.figures.items():  # with the search's parent run, where the trials are its children
        client.log_image(parent, _image(png), f"{name.replace(' ', '_')}.png")
    client.set_terminated(parent, "FINISHED" if best else "FAILED")
    if best is None:
        raise NbscaleError(f"Every trial failed (first: {result.trials[0].error}); see the child runs of MLflow run {parent}.")
    if register:
        from ..registry import register as register_model

        card = register_model(register, run_id=best.run_id, alias=alias)
        result.registered = card.note
    return result


def search_figures(study, metric: str) -> dict[str, bytes]:
    """Optuna's own pictures of a search: the optimisation history, and (with two or more finished trials whose
    values differ) the parameter importances. A picture Optuna cannot draw for this study is left out, not faked."""
    import warnings

    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as plots

    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    wanted = {"optimisation history": plots.plot_optimization_history}
    if len(finished) >= 2 and len({t.value for t in finished}) > 1 and finished[0].params:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # the same search draws the same importances
        wanted["parameter importances"] = lambda searched: plots.plot_param_importances(searched, evaluator=evaluator)
    drawn = {}
    for name, plot in wanted.items():
        # rc_context: Optuna's plots call plt.style.use("ggplot"), which would restyle the notebook's own plots after.
        with warnings.catch_warnings(), plt.rc_context():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # e.g. importances of a parameter that never varied
                continue
            if name == "optimisation history":
                axes.set_ylabel(metric)
            figure = axes.figure
            figure.set_size_inches(5.2, 3.2)
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=72, bbox_inches="tight")
            plt.close(figure)  # an inline backend would otherwise draw it again under the cell
        drawn[name] = buffer.getvalue()
    return drawn


def _image(png: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(png))

"""The MLflow model registry from the notebook: register a run's model (or the best run of an
experiment by a metric — the model-selection step), move aliases (champion, challenger; a rollback
is moving one back), and list models with their metrics and dataset lineage."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

from . import events
from .datadir import require_writable_store
from .errors import NbscaleError
from .tags import DATA, MODEL_URI, RUN_ID, TASK, run_of

NAME = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


@dataclass
class ModelVersionInfo:
    name: str
    version: int
    aliases: list[str]
    run_id: str
    data: str
    metrics: dict[str, float]


class ModelsCard:
    def __init__(self, versions: list[ModelVersionInfo], note: str = "", evaluation: tuple | None = None, unevaluated: str = ""):
        self.versions, self.note = versions, note
        # (the candidate's Evaluation, the champion's on the same rows or None), or why there is none
        self.evaluation, self.unevaluated = evaluation, unevaluated

    def _repr_html_(self) -> str:
        if not self.versions:
            return "<div>No registered models yet: %register --best val_accuracy --experiment E --name NAME.</div>"
        rows = "".join(
            f"<tr><td>{html.escape(v.name)}</td><td>v{v.version}</td><td>{html.escape(', '.join(v.aliases))}</td>"
            f"<td>{html.escape(v.data)}</td><td>{html.escape(_metrics_line(v.metrics))}</td><td><code>{v.run_id[:8]}</code></td></tr>"
            for v in self.versions)
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in ("model", "version", "aliases", "trained on", "metrics", "run"))
        note = f"<div>{html.escape(self.note)}</div>" if self.note else ""
        evaluated = ""
        if self.evaluation or self.unevaluated:
            from .evaluate.card import render

            evaluated = render(*(self.evaluation or (None, None)), note=self.unevaluated)
        return f"<div class='nbscale-models'>{note}<table><tr>{head}</tr>{rows}</table>{evaluated}</div>"

    def __repr__(self) -> str:
        lines = [self.note] if self.note else []
        lines += [f"{v.name} v{v.version}" + (f" @{',@'.join(v.aliases)}" if v.aliases else "") + f" · {v.data} · {_metrics_line(v.metrics)}"
                  for v in self.versions]
        if self.evaluation:
            candidate, champion = self.evaluation
            lines += [f"evaluated on {candidate.on}: " + "; ".join(f"{e.label} {_metrics_line(_headline(e.metrics))}" for e in (candidate, champion) if e)]
            lines += [f"note: {e.caveat}" for e in (candidate, champion) if e and e.caveat]
        elif self.unevaluated:
            lines.append(f"not evaluated: {self.unevaluated}")
        return "\n".join(lines) or "No registered models yet."


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    from .evaluate.card import FIRST

    return {k: metrics[k] for k in FIRST if k in metrics}


def _metrics_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k != "samples_per_s")


def _client():
    from .session import tracking_client

    return tracking_client()


def _check_name(name: str) -> None:
    if not NAME.match(name or ""):
        raise NbscaleError(f"Model name {name!r} is not usable: use letters, digits, '.', '-' and '_' (e.g. fashion-cnn).")


LOWER_IS_BETTER = re.compile(r"(loss|error|err|mae|mse|rmse|msle|mape|hinge|crossentropy|divergence|perplexity)$", re.I)
HIGHER_IS_BETTER = re.compile(r"(accuracy|acc|auc|precision|recall|f1|r2|score|iou)$", re.I)


def direction(metric: str, lowest: bool | None) -> tuple[bool, str]:
    """(lower is better, the rule that said so). --lowest/--highest win; else the metric's name decides,
    and a name that says neither is refused rather than guessed."""
    if lowest is not None:
        return lowest, "lower is better (--lowest)" if lowest else "higher is better (--highest)"
    name = metric.rsplit("/", 1)[-1]
    if LOWER_IS_BETTER.search(name):
        return True, "lower is better: a loss or error metric"
    if HIGHER_IS_BETTER.search(name):
        return False, "higher is better: an accuracy-like metric"
    raise NbscaleError(f"Cannot tell whether a higher or a lower {metric!r} is better: add --lowest or --highest.")


def best_run(experiment: str, metric: str, lowest: bool | None = None):
    """The finished run with a logged model that has the best `metric` in `experiment` (NaN and infinite
    values never win). `lowest` None: the direction comes from the metric's name (see `direction`)."""
    import math

    lower, _ = direction(metric, lowest)
    client = _client()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise NbscaleError(f"There is no MLflow experiment {experiment!r}: train into it first (%%train ... --experiment {experiment}).")
    runs = client.search_runs([found.experiment_id], filter_string=f"attributes.status = 'FINISHED' and tags.`{MODEL_URI}` LIKE 'models:/%'",
                              max_results=1000)
    scored = [r for r in runs if metric in r.data.metrics and math.isfinite(r.data.metrics[metric])]
    if not scored:
        known = sorted({k for r in runs for k in r.data.metrics})
        raise NbscaleError(f"No finished run with a model in {experiment!r} has a finite value of the metric {metric!r}"
                           + (f" (metrics: {', '.join(known)})" if known else " (it has no finished runs with a model)") + ".")
    return (min if lower else max)(scored, key=lambda r: r.data.metrics[metric])


def register(name: str, *, run_id: str | None = None, best: str | None = None, experiment: str = "nbscale", alias: str | None = None,
             lowest: bool | None = None, evaluate: bool = True) -> ModelsCard:
    """Register the model of run `run_id`, or of the best run of `experiment` by metric `best` (higher or
    lower is better by the metric's name unless `lowest` says). A run whose loss is NaN or infinite is refused.
    With `evaluate`, the new version is evaluated on its training's held-out split beside the version that was
    @champion before (on the same rows), and the card shows both."""
    import math

    import mlflow

    from .quiet import quiet_loggers

    _check_name(name)
    require_writable_store(f"Registering {name}")
    if (run_id is None) == (best is None):
        raise NbscaleError("Say which run: --run RUN_ID, or --best METRIC (with --experiment) to pick the best one.")
    client = _client()
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - MLflow raises its own error type per store
            raise NbscaleError(f"There is no MLflow run {run_id!r}: copy the id from a training card or %models.") from None
    else:
        run = best_run(experiment, best, lowest)
    broken = [k for k in ("loss", "val_loss") if k in run.data.metrics and not math.isfinite(run.data.metrics[k])]
    if broken:
        raise NbscaleError(f"Run {run.info.run_id} has {broken[0]} {run.data.metrics[broken[0]]}: a model that learned nothing usable "
                           "is never registered. Fix the data or options and train again.")
    uri = run.data.tags.get(MODEL_URI)
    if not uri:
        raise NbscaleError(f"Run {run.info.run_id} has no model logged by nbscale (it {run.info.status.lower()}): register a finished %%train run.")
    try:
        champion = (client.get_registered_model(name).aliases or {}).get("champion")
    except Exception:  # noqa: BLE001 - a first registration: no champion yet
        champion = None
    # MLflow prints "Successfully registered model ..." itself; the card says it once.
    with quiet_loggers("mlflow", output=True):
        version = mlflow.register_model(uri, name, tags={RUN_ID: run.info.run_id, DATA: run.data.params.get("data", ""),
                                                         TASK: run.data.tags.get(TASK, "")})
    followed = ""
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
        followed = _serving_follows(name, alias)
    chosen = f" (best {best} {run.data.metrics[best]:.4f} in {experiment}; {direction(best, lowest)[1]})" if best else ""
    evaluation, unevaluated = None, ""
    if evaluate:
        from .evaluate import compare

        try:
            evaluation = compare(name, int(version.version), champion)
        except NbscaleError as exc:  # registered all the same: the card says why there is no evaluation
            unevaluated = str(exc)
    return ModelsCard(versions(name), f"Registered {name} v{version.version} from run {run.info.run_id}{chosen}"
                      + (f"; @{alias} points to it" if alias else "") + (f"; {followed}." if followed else "."), evaluation, unevaluated)


def set_alias(name: str, alias: str, version: int) -> ModelsCard:
    """Point `name@alias` at `version` (moving it back is a rollback; servers follow the alias)."""
    client = _client()
    known = [int(v.version) for v in client.search_model_versions(f"name = '{name}'")]
    if version not in known:
        raise NbscaleError(f"{name} has no version {version} (versions: {', '.join(map(str, sorted(known))) or 'none'}): "
                           "pick one from %models.")
    client.set_registered_model_alias(name, alias, str(version))
    followed = _serving_follows(name, alias)
    return ModelsCard(versions(name), f"{name}@{alias} now points to v{version}" + (f"; {followed}." if followed else "."))


def _serving_follows(name: str, alias: str) -> str:
    return "; ".join(line for line in events.emit(events.ALIAS_MOVED, name=name, alias=alias) if line)


def versions(name: str | None = None) -> list[ModelVersionInfo]:
    client = _client()
    names = [name] if name else sorted(m.name for m in client.search_registered_models())
    found = []
    for model in names:
        aliases: dict[str, list[str]] = {}
        try:
            registered = client.get_registered_model(model)
        except Exception:  # noqa: BLE001 - unknown name
            raise NbscaleError(f"There is no registered model {model!r}: see %models, or %register it first.") from None
        for alias, number in (registered.aliases or {}).items():
            aliases.setdefault(str(number), []).append(alias)
        for v in sorted(client.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version)):
            run_id = run_of(v)
            run = client.get_run(run_id) if run_id else None
            found.append(ModelVersionInfo(model, int(v.version), sorted(aliases.get(str(v.version), [])), run_id,
                                          (v.tags or {}).get(DATA, ""), dict(run.data.metrics) if run else {}))
    return found


def models(name: str | None = None) -> ModelsCard:
    return ModelsCard(versions(name))

"""%promote: a guarded canary that ends in a decision. The version behind `--from` serves a share of the live
traffic of the service of `--to` (the champion) until it has answered enough requests or the time is up;
then its errors, latency and — when requests carry the label column — accuracy are compared with the
champion's over the same period (accuracy on the same rows: promote.same_rows), and the alias moves
(promote: the canary's replicas become the service, no restart) or stays (roll back: the canary stops).
The alias moves only at the decision, so an interrupted promotion (the stop button, a failure, the
kernel's end) leaves it where it was; the first two roll the canary back at once, and a promotion its
kernel did not live to finish is logged as KILLED by the next %promote of that model. Each promotion is one MLflow run in `nbscale-promotions`, logged when it ends (never
left RUNNING), with its timeline, and tagged on the candidate version."""
from __future__ import annotations

import html
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..contracts import ModelVersion
from ..errors import NbscaleError
from .same_rows import Labelled, SameRows, compare, labelled_requests, quality

EXPERIMENT = "nbscale-promotions"
GUARDS = ("errors", "latency", "accuracy")
# A canary fails a guard when it is worse than the champion by more than these (measured over the same period).
ERROR_RATE_MARGIN = 0.01  # one percentage point more failed requests
LATENCY_FACTOR, LATENCY_SLACK_MS = 2.0, 10.0  # p95 above twice the champion's plus 10 ms (new replicas warm up)
ACCURACY_MARGIN = 0.02  # two points less accurate on labelled requests
MIN_LABELLED = 50  # labelled rows each side needs before accuracy decides anything
POLL_S = 0.5
QUALITY_EVERY_S = 5.0


@dataclass
class SideMeasure:
    label: str
    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None
    labelled: int = 0
    accuracy: float | None = None  # share right (classes) or mean absolute error (values), over labelled rows
    requests_labelled: Labelled | None = field(default=None, repr=False)  # the requests behind `labelled` (for the same-rows replay)
    label_column: str | None = field(default=None, repr=False)  # what its training run read as the label (looked up once)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass
class Promotion:
    name: str
    source: str  # the alias promoted from, e.g. challenger
    target: str  # the alias promoted to, e.g. champion
    champion: SideMeasure
    canary: SideMeasure
    weight: float
    decision: str = ""  # promoted | rolled back | interrupted
    reasons: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    task: str = "classification"
    run_id: str | None = None
    same_rows: SameRows | None = None  # both versions' quality on every labelled row either served (set at the decision)

    def step(self, text: str) -> None:
        self.steps.append(f"{time.strftime('%H:%M:%S')} {text}")

    def line(self) -> str:
        if self.same_rows is not None:
            quality_part = (f" · {self._quality_name()} {_num(self.same_rows.canary)} vs {_num(self.same_rows.champion)} "
                            f"on the same {self.same_rows.rows} rows")
        elif self.canary.labelled or self.champion.labelled:
            quality_part = f" · {self._quality_name()} {_num(self.canary.accuracy)} vs {_num(self.champion.accuracy)}"
        else:
            quality_part = ""
        return (f"{self.decision or 'canary'}: {self.canary.label} {self.canary.requests} requests vs {self.champion.label} "
                f"{self.champion.requests} · errors {_rate(self.canary)} vs {_rate(self.champion)} · p95 {_ms(self.canary.p95_ms)} vs "
                f"{_ms(self.champion.p95_ms)}" + quality_part)

    def _quality_name(self) -> str:
        return "accuracy" if self.task == "classification" else "MAE"

    def __repr__(self) -> str:
        return f"{self.line()}" + (f" — {'; '.join(self.reasons)}" if self.reasons else "")

    def _repr_html_(self) -> str:
        colour = {"promoted": "var(--jp-success-color1, #2e7d32)", "rolled back": "var(--jp-warn-color1, #b26a00)"}.get(
            self.decision, "var(--jp-error-color1, #c62828)")
        rows = [("version", self.champion.label, self.canary.label), ("requests", self.champion.requests, self.canary.requests),
                ("error rate", _rate(self.champion), _rate(self.canary)), ("p95 latency", _ms(self.champion.p95_ms), _ms(self.canary.p95_ms)),
                (f"{self._quality_name()} (labelled rows)", f"{_num(self.champion.accuracy)} ({self.champion.labelled})",
                 f"{_num(self.canary.accuracy)} ({self.canary.labelled})")]
        if self.same_rows is not None:
            rows.append((f"{self._quality_name()} on the same {self.same_rows.rows} rows", _num(self.same_rows.champion), _num(self.same_rows.canary)))
        table = "".join(f"<tr><td>{html.escape(str(a))}</td><td>{html.escape(str(b))}</td><td>{html.escape(str(c))}</td></tr>" for a, b, c in rows)
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        steps = "<br>".join(html.escape(s) for s in self.steps)
        return (f"<div class='nbscale-promotion' style='border:1px solid var(--jp-border-color1, currentColor);border-radius:6px;padding:6px 10px'>"
                f"<b>{html.escape(self.name)}</b> @{html.escape(self.source)} → @{html.escape(self.target)}: "
                f"<b style='color:{colour}'>{html.escape(self.decision or 'canary running')}</b>"
                f"<table style='font-size:12px'><tr><th></th><th style='text-align:left'>@{html.escape(self.target)}</th>"
                f"<th style='text-align:left'>canary ({self.weight:g}%)</th></tr>{table}</table>"
                f"<ul style='font-size:12px;margin:2px 0'>{reasons}</ul><div style='font-size:11px;opacity:.8'>{steps}</div></div>")


def _rate(side: SideMeasure) -> str:
    return f"{side.error_rate:.1%}" if side.requests else "—"


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "—"


def _num(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "—"


def parse_for(text: str) -> tuple[int | None, float | None]:
    """'200 requests' / '200' -> (200, None); '10m', '90s', '1h' -> (None, seconds)."""
    found = re.fullmatch(r"\s*(\d+)\s*(requests?)?\s*", text or "")
    if found:
        if int(found[1]) < 1:
            raise NbscaleError(f"--for {text!r}: the canary needs at least 1 request.")
        return int(found[1]), None
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*", text or "")
    if found and float(found[1]) > 0:
        return None, float(found[1]) * {"s": 1, "m": 60, "h": 3600}[found[2]]
    raise NbscaleError(f"--for {text!r}: say how long the canary runs, as requests (--for 200 requests) or time (--for 10m, 90s).")


def promote(name: str, *, source: str = "challenger", target: str = "champion", canary: float = 10.0, run_for: str = "200 requests",
            guard: str | None = None, timeout_s: float = 600.0, on_progress=None) -> Promotion:
    """Serve `name@source` as a canary taking `canary` percent of `name@target`'s traffic for `run_for`, then
    move `target` to it (promote) or stop it (roll back) by the guards (`guard`: only that one decides).
    A count of requests not reached within `timeout_s` rolls back. `on_progress` receives the live line."""
    from .. import serving
    from ..serving.versions import resolve
    from ..train.task import task_of_version

    requests_wanted, seconds = parse_for(run_for)
    if guard is not None and guard not in GUARDS:
        raise NbscaleError(f"--guard {guard!r}: use one of {', '.join(GUARDS)} (or leave it out: all that can be measured decide).")
    if not 0 < canary < 100:
        raise NbscaleError(f"--canary {canary:g} is the candidate's share of requests in percent: use a number between 0 and 100.")
    settle_interrupted(name)
    _, champion_version = resolve(f"{name}@{target}")
    _, candidate_version = resolve(f"{name}@{source}")
    if champion_version == candidate_version:
        raise NbscaleError(f"{name}@{source} and @{target} are both v{candidate_version}: there is nothing to promote.")
    promotion = Promotion(name, source, target, SideMeasure(f"{name} v{champion_version}"), SideMeasure(f"{name} v{candidate_version}"),
                          canary, task=task_of_version(name, candidate_version))
    for side in (promotion.champion, promotion.canary):
        side.label_column = _label_column(side.label)
    record = _record_path(name)
    _write_record(record, promotion, champion_version, candidate_version)
    try:
        running = serving._services.get(name)
        if running is None or running.sides[0].label != promotion.champion.label or not running.running:
            serving.serve(f"{name}@{target}")
            promotion.step(f"serving @{target} ({promotion.champion.label})")
        service = serving.serve(f"{name}@{source}", canary=f"{name}@{target}", weight=canary)
        started = time.time()
        before = _counters(service)
        promotion.step(f"canary {promotion.canary.label} takes {canary:g}% of the requests")
        deadline = started + (seconds if seconds is not None else timeout_s)
        read_records = 0.0
        while True:
            # The counters each time; the recorded traffic (latency, labels) every few seconds: it is re-read whole.
            fresh = time.time() - read_records >= QUALITY_EVERY_S
            _measure(promotion, service, before, started, quality=fresh)
            read_records = time.time() if fresh else read_records
            if on_progress:
                on_progress(promotion)
            if requests_wanted is not None and promotion.canary.requests >= requests_wanted:
                break
            if time.time() >= deadline:
                break
            time.sleep(POLL_S)
        _measure(promotion, service, before, started)
        if "accuracy" in _guards_used(promotion, guard) and min(promotion.champion.labelled, promotion.canary.labelled) >= MIN_LABELLED:
            _judge_on_same_rows(promotion, service)
        if requests_wanted is not None and promotion.canary.requests < requests_wanted:
            promotion.reasons = [f"only {promotion.canary.requests} of {requests_wanted} requests reached the canary in {timeout_s:g} s: "
                                 "not enough to judge it"]
        else:
            promotion.reasons = _failed_guards(promotion, guard)
        if promotion.reasons:
            serving.end_canary(name, keep="primary")
            promotion.decision = "rolled back"
            promotion.step(f"rolled back: {'; '.join(promotion.reasons)}; @{target} stays on v{champion_version}")
        else:
            from ..session import tracking_client

            tracking_client().set_registered_model_alias(name, target, str(candidate_version))
            serving.end_canary(name, keep="canary")
            promotion.decision = "promoted"
            promotion.reasons = [f"{promotion.canary.label} held every guard ({', '.join(_guards_used(promotion, guard))})"]
            promotion.step(f"promoted: @{target} now points to v{candidate_version}; the canary's replicas serve all requests")
        _log(promotion, "FINISHED", candidate_version)
    except BaseException as exc:
        _roll_back_quietly(name)
        promotion.decision = "interrupted"
        promotion.reasons = [f"{type(exc).__name__}: {exc}".rstrip(": ") if not isinstance(exc, KeyboardInterrupt) else "stopped by the user"]
        promotion.step(f"interrupted: the canary stopped; @{target} stays on v{champion_version}")
        _log(promotion, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", candidate_version)
        raise
    finally:
        record.unlink(missing_ok=True)
    return promotion


def _counters(service) -> dict[str, tuple[int, int]]:
    return {s["label"]: (s["requests"], s["errors"]) for s in service.stats().get("sides", [])}


def _measure(promotion: Promotion, service, before: dict, since: float, quality: bool = True) -> None:
    """Both sides since the canary started: requests and errors from the front's counters, latency and
    labelled quality (with `quality`) from what the front recorded."""
    now = _counters(service)
    for side in (promotion.champion, promotion.canary):
        requests, errors = now.get(side.label, (0, 0))
        was = before.get(side.label, (0, 0))
        side.requests, side.errors = requests - was[0], errors - was[1]
        if quality:
            _quality(side, since, promotion.task)


def _quality(side: SideMeasure, since: float, task: str) -> None:
    import numpy as np

    from ..drift import served

    records = served(side.label, since)
    latencies = [r["latency_ms"] for r in records]
    side.p95_ms = float(np.percentile(latencies, 95)) if latencies else None
    if side.label_column is not None:
        side.requests_labelled = labelled_requests(records, side.label_column)
        side.labelled, side.accuracy = quality(side.requests_labelled.truth, side.requests_labelled.answers, task)


def _label_column(version_label: str) -> str | None:
    from ..serving.versions import trained_feed

    model = ModelVersion.from_label(version_label)
    try:
        return trained_feed(model.name, model.version)[0].label
    except NbscaleError:
        return None


def _judge_on_same_rows(promotion: Promotion, service) -> None:
    """Sets promotion.same_rows from the rows the last measure read; if the replay fails, the guard falls back to
    each side's own rows and the timeline says so."""
    label = promotion.canary.label_column
    replicas = {side.label: next((r.url for r in side.replicas if r.alive), None) for side in service.sides}
    champion_replica, canary_replica = replicas.get(promotion.champion.label), replicas.get(promotion.canary.label)
    try:
        if label is None or label != promotion.champion.label_column:
            raise ValueError("the two versions were trained with different label columns")
        if not (champion_replica and canary_replica):
            raise ValueError("a side has no live replica")
        same = compare(promotion.champion.requests_labelled, promotion.canary.requests_labelled, champion_replica, canary_replica,
                       promotion.task)
        if not same.rows:
            raise ValueError("no labelled row was answered by both versions")
        promotion.same_rows = same
        promotion.step(f"both versions answered all {promotion.same_rows.rows} labelled rows (each side's rows replayed to the other's replica)")
    except (OSError, ValueError) as exc:
        promotion.step(f"{promotion._quality_name()} judged on each side's own rows: the same-rows replay failed ({exc})")


def _guards_used(promotion: Promotion, guard: str | None) -> list[str]:
    labelled = promotion.champion.labelled >= MIN_LABELLED and promotion.canary.labelled >= MIN_LABELLED
    return [g for g in ((guard,) if guard else GUARDS) if g != "accuracy" or labelled or guard == "accuracy"]


def _failed_guards(promotion: Promotion, guard: str | None) -> list[str]:
    champion, canary = promotion.champion, promotion.canary
    failed = []
    for name in _guards_used(promotion, guard):
        if name == "errors" and canary.error_rate > champion.error_rate + ERROR_RATE_MARGIN:
            failed.append(f"error rate {canary.error_rate:.1%} against the champion's {champion.error_rate:.1%}")
        if name == "latency" and canary.p95_ms is not None and champion.p95_ms is not None \
                and canary.p95_ms > champion.p95_ms * LATENCY_FACTOR + LATENCY_SLACK_MS:
            failed.append(f"p95 latency {canary.p95_ms:.1f} ms against the champion's {champion.p95_ms:.1f} ms")
        if name == "accuracy":
            if min(champion.labelled, canary.labelled) < MIN_LABELLED:
                failed.append(f"--guard accuracy needs {MIN_LABELLED} labelled rows on each side (requests carrying the label column); "
                              f"the champion had {champion.labelled}, the canary {canary.labelled}")
            else:
                failed += _quality_failed(promotion)
    return failed


def _quality_failed(promotion: Promotion) -> list[str]:
    same = promotion.same_rows
    if same is not None and same.rows:
        ours, theirs, where = same.canary, same.champion, f"on the same {same.rows} labelled rows"
    else:
        ours, theirs, where = promotion.canary.accuracy, promotion.champion.accuracy, "on the labelled requests each side served"
    if promotion.task == "classification" and ours < theirs - ACCURACY_MARGIN:
        return [f"accuracy {ours:.3f} against the champion's {theirs:.3f} {where}"]
    if promotion.task != "classification" and ours > theirs * (1 + ACCURACY_MARGIN * 5):
        return [f"MAE {ours:.3f} against the champion's {theirs:.3f} {where}"]
    return []


def _roll_back_quietly(name: str) -> None:
    from .. import serving

    try:
        if name in serving._services and len(serving._services[name].sides) > 1:
            serving.end_canary(name, keep="primary")
    except Exception:  # noqa: BLE001 - already failing: the promotion is logged as interrupted whatever happens here
        pass


def _record_path(name: str) -> Path:
    from ..datadir import local_dir

    folder = local_dir() / "promotions"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.json"


def _write_record(path: Path, promotion: Promotion, champion: int, candidate: int) -> None:
    """What a later kernel needs to log this promotion if this one dies before it ends."""
    from ..files import write_json

    write_json(path, {"pid": os.getpid(), "started": time.time(), "name": promotion.name, "source": promotion.source,
                                   "target": promotion.target, "champion": champion, "candidate": candidate, "weight": promotion.weight})


def settle_interrupted(name: str) -> Promotion | None:
    """A promotion of `name` whose kernel ended before it did: logged KILLED (the alias never moved), record removed."""
    path = _record_path(name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if _alive(record["pid"]):
        raise NbscaleError(f"A promotion of {name} is running in another kernel (pid {record['pid']}): let it end, or stop that kernel.")
    from ..session import tracking_client

    aliases = tracking_client().get_registered_model(name).aliases or {}
    where = aliases.get(record["target"])
    promotion = Promotion(name, record["source"], record["target"], SideMeasure(f"{name} v{record['champion']}"),
                          SideMeasure(f"{name} v{record['candidate']}"), record["weight"], decision="interrupted",
                          reasons=[f"its kernel ended during the canary; @{record['target']} stayed on v{where}"])
    promotion.steps.append(f"{time.strftime('%H:%M:%S', time.localtime(record['started']))} canary started (kernel pid {record['pid']})")
    _log(promotion, "KILLED", record["candidate"])
    path.unlink(missing_ok=True)
    return promotion


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log(promotion: Promotion, status: str, candidate: int) -> None:
    """One run, created and ended here (never left RUNNING), tagged on the candidate version."""
    import mlflow.entities

    from ..session import experiment_id, tracking_client

    client = tracking_client()
    try:
        run = client.create_run(experiment_id(EXPERIMENT), run_name=f"promote {promotion.canary.label} to @{promotion.target}",
                                tags={"nbscale.promotion_of": promotion.canary.label, "nbscale.decision": promotion.decision,
                                      "mlflow.note.content": "; ".join(promotion.reasons)})
        try:
            now = int(time.time() * 1000)
            Metric, Param = mlflow.entities.Metric, mlflow.entities.Param
            metrics = []
            for prefix, side in (("champion", promotion.champion), ("canary", promotion.canary)):
                values = {"requests": side.requests, "errors": side.errors, "p95_ms": side.p95_ms, "labelled": side.labelled,
                          "quality": side.accuracy}
                metrics += [Metric(f"{prefix}.{k}", float(v), now, 0) for k, v in values.items() if v is not None]
            if promotion.same_rows is not None and promotion.same_rows.rows:
                metrics += [Metric("same_rows.rows", float(promotion.same_rows.rows), now, 0),
                            Metric("champion.same_rows_quality", promotion.same_rows.champion, now, 0),
                            Metric("canary.same_rows_quality", promotion.same_rows.canary, now, 0)]
            params = [Param("source", promotion.source), Param("target", promotion.target), Param("canary_percent", str(promotion.weight)),
                      Param("champion", promotion.champion.label), Param("candidate", promotion.canary.label)]
            client.log_batch(run.info.run_id, metrics=metrics, params=params)
            client.log_text(run.info.run_id, "\n".join(promotion.steps + [f"decision: {promotion.decision}"] + promotion.reasons), "timeline.txt")
            client.set_model_version_tag(promotion.name, str(candidate), "nbscale.promotion", f"{promotion.decision} ({run.info.run_id})")
        finally:
            client.set_terminated(run.info.run_id, status)
        promotion.run_id = run.info.run_id
    except Exception as exc:  # noqa: BLE001 - the decision stands; the card says the log is missing
        promotion.steps.append(f"not logged to MLflow: {exc}")

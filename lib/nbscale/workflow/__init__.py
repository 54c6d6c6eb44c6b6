"""Workflows from cells: steps with dependencies (fan-out, fan-in), memoization, concurrent runs.

`define("train_cnn", code, after=["ingest"], memo=True)` names a step; `run_step(...)` runs one (its
upstream steps must have run or hit their memo); `run(...)` runs the whole DAG: ready steps run
concurrently on threads (async, the default), a `sync` step runs alone once everything before it has
ended, a failed step skips the steps downstream of it and keeps every upstream result. Steps are
defined in order and may only name earlier steps as upstream, so the graph has no cycles."""
from __future__ import annotations

import re
import threading
import time
import types
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from ..errors import NbscaleError, first_useful_line
from . import memo

NAME = re.compile(r"^[A-Za-z_][\w\-]{0,63}$")
SKIP_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}
DONE = ("done", "memo-hit")
PARALLEL = 4


@dataclass
class Step:
    name: str
    code: str
    after: tuple[str, ...] = ()
    memo: bool = False
    sync: bool = False
    state: str = "pending"  # pending, running, done, memo-hit, failed, skipped
    key: str | None = None
    started: float | None = None
    ended: float | None = None
    note: str = ""
    outputs: list[str] = field(default_factory=list)

    def line(self) -> str:
        after = f" after {', '.join(self.after)}" if self.after else ""
        took = f" in {self.ended - self.started:.1f} s" if self.started and self.ended and self.state != "memo-hit" else ""
        return f"{self.name} [{self.state}]{after}{took}" + (f": {self.note}" if self.note else "")


_steps: dict[str, Step] = {}
_lock = threading.Lock()  # namespace updates from concurrent steps


def steps() -> list[Step]:
    return list(_steps.values())


def define(name: str, code: str, after: list[str] | tuple[str, ...] = (), memo: bool = False, sync: bool = False) -> Step:
    if not NAME.match(name or ""):
        raise NbscaleError(f"Step name {name!r} is not usable: letters, digits, '_' and '-' (e.g. train_cnn).")
    after = tuple(a for a in after if a)
    unknown = [a for a in after if a not in _steps or a == name]
    if unknown:
        raise NbscaleError(f"Step {name} runs after {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not defined "
                           f"before it (steps: {', '.join(_steps) or 'none yet'}): run the %%step cells of upstream steps first.")
    step = Step(name, code, after, memo, sync)
    with _lock:
        _steps.pop(name, None)  # redefined: it moves to the end, after everything it may now name
        _steps[name] = step
    return step


def _exec(code: str, namespace: dict) -> None:
    exec(compile(code, "<%%step>", "exec"), namespace)  # noqa: S102 - the user's own cell


def run_step(name: str, namespace: dict, runner: Callable[[str, dict], None] = _exec) -> Step:
    """Run one step (or restore it from its memo) in `namespace`; its upstream steps must be done."""
    step = _steps.get(name)
    if step is None:
        raise NbscaleError(f"There is no step {name!r} (steps: {', '.join(_steps) or 'none yet'}).")
    waiting = [f"{u} ({_steps[u].state})" for u in step.after if _steps[u].state not in DONE]
    if waiting:
        raise NbscaleError(f"Step {name} runs after {', '.join(waiting)}: run those first, or run the whole DAG with %pipeline run.")
    upstream = {u: _steps[u].key for u in step.after}
    # A memoized upstream step's key stands for its outputs' values; a plain step's outputs are hashed here.
    covered = {output for u in step.after if _steps[u].memo for output in _steps[u].outputs}
    record = memo.load(name) if step.memo else None
    if record and _unchanged(step, record, upstream, namespace, covered):
        restored = memo.restore(name)
        with _lock:
            namespace.update(restored)
        step.state, step.key, step.outputs = "memo-hit", record["key"], sorted(restored)
        step.note = "unchanged, skipped" + (f"; restored {', '.join(sorted(restored))}" if restored else "")
        step.started = step.ended = time.time()
        return step
    step.state, step.note, step.started, step.ended = "running", "", time.time(), None
    before = dict(namespace)
    params, unhashable = memo.inputs(step.code, before, skip=covered)
    try:
        with memo.recording() as reads:
            runner(step.code, namespace)
    except BaseException as exc:
        step.state, step.ended = "failed", time.time()
        step.note = first_useful_line(str(exc) or type(exc).__name__, 200)
        raise
    step.ended = time.time()
    # Outputs: what changed and the step's own code names (steps running beside it change the namespace too).
    named = set(re.findall(r"[A-Za-z_]\w*", step.code))
    outputs = {k: v for k, v in namespace.items() if k in named and _is_output(k, v) and before.get(k, _MISSING) is not v}
    params = {n: v for n, v in params.items() if n not in outputs}  # what the step sets is its output, not its input
    unhashable = {n: why for n, why in unhashable.items() if n not in outputs}
    step.key, step.outputs = memo.key_of(step.code, upstream, reads, params), sorted(outputs)
    step.state = "done"
    if step.memo:
        lost = memo.save(name, {"key": step.key, "reads": reads, "after": upstream, "inputs": sorted(params),
                                "unhashable": sorted(unhashable)}, outputs)
        notes = [f"memo cannot keep {', '.join(lost)} (not picklable)"] if lost else []
        notes += [f"memo cannot hash {n}: {why}" for n, why in sorted(unhashable.items())]
        if notes:
            step.note = "; ".join(notes) + ": it runs again next time"
    _track(step)
    return step


_MISSING = object()


def _unchanged(step: Step, record: dict, upstream: dict, namespace: dict, covered: set) -> bool:
    """The memo record still describes this step: same code, upstream keys, dataset versions and the same
    content of every variable it read. Anything that could not be hashed last time is a miss."""
    if record["lost"] or record.get("unhashable") or "inputs" not in record:
        return False
    now, unhashable = memo.inputs(step.code, namespace, record["inputs"], covered)
    if unhashable or sorted(now) != sorted(record["inputs"]):
        return False
    return record["key"] == memo.key_of(step.code, upstream, memo.reads_now(record["reads"]), now)


def _is_output(name: str, value) -> bool:
    return not name.startswith("_") and name not in SKIP_NAMES and not isinstance(value, types.ModuleType)


def _track(step: Step) -> None:
    """One MLflow run per executed step (tags: key, upstream), so the workflow's history sits with the runs."""
    from ..session import experiment_id, mlflow

    client = mlflow().MlflowClient()
    run = client.create_run(experiment_id("nbscale-workflow"), run_name=step.name,
                            tags={"nbscale.step": step.name, "nbscale.memo_key": step.key or "", "nbscale.after": ",".join(step.after)})
    client.log_metric(run.info.run_id, "seconds", (step.ended or 0) - (step.started or 0))
    client.set_terminated(run.info.run_id, "FINISHED")


def run(namespace: dict, runner: Callable[[str, dict], None] = _exec, parallel: int = PARALLEL,
        on_change: Callable[[object], None] | None = None):
    """Run every defined step in dependency order; independent async steps concurrently. `on_change` receives
    the DAG's picture (a PipelineView) whenever a step's state changes, at most once a second otherwise."""
    from .view import PipelineView

    shown: list = [None]

    def show() -> None:
        states = [(step.name, step.state) for step in steps()]
        if on_change is not None and states != shown[0]:
            shown[0] = states
            on_change(PipelineView(steps()))

    order = list(_steps)
    for name in order:
        _steps[name].state, _steps[name].note = "pending", ""
    pending, running = list(order), {}
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="nbscale-step") as pool:
        while pending or running:
            for name in list(pending):
                blocked = [u for u in _steps[name].after if _steps[u].state in ("failed", "skipped")]
                if blocked:
                    pending.remove(name)
                    _steps[name].state, _steps[name].note = "skipped", f"upstream {', '.join(blocked)} did not finish"
            ready = [n for n in pending if all(_steps[u].state in DONE for u in _steps[n].after)]
            for name in ready:
                if _steps[name].sync:
                    if running or name != ready[0]:
                        break  # a sync step runs alone: after what is running ends, before anything else starts
                    pending.remove(name)
                    _steps[name].state = "running"
                    show()
                    _run_quietly(name, namespace, runner)
                    break
                pending.remove(name)
                _steps[name].state = "running"
                running[pool.submit(_run_quietly, name, namespace, runner)] = name
            show()
            if running:
                finished, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
            elif not ready:
                break
    show()
    return PipelineView(steps())


def _run_quietly(name: str, namespace: dict, runner) -> None:
    try:
        run_step(name, namespace, runner)
    except Exception:  # noqa: BLE001 - recorded on the step; the DAG goes on with what does not depend on it
        pass


def reset(forget_memo: bool = False) -> str:
    """Forget the defined steps (and, with `forget_memo`, their memo records on disk)."""
    import shutil

    names = list(_steps)
    if forget_memo:
        for name in names:
            shutil.rmtree(memo.folder(name), ignore_errors=True)
    _steps.clear()
    return f"Forgot {len(names)} step(s)" + (" and their memo records." if forget_memo else ".")

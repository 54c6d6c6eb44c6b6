"""Workflows: %%step fan-out/fan-in, sync/async steps, memoization that follows dataset versions and
survives a kernel restart, failures that keep upstream results (real Spark, real MLflow, real kernels)."""
import os

import pytest
from conftest import restored_settings

from nbscale import workflow
from nbscale.errors import NbscaleError

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh(tmp_path):
    with restored_settings() as cfg:
        cfg.data_dir = str(tmp_path / "data")
        workflow.reset()
        yield
        workflow.reset()


def overlap(a, b) -> bool:
    return a.started < b.ended and b.started < a.ended


def test_fan_out_runs_concurrently_and_fan_in_waits_for_all():
    workflow.define("source", "x = 10")
    for k in range(3):
        workflow.define(f"variant{k}", f"import time\ntime.sleep(1.5)\nv{k} = x + {k}", after=["source"])
    workflow.define("select", "best = max(v0, v1, v2)", after=["variant0", "variant1", "variant2"])
    namespace, pictures = {}, []
    view = workflow.run(namespace, on_change=lambda picture: pictures.append(repr(picture)))
    steps = {s.name: s for s in workflow.steps()}
    assert [s.state for s in steps.values()] == ["done"] * 5 and namespace["best"] == 12
    # The DAG was redrawn while it ran: the three variants running side by side, then the fan-in running.
    assert any(all(f"variant{k} [running]" in p for k in range(3)) for p in pictures), pictures
    assert any("select [running]" in p for p in pictures) and pictures[-1] == repr(view)
    variants = [steps[f"variant{k}"] for k in range(3)]
    assert all(overlap(a, b) for a in variants for b in variants if a is not b)  # measured overlap, not just threads
    assert steps["select"].started >= max(v.ended for v in variants)
    assert [v.outputs for v in variants] == [["v0"], ["v1"], ["v2"]]  # each its own, though they shared the namespace
    assert "<svg" in view._repr_html_() and "variant2 [done] after source" in repr(view)


def test_side_by_side_trainings_leave_stdout_and_loggers_as_they_were(tmp_path, capsys):
    import logging
    import sys

    from nbscale.ingest import ingest

    ingest("digits", "nbscale:digits", label="label")
    import mlflow  # noqa: F401 - it sets its own logger's level when imported

    stdout, level = sys.stdout, logging.getLogger("mlflow").level
    code = ("from nbscale.train import train\nfit{k} = train('model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(10, "
            "activation=\"softmax\")])\\nmodel.compile(optimizer=\"adam\", loss=\"sparse_categorical_crossentropy\")', data='digits', "
            "epochs=1, scale=16.0, experiment='side-by-side')")
    for k in range(3):
        workflow.define(f"fit{k}", code.format(k=k))
    view = workflow.run({})
    assert not view.failed, repr(view)
    assert sys.stdout is stdout and logging.getLogger("mlflow").level == level  # each step's quieting was undone
    print("still visible")
    assert "still visible" in capsys.readouterr().out


def test_a_sync_step_runs_alone():
    workflow.define("slow_a", "import time\ntime.sleep(1.0)")
    workflow.define("alone", "import time\ntime.sleep(0.5)", sync=True)
    workflow.define("slow_b", "import time\ntime.sleep(1.0)")
    workflow.run({})
    steps = {s.name: s for s in workflow.steps()}
    assert not overlap(steps["alone"], steps["slow_a"]) and not overlap(steps["alone"], steps["slow_b"])


def test_memo_hits_when_nothing_changed_and_restores_the_outputs():
    workflow.define("make", "import time\ntime.sleep(0.5)\ntable = {'a': 1}", memo=True)
    workflow.define("use", "total = sum(table.values()) + 1", after=["make"], memo=True)
    first = {}
    workflow.run(first)
    assert [s.state for s in workflow.steps()] == ["done", "done"]
    again = {}  # a new namespace: what a restarted kernel has
    workflow.run(again)
    assert [s.state for s in workflow.steps()] == ["memo-hit", "memo-hit"] and again == {"table": {"a": 1}, "total": 2}
    import nbscale

    tracked = nbscale.session.mlflow().search_runs(experiment_names=["nbscale-workflow"], filter_string="tags.`nbscale.step` = 'make'")
    assert list(tracked["tags.nbscale.memo_key"]) == [workflow.steps()[0].key]  # executions are runs; memo hits add none
    workflow.define("use", "total = sum(table.values()) + 100", after=["make"], memo=True)  # its code changed
    workflow.run(again)
    assert [s.state for s in workflow.steps()] == ["memo-hit", "done"] and again["total"] == 101


def test_a_changed_parameter_reruns_the_steps_that_mention_it():
    workflow.define("pick", "source = 'fashion' if FASHION else 'digits'", memo=True)
    workflow.define("fixed", "answer = 42", memo=True)
    namespace = {"FASHION": False}
    workflow.run(namespace)
    workflow.run(namespace)
    assert {s.name: s.state for s in workflow.steps()} == {"pick": "memo-hit", "fixed": "memo-hit"}
    namespace["FASHION"] = True  # a parameter cell changed
    workflow.run(namespace)
    assert {s.name: s.state for s in workflow.steps()} == {"pick": "done", "fixed": "memo-hit"} and namespace["source"] == "fashion"
    restarted = {"FASHION": True}  # a restarted kernel that ran the parameter cell
    workflow.run(restarted)
    assert {s.name: s.state for s in workflow.steps()} == {"pick": "memo-hit", "fixed": "memo-hit"} and restarted["source"] == "fashion"


def test_a_new_dataset_version_reruns_exactly_the_steps_downstream(tmp_path):
    from nbscale.ingest import ingest

    source = tmp_path / "nums.csv"
    source.write_text("n\n1\n2\n3\n")
    ingest("nums", str(source))
    workflow.define("count", "from nbscale.ingest import dataset\nrows = dataset('nums').df.count()", memo=True)
    workflow.define("other", "constant = 7", memo=True)
    workflow.define("report", "summary = f'{rows} rows'", after=["count"], memo=True)
    namespace = {}
    workflow.run(namespace)
    assert namespace["summary"] == "3 rows"
    workflow.run(namespace)
    assert {s.name: s.state for s in workflow.steps()} == {"count": "memo-hit", "other": "memo-hit", "report": "memo-hit"}
    source.write_text("n\n1\n2\n3\n4\n")
    ingest("nums", str(source))  # nums@v2
    workflow.run(namespace)
    assert {s.name: s.state for s in workflow.steps()} == {"count": "done", "other": "memo-hit", "report": "done"}
    assert namespace["summary"] == "4 rows"


def test_a_failing_step_skips_downstream_and_keeps_upstream_results():
    workflow.define("load", "data = [1, 2, 3]")
    workflow.define("broken", "result = data[10]", after=["load"])
    workflow.define("after_broken", "final = result", after=["broken"])
    workflow.define("beside", "size = len(data)", after=["load"])
    namespace = {}
    view = workflow.run(namespace)
    states = {s.name: s.state for s in workflow.steps()}
    assert states == {"load": "done", "broken": "failed", "after_broken": "skipped", "beside": "done"}
    assert namespace["data"] == [1, 2, 3] and namespace["size"] == 3 and "final" not in namespace
    assert view.failed == ["broken"] and "broken [failed] after load" in repr(view) and "list index out of range" in repr(view)


def test_an_output_that_cannot_be_pickled_is_said_and_the_step_reruns():
    workflow.define("lock", "import threading\nguard = threading.Lock()", memo=True)
    workflow.run({})
    assert "memo cannot keep guard" in workflow.steps()[0].note
    workflow.run({})
    assert workflow.steps()[0].state == "done"


def test_bad_definitions_are_one_line():
    with pytest.raises(NbscaleError, match=r"^Step train runs after ingest, which is not defined before it"):
        workflow.define("train", "x = 1", after=["ingest"])
    workflow.define("ingest", "x = 1")
    workflow.define("train", "y = x", after=["ingest"])
    with pytest.raises(NbscaleError, match=r"^Step train runs after ingest \(pending\): run those first"):
        workflow.run_step("train", {})
    with pytest.raises(NbscaleError, match="^Step name 'a b' is not usable"):
        workflow.define("a b", "")


def test_step_magics_and_memo_across_a_kernel_restart(tmp_path):
    from kernel_client import Kernel

    env = dict(os.environ, NBSCALE_DATA_DIR=str(tmp_path / "kernel-data"))
    cell = "%%step squares --memo\nimport time\ntime.sleep(1)\nsquares = [i * i for i in range(5)]"
    for expected in ("squares [done]", "squares [memo-hit]: unchanged, skipped; restored squares"):
        with Kernel("nbscale-local", env=env) as kernel:
            ran = kernel.run(f"%load_ext nbscale\nget_ipython().run_cell({cell!r})\nprint(squares)")
            assert ran.status == "ok", ran.text()
            assert expected in ran.text() and "[0, 1, 4, 9, 16]" in ran.text()
            shown = kernel.run("%pipeline show")
            assert "squares [" in shown.text()


SEARCH = """
def build_model(hp):
    units = hp.suggest_int("units", 4, 64, log=True)
    rate = hp.suggest_float("rate", 1e-3, 3e-2, log=True)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(units, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""


@pytest.mark.timeout(900)
def test_tune_runs_trials_as_spark_tasks_under_one_parent_and_selects_the_best(ip):
    import nbscale
    from nbscale.ingest import ingest

    ingest("digits", "nbscale:digits", label="label")
    result = ip.run_cell_magic("tune", "--data digits --trials 6 --parallel 2 --epochs 2 --scale 16 --experiment search "
                                       "--register digits-tuned --alias champion -o search", SEARCH)
    assert ip.user_ns["search"] is result and len(result.trials) == 6
    assert [(t.state, t.error) for t in result.trials] == [("done", "")] * 6 and len({str(t.params) for t in result.trials}) == 6
    best = result.best
    assert best.value == max(t.value for t in result.trials) and best.value > 0.5
    client = nbscale.session.mlflow().MlflowClient()
    children = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert sorted(r.info.run_id for r in children) == sorted(t.run_id for t in result.trials)
    assert all(r.info.status == "FINISHED" and r.data.params["data"] == "digits@v1" for r in children)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["nbscale.best_run_id"] == best.run_id
    assert "digits-tuned v1" in result.registered and "@champion" in result.registered
    assert "<table>" in result._repr_html_() and f"trial {best.number}" in result._repr_html_()
    # Optuna's own pictures of the search, on the card and with the parent run.
    assert set(result.figures) == {"optimisation history", "parameter importances"}
    assert all(png.startswith(b"\x89PNG") for png in result.figures.values()) and result._repr_html_().count("<img") == 2
    logged = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"optimisation_history.png", "parameter_importances.png"} <= logged, logged


def test_a_tune_cell_without_build_model_is_one_line(ip):
    from nbscale.ingest import ingest

    ingest("digits", "nbscale:digits", label="label")
    with pytest.raises(NbscaleError, match=r"^The %%tune cell must define build_model\(hp\)"):
        ip.run_cell_magic("tune", "--data digits --trials 2", "model = None")


class Knob:
    def __init__(self, level):
        self.level = level

    def __repr__(self):
        return f"Knob({self.level})"


def _memo_cases():
    """(variable, first value, how to change it) for every kind of value a step may read."""
    import numpy as np
    import pandas as pd

    def helper_v1(x):
        return x * 10

    def helper_v2(x):
        return x * 20

    return {
        "a changed dict": ("config", lambda: {"lr": 0.1}, lambda ns: ns.update(config={"lr": 0.2})),
        "a dict changed in place": ("config", lambda: {"lr": 0.1}, lambda ns: ns["config"].update(lr=0.2)),
        "a list of dicts": ("config", lambda: [{"lr": 0.1}], lambda ns: ns["config"][0].update(lr=0.2)),
        "a list of 100+ items": ("config", lambda: list(range(150)), lambda ns: ns["config"].__setitem__(120, -1)),
        "a numpy array": ("config", lambda: np.zeros(1000), lambda ns: ns["config"].__setitem__(999, 1.0)),
        "a DataFrame": ("config", lambda: pd.DataFrame({"lr": [0.1, 0.3]}), lambda ns: ns["config"].loc.__setitem__((1, "lr"), 0.5)),
        "an object attribute": ("config", lambda: Knob(1), lambda ns: setattr(ns["config"], "level", 2)),
        "a redefined helper function": ("config", lambda: helper_v1, lambda ns: ns.update(config=helper_v2)),
    }


@pytest.mark.parametrize("case", list(_memo_cases()))
def test_memo_keys_on_the_content_of_what_a_step_reads(case):
    name, first, change = _memo_cases()[case]
    workflow.define("s", f"out = repr({name}) if not callable({name}) else {name}(1)", memo=True)
    namespace = {name: first()}
    workflow.run(namespace)
    before = namespace["out"]
    workflow.run(namespace)
    assert workflow.steps()[0].state == "memo-hit"  # unchanged: a hit
    change(namespace)
    workflow.run(namespace)
    step = workflow.steps()[0]
    assert step.state == "done", f"{case}: stale memo hit"
    assert namespace["out"] != before


def test_memo_follows_a_global_that_a_helper_reads_and_refuses_to_guess():
    namespace = {"RATE": 2}
    exec("def scaled(x):\n    return x * RATE\n", namespace)  # noqa: S102 - a notebook cell defining a helper
    workflow.define("s", "out = scaled(10)", memo=True)
    workflow.run(namespace)
    workflow.run(namespace)
    assert workflow.steps()[0].state == "memo-hit" and namespace["out"] == 20
    namespace["RATE"] = 3  # the helper's code is the same; the global it reads changed
    workflow.run(namespace)
    assert workflow.steps()[0].state == "done" and namespace["out"] == 30

    workflow.define("locked", "out2 = str(type(guard))", memo=True)
    namespace["guard"] = (n for n in range(3))  # a generator cannot be hashed: the step runs every time and says why
    workflow.run(namespace)
    workflow.run(namespace)
    step = [s for s in workflow.steps() if s.name == "locked"][0]
    assert step.state == "done" and "memo cannot hash guard" in step.note


def test_search_pictures_are_optunas_and_leave_the_notebooks_matplotlib_alone():
    import matplotlib.pyplot as plt
    import optuna

    from nbscale.workflow.tune import search_figures

    before, figures = dict(plt.rcParams), plt.get_fignums()  # an earlier test in this process may have left one open
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=1))
    study.optimize(lambda t: t.suggest_int("units", 8, 64) / 64 + t.suggest_float("lr", 1e-3, 1e-1, log=True), n_trials=6)
    drawn = search_figures(study, "val_accuracy")
    assert set(drawn) == {"optimisation history", "parameter importances"}
    assert dict(plt.rcParams) == before  # Optuna's ggplot style undone
    assert plt.get_fignums() == figures  # no figure of the search left open for an inline backend to draw again
    one = optuna.create_study()
    one.optimize(lambda t: t.suggest_int("u", 1, 2), n_trials=1)
    assert set(search_figures(one, "loss")) == {"optimisation history"}  # no importances from one trial: left out, not faked

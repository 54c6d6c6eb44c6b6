"""Distributed %%train against a real Spark standalone cluster (master + 2 workers with 2 task slots each)
started on 127.0.0.1 by `nbscale.cluster`, with real TensorFlow workers and a real MLflow store."""
import json
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, module_data_dir

import nbscale
from nbscale import cluster
from nbscale.errors import NbscaleError, SettingError
from nbscale.ingest import ingest

pytestmark = pytest.mark.slow

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""


@pytest.fixture(scope="module", autouse=True)
def standalone(tmp_path_factory):
    from nbscale.session import stop_spark

    with module_data_dir(tmp_path_factory, "distributed-data") as cfg:
        status = cluster.up(workers=2, cores=2, memory="3g", port=free_port())
        try:
            cfg.master = status.master_url
            ingest("digits", "nbscale:digits", label="label")
            ingest("tiny", "SELECT * FROM digits LIMIT 6")
            yield status
        finally:
            stop_spark()
            cluster.down()


def client():
    from nbscale.session import mlflow

    return mlflow().MlflowClient()


def runs_of(experiment: str):
    found = client().get_experiment_by_name(experiment)
    return client().search_runs([found.experiment_id]) if found else []


def steps_of(run_id: str, key: str) -> list[int]:
    return [m.step for m in client().get_metric_history(run_id, key)]


def test_the_cluster_is_real_and_reports_its_workers(standalone):
    status = cluster.status()
    assert status.running and status.cores == 4 and len(status.workers) == 2
    assert status.master_url.startswith("spark://127.0.0.1:") and "ALIVE" in status._repr_html_()
    assert cluster.up().master_url == status.master_url  # a second `up` reuses it


def test_all_reduce_on_two_workers_ends_with_the_same_weights_and_one_run():
    from nbscale.distributed import train_distributed

    cards = []
    result = train_distributed(DENSE, data="digits", workers=2, epochs=3, batch_size=32, scale=16, experiment="allreduce",
                               on_epoch=lambda p: cards.append(p.html))
    digests = {rank: json.loads(text)["digest"] for rank, text in result.digests.items()}
    assert digests[0] == digests[1]  # all-reduce kept both replicas identical
    assert result.attempts == 1 and result.history["loss"][-1] < result.history["loss"][0]
    assert result.metrics["val_accuracy"] > 0.6
    runs = runs_of("allreduce")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.run_id]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED" and parent[0].data.params["workers"] == "2"
    assert sorted(r.data.tags["nbscale.rank"] for r in children) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.metrics["peak_rss_mb"] > 100 and r.data.metrics["cpu_seconds"] > 0 for r in children)  # TF workers' system metrics
    assert steps_of(result.run_id, "loss") == [0, 1, 2]
    assert any("worker 1" in card for card in cards) and "finished" in cards[-1]
    # The trained model came back to the notebook: it predicts like the chief's weights.
    assert result.model.count_params() > 0 and result.model_uri.startswith("models:/")


def test_a_worker_killed_in_epoch_3_is_rerun_and_training_resumes_also_when_forked_from_a_preloading_daemon():
    """Here the session runs the Binder profile's cluster daemon (nbscale.distributed.preload), so each worker is
    forked from its task and shares TensorFlow's import with its peers. The kill, the rerun and the resume must go
    as with fresh processes. Fresh processes are killed and resumed the same way in test_connect; forked ones on
    another host in test_multihost.
    The daemon of RDD tasks (the cluster check's) must never load TensorFlow."""
    import psutil

    from nbscale.config import settings
    from nbscale.distributed import kill_worker, train_distributed
    from nbscale.session import stop_spark

    cfg = settings()
    saved = dict(cfg.spark_conf)
    stop_spark()  # the daemon module is an application setting: a new session takes it
    cfg.spark_conf = {**saved, "spark.python.daemon.module": "nbscale.distributed.preload"}
    runs, killed = [], []

    def kill_in_epoch_3(progress):
        # After two epochs' metrics: the first epoch's backup is surely written (a kill right after the first
        # epoch's metrics may beat its backup, and the rerun then rightly starts at epoch 1 again).
        if progress.epoch >= 2 and not killed and runs[0].job.attempts() == [0]:
            killed.append(kill_worker(runs[0].id, 1))

    try:
        result = train_distributed(DENSE, data="digits", workers=2, epochs=4, batch_size=32, scale=16, experiment="faults",
                                   on_epoch=kill_in_epoch_3, on_start=runs.append)
        daemons = {}
        for proc in psutil.process_iter():
            try:
                if "-m nbscale.distributed.preload" in " ".join(proc.cmdline()) and "preload" not in " ".join(proc.parent().cmdline()):
                    maps = Path(f"/proc/{proc.pid}/maps").read_text()
                    daemons.setdefault(bool(proc.environ().get("SPARK_SIMPLIFIED_TRACEBACK")), set()).add("libtensorflow" in maps)
            except (psutil.Error, OSError):
                continue
    finally:
        stop_spark()
        cfg.spark_conf = saved
    assert killed and result.attempts == 2
    assert steps_of(result.run_id, "loss") == [0, 1, 2, 3]  # every epoch logged once, none twice
    records = runs[0].job.epoch_metrics()
    first_try = [r["epoch"] for r in records if r["attempt"] == 0]
    retry = [r["epoch"] for r in records if r["attempt"] == 1]
    assert retry and min(retry) >= max(first_try)  # resumed from the backups: at most one epoch redone
    assert len({json.loads(t)["digest"] for t in result.digests.values()}) == 1
    assert "worker 1 died" in result.card_html and "resumed at epoch" in result.card_html
    states = runs[0].refresh().states
    assert sorted(states) == [0, 1] and all(s["tensorflow_preloaded"] for attempt in states.values() for s in attempt.values())
    assert daemons == {True: {True}, False: {False}}  # DataFrame tasks' daemon preloads TensorFlow, the RDD tasks' does not


def test_parameter_server_strategy_trains_with_chief_ps_and_worker_roles():
    from nbscale.distributed import train_distributed

    result = train_distributed(DENSE, data="digits", workers=1, strategy="parameter-server", epochs=3, batch_size=32, scale=16,
                               experiment="ps")
    assert result.history["loss"][-1] < result.history["loss"][0] and result.metrics["accuracy"] > 0.5
    roles = sorted(r.data.tags["nbscale.role"] for r in runs_of("ps") if "nbscale.role" in r.data.tags)
    assert roles == ["chief", "ps", "worker"]


def test_cancel_frees_the_cluster_within_10_seconds():
    from nbscale.distributed import train_distributed
    from nbscale.session import spark
    from nbscale.train import TrainingCancelled

    stop, runs, outcome = threading.Event(), [], {}

    def work():
        try:
            train_distributed(DENSE, data="digits", workers=2, epochs=200, batch_size=8, scale=16, experiment="cancelled",
                              stop=stop, on_start=runs.append, pool="background")
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        # Both workers training (one may still be starting when the other trains: its state has no thread count yet).
        while not (runs and runs[0].job.attempts() and len(states := runs[0].job.states(0)) == 2
                   and all(s["state"] == "training" for s in states.values())):
            assert time.monotonic() < deadline, "training did not start within 120 s"
            time.sleep(0.5)
        pids = [s["pid"] for s in states.values()]
        # Two workers on this one host: each sized its thread pools to half its cores, not all of them.
        assert [s["threads"] for s in states.values()] == [max(1, len(os.sched_getaffinity(0)) // 2)] * 2
        assert _stage_pools() == ["background"]  # the workers run in their fair-scheduler pool
        cancelled = time.monotonic()
        stop.set()
        tracker = spark().sparkContext.statusTracker()
        while tracker.getActiveStageIds() or any(_alive(pid) for pid in pids):
            assert time.monotonic() - cancelled < 10, "tasks or worker processes still running 10 s after cancel"
            time.sleep(0.2)
    finally:
        stop.set()  # a failed assertion above must not leave 200 epochs holding the cluster for the next tests
        thread.join(120)
    assert isinstance(outcome.get("error"), TrainingCancelled)
    assert [r.info.status for r in runs_of("cancelled") if "mlflow.parentRunId" not in r.data.tags] == ["KILLED"]


def test_the_workers_start_while_the_notebook_checks_the_cell_and_stop_when_it_fails():
    """The stage starts before the notebook builds the model and opens its run (the two starts overlap), and the
    workers end no epoch before the notebook says go. Here the cell fails in the notebook only, once a worker has
    trained its first epoch and waits: the cell's own error, no MLflow run, the stage and the worker processes gone within 10 s,
    and nothing an epoch end writes (metrics, backups) left behind."""
    from nbscale.config import settings
    from nbscale.distributed import train_distributed
    from nbscale.session import spark

    jobs = os.path.join(settings().data_dir, "jobs")
    before = set(os.listdir(jobs)) if os.path.isdir(jobs) else set()
    notebook_fails = f"""
import glob, json, os, time
if "TF_CONFIG" not in os.environ:  # the notebook: fail once a worker waits at its first epoch's end
    def waiting(path):
        try:
            return json.load(open(path)).get("state") == "waiting for the notebook"
        except (OSError, ValueError):
            return False
    deadline = time.monotonic() + 120
    while not any(waiting(p) for p in glob.glob({jobs!r} + "/*/attempts/0/worker-*.json")):
        if time.monotonic() > deadline:
            raise TimeoutError("no worker reached its first epoch's end")
        time.sleep(0.2)
    raise ValueError("only in the notebook")
""" + DENSE
    with pytest.raises(ValueError, match="^only in the notebook$"):  # the cell's own error, as a cell run here raises it
        train_distributed(notebook_fails, data="digits", workers=2, epochs=50, batch_size=32, scale=16, experiment="abandoned")
    failed = time.monotonic()
    assert runs_of("abandoned") == []
    (job,) = [os.path.join(jobs, name) for name in set(os.listdir(jobs)) - before]
    states = [json.load(open(os.path.join(job, "attempts", "0", name))) for name in os.listdir(os.path.join(job, "attempts", "0"))
              if name.startswith("worker-") and name.endswith(".json")]
    assert len(states) == 2 and all("ready_at" in s for s in states), states  # both workers had started
    tracker = spark().sparkContext.statusTracker()
    while tracker.getActiveStageIds() or any(_alive(s["pid"]) for s in states):
        assert time.monotonic() - failed < 10, "tasks or worker processes still running 10 s after the cell failed"
        time.sleep(0.2)
    assert os.path.exists(os.path.join(job, "abandoned")) and not os.path.exists(os.path.join(job, "go"))
    assert not os.path.exists(os.path.join(job, "metrics.jsonl"))  # the epoch that ended was held at the gate


def _stage_pools() -> list[str]:
    import urllib.request

    from nbscale.session import spark

    sc = spark().sparkContext
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/stages?status=active"
    return [stage["schedulingPool"] for stage in json.load(urllib.request.urlopen(url, timeout=10))]


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"


def test_an_error_in_the_workers_is_one_line_and_not_retried():
    from nbscale.distributed import train_distributed

    failing = "import os\nif 'TF_CONFIG' in os.environ:\n    raise ValueError('only on workers')\n" + DENSE
    with pytest.raises(NbscaleError) as error:
        train_distributed(failing, data="digits", workers=2, epochs=2, batch_size=32, scale=16, experiment="broken")
    message = str(error.value)
    assert "\n" not in message and "only on workers" in message and "after 1 attempt(s)" in message
    assert [r.info.status for r in runs_of("broken") if "mlflow.parentRunId" not in r.data.tags] == ["FAILED"]


@pytest.mark.parametrize("options, expected", [
    (dict(data="digits", workers=5), "needs 5 task slots at once"),
    (dict(data="digits", workers=1, strategy="parameter-server", parameter_servers=3), "needs 5 task slots at once"),
    (dict(data="tiny", workers=8, validation=0.0, batch_size=8), "too few rows for 8 workers"),
    (dict(data="digits", workers=2, strategy="horovod"), "--strategy 'horovod'"),
    (dict(data="digits", workers=2, batch_size=1), "--batch-size 1 is the global batch"),
    (dict(data="digits", workers=2, gpus_per_worker=1), "Spark cannot give tasks GPUs here"),
])
def test_bad_input_is_one_line_and_leaves_no_running_run(options, expected):
    from nbscale.distributed import train_distributed

    before = len(runs_of("bad"))
    started = time.monotonic()
    with pytest.raises(NbscaleError) as error:
        train_distributed(DENSE, scale=16, experiment="bad", **options)
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert len(runs_of("bad")) == before  # refused before any MLflow run was created
    assert time.monotonic() - started < 30


def test_a_pool_over_spark_connect_is_refused_before_anything_starts(settings):
    from nbscale.distributed import train_distributed

    settings.master = "sc://127.0.0.1:15002"  # nothing listens there: the refusal comes before any connection
    with pytest.raises(NbscaleError, match=r"^--pool fast does not run over Spark Connect yet \(sc://127.0.0.1:15002\)"):
        train_distributed(DENSE, data="digits", workers=2, scale=16, experiment="bad", pool="fast")


def test_an_unreachable_master_is_one_line(settings):
    from nbscale.distributed import train_distributed

    settings.master = f"spark://127.0.0.1:{free_port()}"
    with pytest.raises(SettingError, match="nothing answers"):
        train_distributed(DENSE, data="digits", workers=2, scale=16, experiment="bad")


def test_a_second_launch_in_the_same_session_works_with_the_default_model_and_the_cells_callbacks():
    from nbscale.distributed import train_distributed

    first = train_distributed("", data="digits", workers=2, epochs=1, batch_size=64, scale=16, experiment="twice")
    cell = DENSE + ("callbacks = [keras.callbacks.EarlyStopping(monitor='loss', patience=0, min_delta=100)]\n"
                    "fit_kwargs = {'class_weight': {c: 0.0 for c in range(10)}}\n")
    second = train_distributed(cell, data="digits", workers=2, epochs=6, batch_size=64, scale=16, experiment="twice")
    assert first.run_id != second.run_id and second.attempts == 1
    params = nbscale.session.mlflow().MlflowClient().get_run(first.run_id).data.params
    assert params["model"] == "nbscale default" and "BatchNormalization" in first.model.layers[0].__class__.__name__
    # Both workers stop after the second epoch (the same all-reduced loss), and weights of 0 make every loss 0.
    assert second.history["loss"] == [0.0, 0.0], second.history


def test_the_launch_form_shows_the_equivalent_cell_and_launches_it(ip):
    from nbscale.jobs import background

    ip.user_ns["hidden"] = 32
    form = ip.run_line_magic("launch", "--data digits --workers 2")
    form.code.value = DENSE.replace("Dense(32", "Dense(hidden")  # the form's cell sees notebook variables too
    form.epochs.value, form.batch_size.value, form.scale.value, form.experiment.value = 2, 32, 16.0, "launched"
    assert form.options().train_line() == ("%%train --data digits --workers 2 --epochs 2 --batch-size 32 --scale 16 "
                                           "--experiment launched --background")
    assert "--epochs 2" in form.line.value
    form.strategy.value = "parameter-server"
    form.ps.value = 2
    assert "--strategy parameter-server --ps 2 --epochs 2" in form.line.value
    form.strategy.value = "multiworker"
    before = {job.id for job in background.jobs()}
    form.launch_button.click()
    assert "Launched as job" in form.message.value, form.message.value
    job = next(job for job in background.jobs() if job.id not in before)
    listing = ip.run_line_magic("jobs", "").data  # %jobs while it runs
    assert f"<td>{job.id}</td>" in listing and "--workers 2" in listing and "running" in listing, listing
    assert "kill JOB RANK" in ip.find_line_magic("jobs").__doc__  # what %jobs? shows
    job.wait(300)
    assert job.state == "finished", job.error
    assert "finished on 2 workers" in form.card.value and job.result.workers == 2
    # What the nbscale panel gets: the job, and a log link the server can read inside the data dir.
    from nbscale import state
    from nbscale.server import views

    (published,) = [j for j in state.jobs_now() if j["id"] == job.id]
    assert published["state"] == "finished" and published["log"].endswith("worker-0.log")
    assert views.log_tail(published["log"])["text"]
    with pytest.raises(NbscaleError, match="No dataset 'nope'"):
        ip.run_line_magic("launch", "--data nope")


def test_a_job_that_finds_the_slots_busy_says_it_waits_then_runs():
    from nbscale.distributed import train_distributed
    from nbscale.session import spark

    def hold_a_slot(rows):
        time.sleep(25)
        yield from rows

    sc = spark().sparkContext
    busy = threading.Thread(target=lambda: (sc.setJobGroup("hold", "holding slots"),
                                            spark().range(0, 3, 1, 3).mapInPandas(hold_a_slot, "id long").collect()))
    busy.start()
    deadline = time.monotonic() + 30
    while sum(sc.statusTracker().getStageInfo(s).numActiveTasks for s in sc.statusTracker().getActiveStageIds()) < 3:
        assert time.monotonic() < deadline, "the slot-holding job did not start"
        time.sleep(0.2)
    cards = []
    result = train_distributed(DENSE, data="digits", workers=2, epochs=1, batch_size=64, scale=16, experiment="waits",
                               on_epoch=lambda p: cards.append(p.html))
    busy.join()
    assert any("waiting for 2 free task slots" in card for card in cards)
    assert result.attempts == 1 and "finished" in cards[-1]

def test_the_cancel_button_on_a_background_jobs_card_stops_it(ip):
    from nbscale.jobs import background

    ip.run_cell_magic("train", "--data digits --workers 2 --epochs 500 --batch-size 8 --scale 16 --experiment card --background", DENSE)
    job = background.jobs()[-1]
    deadline = time.monotonic() + 120
    while not (job.handle and job.handle.job.attempts() and job.handle.job.states(0)):
        assert time.monotonic() < deadline and job.state == "running", job.error
        time.sleep(0.5)
    assert job.view.kill_button.layout.display != "none"  # a distributed job's card offers "kill a worker"
    job.view.cancel_button.click()
    job.wait(60)
    assert job.state == "cancelled" and "cancelled" in job.view.message.value
    assert [r.info.status for r in runs_of("card") if "mlflow.parentRunId" not in r.data.tags] == ["KILLED"]

def test_resume_after_a_cancel_continues_the_same_run():
    from nbscale.distributed import train_distributed
    from nbscale.train import TrainingCancelled

    stop = threading.Event()

    def stop_after_first_epoch(progress):
        if progress.epoch >= 1:
            stop.set()

    with pytest.raises(TrainingCancelled):
        train_distributed(DENSE, data="digits", workers=2, epochs=3, batch_size=32, scale=16, experiment="resumed",
                          on_epoch=stop_after_first_epoch, stop=stop)
    killed = [r for r in runs_of("resumed") if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in killed] == ["KILLED"]
    result = train_distributed(DENSE, data="digits", workers=2, epochs=3, batch_size=32, scale=16, experiment="resumed", resume=True)
    assert result.run_id == killed[0].info.run_id and client().get_run(result.run_id).info.status == "FINISHED"
    assert steps_of(result.run_id, "loss") == [0, 1, 2]

def test_elastic_a_lost_machine_leaves_fewer_workers_that_resume():
    """Last in this module: it kills one of the cluster's two Spark workers."""
    from nbscale.distributed import train_distributed

    runs, killed = [], []

    def lose_a_machine(progress):
        if progress.epoch >= 1 and not killed:
            killed.append(True)
            cluster.kill_worker(2)

    result = train_distributed(DENSE, data="digits", workers=4, min_workers=2, epochs=3, batch_size=64, scale=16, experiment="elastic",
                               on_epoch=lose_a_machine, on_start=runs.append)
    assert killed and result.workers == 2 and result.attempts >= 2
    assert steps_of(result.run_id, "loss") == [0, 1, 2]
    assert "continuing on 2 of 4 workers" in result.card_html
    assert cluster.status().cores == 2

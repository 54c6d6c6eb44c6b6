"""nbscale on a real multi-host Spark standalone cluster: two hosts built from network namespaces
(`tests/cluster/hosts.py`), each with its own address and private /tmp, sharing only the network and
one folder (the "shared mount"); the notebook is this process at its own address on the bridge.

Started once for the module. Needs root: where the namespaces cannot be built, the tests fail (never skip)."""
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cluster.hosts import Hosts
from conftest import restored_settings

import nbscale
from nbscale.errors import NbscaleError

pytestmark = pytest.mark.slow

DENSE = """
model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
SEARCH = """
def build_model(hp):
    units = hp.suggest_int("units", 4, 32, log=True)
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
"""
VENV_BIN = str(Path(sys.executable).parent)


@pytest.fixture(scope="module")
def hosts():
    from nbscale.session import stop_spark

    with restored_settings(), Hosts(2, cores=2, memory="3g") as built:
        try:
            yield built
        finally:
            stop_spark()  # before the hosts go, and before the settings come back


@pytest.fixture(scope="module")
def connected(hosts):
    """`%nbscale connect --master spark://HOST:7077 --data-dir /shared/...` with no --host, on hosts that run the
    preloading Python daemon (what a cluster of small hosts sets, as Binder's profile does): every distributed
    worker here is forked on its host from a process that imported TensorFlow once. Fresh worker processes are
    trained, killed and resumed in test_distributed and test_connect."""
    from nbscale.config import settings

    cfg = settings()  # (restored with the hosts)
    cfg.spark_conf = {**cfg.spark_conf, "spark.python.daemon.module": "nbscale.distributed.preload"}
    started = time.monotonic()
    card = nbscale.connect(master=hosts.master_url, data_dir=str(hosts.shared / "data"))
    return card, time.monotonic() - started


def runs_of(experiment: str):
    client = nbscale.session.mlflow().MlflowClient()
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def test_connect_without_host_routes_the_driver_to_the_cluster_and_checks_every_host(hosts, connected):
    from nbscale.clustercheck import last_check
    from nbscale.session import spark

    card, seconds = connected
    conf = spark().sparkContext.getConf()
    assert conf.get("spark.driver.host") == hosts.notebook_ip  # not 127.0.0.1: the interface that routes to the master
    check = last_check()
    assert sorted(h["host"] for h in check.hosts) == sorted(h.ip for h in hosts.hosts)
    assert all(h["data_dir"] and h["cores"] == 2 and h["python"] for h in check.hosts) and not check.problems
    text = repr(card)
    assert "2 host(s), 4 executor cores" in text and hosts.hosts[1].ip in text and "sees the data dir" in text
    assert f"Spark driver {hosts.notebook_ip}" in text and "127.0.0.1 (model servers)" in text
    assert seconds < 120


def test_ingest_reads_shared_files_there_and_stages_notebook_only_files(hosts, connected, tmp_path):
    from nbscale.ingest import ingest

    rows = "a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40))
    shared = hosts.shared / "inbox" / "shared.csv"
    shared.parent.mkdir()
    shared.write_text(rows + "1,2,3,4\n")  # one long row: quarantined
    first = ingest("pairs", str(shared), label="label")
    assert first.dataset.ref == "pairs@v1"
    assert first.manifest["counts"] == {"read": 41, "loaded": 40, "quarantined": 1}, first.manifest["counts"]
    assert first.dataset.quarantine.count() == 1
    assert not any("staged" in n for n in first.manifest.get("notes", []))  # every host sees it: read in place

    local = tmp_path / "only-here.csv"  # the notebook's private /tmp: no host sees it
    local.write_text(rows)
    assert hosts.hosts[0].run("test", "-e", str(local)).returncode == 1
    second = ingest("pairs", str(local), label="label")
    assert second.dataset.ref == "pairs@v2" and second.manifest["counts"]["loaded"] == 40
    assert any("staged into the shared data dir" in n for n in second.manifest["notes"])
    assert not list((hosts.shared / "data" / "staging").glob("*.part"))
    third = ingest("pairs", shared.as_uri(), label="label")  # a URI goes to Spark's filesystem layer unchanged
    assert third.dataset.ref == "pairs@v3" and third.manifest["counts"]["quarantined"] == 1
    assert not any("staged" in n for n in third.manifest.get("notes", []))


def test_single_node_training_reads_what_the_executors_wrote(hosts, connected):
    from nbscale.ingest import ingest
    from nbscale.train import train

    ingest("digits", "nbscale:digits", label="label")
    result = train(DENSE, data="digits", epochs=2, batch_size=64, scale=16, experiment="mh-single")
    assert result.metrics["val_accuracy"] > 0.5
    assert [r.info.status for r in runs_of("mh-single")] == ["FINISHED"]


def test_all_reduce_with_one_worker_per_host(hosts, connected):
    from nbscale.distributed import train_distributed

    runs = []
    result = train_distributed(DENSE, data="digits", workers=2, epochs=3, batch_size=32, scale=16, experiment="mh-allreduce",
                               on_start=runs.append)
    states = runs[0].job.states(0)
    assert sorted(s["host"] for s in states.values()) == sorted(h.ip for h in hosts.hosts)  # one worker per host
    assert [s["threads"] for s in states.values()] == [len(os.sched_getaffinity(0))] * 2  # alone on its host: all its cores
    digests = {json.loads(t)["digest"] for t in result.digests.values()}
    assert len(digests) == 1 and result.metrics["val_accuracy"] > 0.5
    assert sorted(r.info.status for r in runs_of("mh-allreduce")) == ["FINISHED"] * 3  # parent + one child per worker


def test_parameter_server_across_hosts(hosts, connected):
    from nbscale.distributed import train_distributed

    runs = []
    result = train_distributed(DENSE, data="digits", workers=1, strategy="parameter-server", epochs=2, batch_size=32, scale=16,
                               experiment="mh-ps", on_start=runs.append)
    states = runs[0].job.states(0)
    assert sorted(s["role"] for s in states.values()) == ["chief", "ps", "worker"]
    assert len({s["host"] for s in states.values()}) == 2  # 3 tasks on 2 hosts of 2 slots: both hosts take part
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert all(r.info.status == "FINISHED" for r in runs_of("mh-ps"))


def test_a_worker_killed_on_the_other_host_is_rerun_and_resumes(hosts, connected):
    from nbscale.distributed import kill_worker, train_distributed

    runs, killed = [], []

    def kill_in_epoch_2(progress):
        if progress.epoch >= 1 and not killed and runs[0].job.attempts() == [0]:
            killed.append(runs[0].job.states(0)[1]["host"])
            kill_worker(runs[0].id, 1)

    result = train_distributed(DENSE, data="digits", workers=2, epochs=4, batch_size=32, scale=16, experiment="mh-faults",
                               on_epoch=kill_in_epoch_2, on_start=runs.append)
    assert killed and result.attempts == 2
    assert killed[0] != runs[0].job.states(0)[0]["host"]  # the killed worker ran on the other host
    states = runs[0].refresh().states
    assert all(s["tensorflow_preloaded"] for attempt in states.values() for s in attempt.values())  # forked on each host, rerun too
    assert len({json.loads(t)["digest"] for t in result.digests.values()}) == 1
    assert [r.info.status for r in runs_of("mh-faults") if "mlflow.parentRunId" not in r.data.tags] == ["FINISHED"]


def test_cancel_frees_every_host_within_10_seconds(hosts, connected):
    from nbscale.distributed import train_distributed
    from nbscale.session import spark
    from nbscale.train import TrainingCancelled

    stop, runs, outcome = threading.Event(), [], {}

    def work():
        try:
            train_distributed(DENSE, data="digits", workers=2, epochs=200, batch_size=8, scale=16, experiment="mh-cancel",
                              stop=stop, on_start=runs.append)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not (runs and runs[0].job.attempts() and all(s["state"] == "training" for s in runs[0].job.states(0).values())
                   and len(runs[0].job.states(0)) == 2):
            assert time.monotonic() < deadline, "training did not start within 120 s"
            time.sleep(0.5)
        workers = {s["host"]: s["pid"] for s in runs[0].job.states(0).values()}
        assert len(workers) == 2
        cancelled = time.monotonic()
        stop.set()
        tracker = spark().sparkContext.statusTracker()
        # The hosts share this machine's pid space (only network and mounts are their own): a pid is a process on that host.
        while tracker.getActiveStageIds() or any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                                                 for pid in workers.values()):
            assert time.monotonic() - cancelled < 10, "tasks or worker processes still running on a host 10 s after cancel"
            time.sleep(0.2)
    finally:
        stop.set()  # a failed assertion above must not leave 200 epochs holding the hosts for the next tests
        thread.join(120)
    assert isinstance(outcome.get("error"), TrainingCancelled)
    assert [r.info.status for r in runs_of("mh-cancel") if "mlflow.parentRunId" not in r.data.tags] == ["KILLED"]


def test_score_tune_and_serve_a_model_trained_on_the_cluster(hosts, connected):
    from nbscale import serving
    from nbscale.ingest import dataset
    from nbscale.serving.score import score
    from nbscale.workflow.tune import tune

    search = tune(SEARCH, data="digits", trials=2, parallel=2, epochs=1, scale=16, experiment="mh-tune",
                  register="mh-digits", alias="champion")
    assert [(t.state, t.error) for t in search.trials] == [("done", "")] * 2
    parent = nbscale.session.mlflow().MlflowClient().get_run(search.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in runs_of("mh-tune"))

    scored = score("mh-digits@champion", data="digits")
    assert scored.manifest["counts"]["loaded"] == dataset("digits").manifest["counts"]["loaded"]
    frame = scored.to_pandas(None)
    assert (frame["prediction"] == frame["label"]).mean() > 0.5

    service = serving.serve("mh-digits@champion")
    try:
        assert service.url.startswith("http://127.0.0.1:")  # serving stays on loopback unless asked
        pixels = frame.drop(columns=["label", "prediction", "probabilities"])[:4]  # raw rows, by name: the model scales them
        answer = serving.predict("mh-digits", pixels)
        assert np.asarray(answer).shape == (4, 10)
    finally:
        serving.stop("mh-digits")


def test_an_unreachable_notebook_fails_in_one_line_within_its_bounded_wait(hosts, connected, settings):
    from nbscale.session import active_spark

    settings.executor_wait = 20  # the default 60 s wait, shortened: the same code path and message
    started = time.monotonic()
    with pytest.raises(NbscaleError) as failure:
        nbscale.connect(master=hosts.master_url, host="127.0.0.1")  # an address no host can reach back
    assert time.monotonic() - started < 50
    message = str(failure.value)
    assert "\n" not in message and "No executor registered within 20 s" in message
    assert "cannot reach this notebook at 127.0.0.1:" in message and "--host" in message
    assert active_spark() is None  # nothing left waiting
    assert settings.host != "127.0.0.1" or not settings.host_was_chosen()  # the old settings came back


@pytest.mark.parametrize("hidden, expected", [
    ("python", "cannot run Python at " + VENV_BIN + "/python"),
    ("petastorm", "lack petastorm (installed here)"),
])
def test_a_host_without_the_notebooks_environment_is_one_line(hidden, expected, settings):
    """A host that lacks the venv's Python, or one package of the stack: one line naming the host and the fix."""
    import petastorm

    path = VENV_BIN if hidden == "python" else str(Path(petastorm.__file__).parent)
    with Hosts(1, cores=1, memory="1g", hide={1: [path]}) as broken:
        assert broken.hosts[0].run("test", "-e", path + ("/python" if hidden == "python" else "/__init__.py")).returncode == 1
        started = time.monotonic()
        with pytest.raises(NbscaleError) as failure:
            nbscale.connect(master=broken.master_url, data_dir=str(broken.shared / "data"))
        message = str(failure.value)
        assert "\n" not in message and broken.hosts[0].ip in message and expected in message, message
        assert "spark.archives" in message  # the fix names how to ship the environment
        assert time.monotonic() - started < 90
    from nbscale.session import active_spark

    assert active_spark() is None


def test_the_multi_host_tutorial_runs_under_nbval_on_the_cluster(hosts):
    """notebooks/10-multi-host.ipynb in a real kernel against this cluster, outputs compared by nbval."""
    import subprocess

    from conftest import ROOT
    from nbscale.session import stop_spark

    stop_spark()  # a standalone app takes every free core: this process's session would starve the notebook's

    env = dict(os.environ, NBSCALE_CLUSTER_MASTER=hosts.master_url, NBSCALE_SHARED_DIR=str(hosts.shared / "tutorial"),
               NBSCALE_DATA_DIR=str(hosts.shared / "tutorial-local"))
    # --noconftest: the suite's conftest drops NBSCALE_CLUSTER_MASTER (a developer's own must not leak into tests).
    done = subprocess.run([sys.executable, "-m", "pytest", "--noconftest", "-p", "nbval", "--nbval", "-q", "--nbval-sanitize-with",
                           str(ROOT / "tests" / "nbval-sanitize.cfg"), str(ROOT / "notebooks" / "10-multi-host.ipynb")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


def test_a_job_on_a_cluster_that_lost_every_worker_says_it_waits_within_seconds(hosts, connected):
    """Last of the shared cluster's tests: it kills both workers (the master stays)."""
    from nbscale.jobs.progress import ProgressWatcher
    from nbscale.session import spark

    sc = spark().sparkContext
    hosts.kill_worker(1)
    hosts.kill_worker(2)
    deadline = time.monotonic() + 30
    while hosts.workers() and time.monotonic() < deadline:  # the master notices the lost workers
        time.sleep(0.5)
    seen, outcome = [], {}

    def job():
        sc.setJobGroup("mh-starved", "a job with no executor", interruptOnCancel=True)
        try:
            with ProgressWatcher(sc, "mh-starved", seen.append, interval=0.5):
                spark().range(0, 1000, 1, 4).count()
        except BaseException as exc:  # noqa: BLE001 - cancelled below
            outcome["error"] = exc

    thread = threading.Thread(target=job)
    started = time.monotonic()
    thread.start()
    while not any(p.waiting for p in seen):
        assert time.monotonic() - started < 15, f"no 'waiting' word in the progress within 15 s: {seen[-1:]}"
        time.sleep(0.2)
    assert "waiting for executors" in [p.waiting for p in seen if p.waiting][0]
    sc.cancelJobGroup("mh-starved")
    thread.join(30)
    assert not thread.is_alive() and "error" in outcome  # cancelling ends the wait


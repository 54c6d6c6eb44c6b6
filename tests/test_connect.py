"""A laptop outside the cluster: nbscale over Spark Connect (`sc://`), on the real multi-host bed.

The cluster is two network-namespace hosts (`tests/cluster/hosts.py`) with a Spark Connect server on host 1,
started from the project's own PySpark. The "laptop" is a real Jupyter kernel in the root network namespace
whose mount namespace hides the whole test bed — the shared mount included — under an empty tmpfs: the
notebook and the cluster share nothing but the Connect endpoint. The test process itself sees the shared
folder, and checks there what the cluster wrote.

Needs root, like the multi-host tests: where the namespaces cannot be built, the tests fail (never skip)."""
import json
import os
import queue
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cluster.hosts import Hosts
from kernel_client import Kernel

pytestmark = pytest.mark.slow

# A query the cluster works on for hours (sha2 keeps Spark from shortcutting the count).
ENDLESS = "SELECT id, id % 2 AS label FROM range(0, 100000000000, 1, 4) WHERE sha2(cast(id AS string), 256) <> ''"
MODEL = """
model = keras.Sequential([keras.Input(shape=(1,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2, activation="softmax")])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
"""
PAIR_MODEL = MODEL.replace("shape=(1,)", "shape=(2,)")
PAIRS = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,10,0\nbad,row\n"


@pytest.fixture(scope="module")
def cluster():
    with Hosts(2, cores=2, memory="2g") as hosts:
        hosts.connect_url = hosts.start_connect()
        yield hosts


@pytest.fixture(scope="module")
def laptop(cluster, tmp_path_factory):
    """A kernel that cannot see the cluster's disk (the test bed's folder is an empty tmpfs for it)."""
    home = tmp_path_factory.mktemp("laptop-home")  # ~/.nbscale/connect: the laptop's MLflow store, caches, checkpoints
    with Kernel("nbscale-local", env=dict(os.environ, HOME=str(home)), prefix=hidden_disk(cluster)) as kernel:
        kernel.files = tmp_path_factory.mktemp("laptop")  # the laptop's own files (its /tmp is not the hosts')
        kernel.home = home
        yield kernel


def ok(kernel, code: str, timeout: float = 300) -> str:
    done = kernel.run(code, timeout=timeout)
    assert done.status == "ok", done.text()
    return done.text()


def error_line(kernel, code: str, timeout: float = 300) -> str:
    done = kernel.run(code, timeout=timeout)
    error = done.error()
    assert done.status == "error" and error is not None, done.text()
    message = f"{error['ename']}: {error['evalue']}"
    assert "\n" not in error["evalue"] and "Traceback" not in error["evalue"] and "java." not in error["evalue"], message
    return message


@pytest.fixture(scope="module")
def connected(cluster, laptop):
    data = cluster.shared / "data"
    started = time.monotonic()
    card = ok(laptop, f"%nbscale connect --master {cluster.connect_url} --data-dir {data}")
    return card, time.monotonic() - started


def test_connect_checks_the_cluster_hosts_and_the_laptop_sees_none_of_its_disk(cluster, laptop, connected):
    card, seconds = connected
    assert "2 host(s) ran the check's tasks" in card and "Spark Connect server" in card, card
    assert all(host.ip in card for host in cluster.hosts) and "sees the data dir" in card and "does NOT" not in card, card
    assert ok(laptop, f"import os\nprint(os.path.exists({str(cluster.shared)!r}))").strip() == "False"
    assert seconds < 180


def test_a_laptop_file_is_uploaded_and_published_by_the_cluster(cluster, laptop, connected):
    source = laptop.files / "pairs.csv"
    source.write_text(PAIRS)
    text = ok(laptop, f"%%ingest pairs --label label\n{source}")
    assert "read 6 = loaded 5 + quarantined 1" in text and "uploaded through Spark Connect" in text, text
    version = cluster.shared / "data" / "datasets" / "pairs" / "v1"
    manifest = json.loads((version / "manifest.json").read_text())  # written on the cluster, read here through the shared folder
    assert manifest["counts"] == {"read": 6, "loaded": 5, "quarantined": 1}
    assert sum(pq.read_table(f).num_rows for f in (version / "data").glob("*.parquet")) == 5
    assert manifest["source"].startswith(str(cluster.shared / "data" / "staging"))  # the uploaded copy on the cluster
    assert not list((cluster.shared / "data" / "datasets" / "pairs").glob(".staging-*"))


def test_the_next_version_reports_progress_and_reads_back_through_spark(laptop, connected):
    source = laptop.files / "pairs.csv"
    source.write_text(PAIRS + "11,12,1\n")
    out = ok(laptop, "from nbscale.ingest import ingest, dataset, datasets\n"
                     "seen = []\n"
                     f"result = ingest('pairs', {str(source)!r}, label='label', progress=seen.append)\n"
                     "last = seen[-1]\n"
                     "print(result.dataset.ref, dataset('pairs').df.count(), len(seen), last.finished, last.tasks_done == last.tasks_total > 0)\n"
                     "print(sorted(row['dataset'] for row in datasets()))")
    first, listed = out.strip().splitlines()[-2:]
    ref, rows, updates, finished, complete = first.split()
    assert (ref, rows, finished, complete) == ("pairs@v2", "6", "True", "True") and int(updates) >= 1, out
    assert listed == "['pairs@v1', 'pairs@v2']"


def test_a_cluster_path_is_read_there(cluster, laptop, connected):
    inbox = cluster.shared / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "more.csv").write_text("x,label\n1,0\n2,1\n3,0\n")
    text = ok(laptop, f"%%ingest more --label label\n{inbox / 'more.csv'}")
    assert "read 3 = loaded 3 + quarantined 0" in text and "uploaded" not in text, text
    manifest = json.loads((cluster.shared / "data" / "datasets" / "more" / "v1" / "manifest.json").read_text())
    assert manifest["source"] == str(inbox / "more.csv")


def test_bad_input_and_work_connect_cannot_do_yet_are_one_line(cluster, laptop, connected):
    before = sorted(p.name for p in (cluster.shared / "data" / "datasets").iterdir())
    assert "No file matches '/nowhere/at/all.csv'" in error_line(laptop, "%%ingest ghost\n/nowhere/at/all.csv")
    assert "--gpus-per-worker does not run over Spark Connect yet" in error_line(
        laptop, f"%%train --data more --epochs 1 --workers 2 --gpus-per-worker 1\n{MODEL}")
    assert "%%tune over Spark Connect needs an MLflow tracking server the cluster reaches" in error_line(
        laptop, "%%tune --data pairs --trials 1\nx = 1")  # the laptop's store is its own SQLite file here
    assert "%pool does not run over Spark Connect yet" in error_line(laptop, "%pool")
    assert "%score over Spark Connect needs an MLflow tracking server" in error_line(laptop, "%score pairs-model@champion --data pairs")
    images = laptop.files / "pictures"
    (images / "cat").mkdir(parents=True)
    (images / "cat" / "one.png").write_bytes(b"not really")
    assert "--format images is not available over Spark Connect yet" in error_line(laptop, f"%%ingest pictures\n{images}")
    assert sorted(p.name for p in (cluster.shared / "data" / "datasets").iterdir()) == before  # nothing half-written


def test_train_on_the_laptop_from_a_split_the_cluster_wrote_and_connect_pulled(cluster, laptop, connected):
    out = ok(laptop, "import nbscale\nfrom nbscale.train import train\n"
                     f"result = train({MODEL!r}, data='more', epochs=3, batch_size=1, validation=0.0)\n"
                     "run = nbscale.session.mlflow().get_run(result.run_id)\n"
                     "print(run.info.status, run.data.params['train_rows'], sorted(result.metrics))", timeout=600)
    status, rows, metrics = out.strip().splitlines()[-1].split(" ", 2)
    assert (status, rows) == ("FINISHED", "3") and "accuracy" in metrics, out
    assert (laptop.home / ".nbscale" / "connect" / "mlflow.db").is_file()  # the run is in the laptop's own store
    assert "more@v1" in ok(laptop, f"%%train --data more --epochs 1 --batch-size 1 --validation 0\n{MODEL}", timeout=600)  # the magic too
    splits = list((cluster.shared / "data" / "cache" / "splits" / "more").glob("v1-*/split.json"))  # written on the cluster
    assert len(splits) == 1 and json.loads(splits[0].read_text())["train"] == 3


def laptop_runs(laptop, code: str, timeout: float = 300) -> str:
    """`code` in the laptop kernel with `client`, an MLflow client of the laptop's own store."""
    return ok(laptop, "import nbscale\nclient = nbscale.session.mlflow().MlflowClient()\n" + code, timeout)


def test_distributed_training_runs_on_the_cluster_resumes_after_a_killed_worker_and_its_card_follows(cluster, laptop, connected):
    """The barrier stage runs on the cluster's hosts; the laptop's card and MLflow runs come from the job folder,
    read through Spark: the workers reach neither the laptop nor its MLflow store. `%jobs kill` reaches a worker
    through the same folder; Spark reruns the stage and training resumes from the backups on the cluster."""
    inbox = cluster.shared / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "nums.csv").write_text("a,b,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(400)))
    assert "loaded 400" in ok(laptop, f"%%ingest nums --label label\n{inbox / 'nums.csv'}")
    out = laptop_runs(laptop, "import json, time\nfrom nbscale.distributed import kill_worker, train_distributed\n"
                              "seen, runs, killed = [], [], []\n"
                              "def follow(p):\n"
                              "    seen.append((time.time(), p.epoch, p.html))\n"
                              "    if p.epoch >= 2 and not killed:  # after two epochs' metrics the first backup is surely written\n"
                              "        killed.append(kill_worker(runs[0].id, 1))\n"
                              f"result = train_distributed({PAIR_MODEL!r}, data='nums', workers=2, epochs=5, batch_size=4, validation=0.0,\n"
                              "    experiment='connect-dist', on_start=runs.append, on_epoch=follow)\n"
                              "parent = client.get_run(result.run_id)\n"
                              "children = client.search_runs([parent.info.experiment_id], \"tags.`mlflow.parentRunId` = '%s'\" % result.run_id)\n"
                              "print(parent.info.status, len(client.get_metric_history(result.run_id, 'loss')), sorted(c.info.status for c in children))\n"
                              "print(result.job_dir, result.attempts, len({json.loads(d)['digest'] for d in result.digests.values()}), max(e for _, e, _ in seen))\n"
                              "print(any('epoch' in c and 'worker' in c for _, _, c in seen), result.model_uri)\n"
                              "print('resumed at epoch' in result.card_html and 'died' in result.card_html)", timeout=600)
    first, second, third, fourth = out.strip().splitlines()[-4:]
    assert first == "FINISHED 5 ['FINISHED', 'FINISHED']", out  # parent: one loss per epoch, none twice; one child run per worker
    job_dir, attempts, digests, last_epoch = second.split()
    assert (attempts, digests, last_epoch) == ("2", "1", "5"), out  # rerun once, the workers agree on the weights, every epoch shown
    states = [json.loads(p.read_text()) for p in (Path(job_dir) / "attempts" / "1").glob("worker-*.json")]  # the cluster's own folder
    assert sorted(s["host"] for s in states) == sorted(h.ip for h in cluster.hosts)  # one worker per host
    records = [json.loads(line) for line in (Path(job_dir) / "metrics.jsonl").read_text().splitlines()]
    first_try, retry = [r["epoch"] for r in records if r["attempt"] == 0], [r["epoch"] for r in records if r["attempt"] == 1]
    assert retry and min(retry) >= max(first_try), records  # resumed from the backups: at most one epoch redone
    assert third.startswith("True ") and "/" in third, out  # the live card showed worker progress; the model is logged on the laptop
    assert fourth == "True", out  # the card tells the attempt story
    predicted = ok(laptop, f"import mlflow, pandas as pd\nanswer = mlflow.pyfunc.load_model({third.split()[1]!r}).predict("
                           "pd.DataFrame({'b': [2.0], 'a': [1.0]}))\nprint(list(answer.columns), len(answer['probabilities'][0]))")
    assert predicted.strip().splitlines()[-1] == "['prediction', 'probabilities'] 2"  # raw columns by name, any order


def test_interrupting_distributed_training_frees_every_host_and_marks_the_run_killed(cluster, laptop, connected):
    laptop.client.execute(f"%%train --data nums --workers 2 --epochs 500 --batch-size 2 --validation 0\n{PAIR_MODEL}")
    jobs = cluster.shared / "data" / "jobs"
    before = set(jobs.iterdir()) if jobs.is_dir() else set()
    deadline = time.monotonic() + 180
    states: list = []
    while len([s for s in states if s.get("state") == "training"]) < 2:
        assert time.monotonic() < deadline, "the distributed training did not start within 180 s"
        time.sleep(0.5)
        new = [j for j in jobs.iterdir() if j not in before] if jobs.is_dir() else []
        states = [json.loads(p.read_text() or "{}") for j in new for p in (j / "attempts" / "0").glob("worker-*.json")]
    pids = [s["pid"] for s in states]
    laptop.manager.interrupt_kernel()
    interrupted = time.monotonic()
    try:
        # The hosts share this machine's pid space: a pid is a worker process on its host.
        while running_jobs(cluster) or any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                                           for pid in pids):
            assert time.monotonic() - interrupted < 10, "jobs or worker processes still running 10 s after the interrupt"
            time.sleep(0.2)
    finally:
        reply = laptop.client.get_shell_msg(timeout=60)  # the cell's end, read whatever happened: the next test starts clean
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    statuses = laptop_runs(laptop, "exp = client.get_experiment_by_name('nbscale')\n"
                                   "print(sorted(r.info.status for r in client.search_runs([exp.experiment_id]) if r.data.params.get('workers')))")
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses


SEARCH = PAIR_MODEL.replace("model = keras", "def build_model(hp):\n    model = keras").replace(
    "\nmodel.compile", "\n    model.compile").replace("Dense(8,", "Dense(hp.suggest_int('units', 2, 16),") + "    return model\n"


def test_tune_and_score_over_connect_with_a_tracking_server_both_sides_reach(cluster, laptop, connected):
    """With a real `mlflow server --serve-artifacts` on a cluster host, trials train and log on the executors and the
    executors load the registered model to score: the laptop reaches the server, the cluster reaches it too."""
    tracking = cluster.start_mlflow()
    try:
        ok(laptop, f"%nbscale connect --master {cluster.connect_url} --data-dir {cluster.shared / 'data'} --tracking-uri {tracking}")
        out = ok(laptop, "%%tune --data nums --trials 2 --parallel 2 --epochs 1 --batch-size 4 --register nums-model --alias champion "
                         f"-o search\n{SEARCH}", timeout=600)
        assert "best: trial" in out and "nums-model" in out, out
        states = ok(laptop, "print(sorted(t.state for t in search.trials))").strip().splitlines()[-1]
        assert states == "['done', 'done']", out
        scored = ok(laptop, "%score nums-model@champion --data nums", timeout=300)
        assert "nums_scored@v1" in scored, scored
        table = pq.read_table(cluster.shared / "data" / "datasets" / "nums_scored" / "v1" / "data")  # written by the cluster
        assert table.num_rows == 400 and set(table.column("prediction").to_pylist()) <= {0, 1}
        runs = laptop_runs(laptop, "print(sorted({r.info.status for r in client.search_runs([client.get_experiment_by_name('nbscale-tune')"
                                   ".experiment_id])}))")
        assert runs.strip().splitlines()[-1] == "['FINISHED']", runs  # the parent and both trials, on the server
    finally:  # the later tests use the laptop's own store again
        ok(laptop, f"%nbscale connect --master {cluster.connect_url} --data-dir {cluster.shared / 'data'}")


def running_jobs(cluster) -> list:
    """The Connect server's running Spark jobs, from its driver's REST API (as the Spark UI shows them). The UI
    answers late when the two cores are busy with the other xdist worker's module: that is not the cluster's state."""
    base = f"http://{cluster.hosts[0].ip}:4040/api/v1/applications"
    with urllib.request.urlopen(base, timeout=20) as page:  # noqa: S310 - the test bed's own driver
        (app,) = json.load(page)
    with urllib.request.urlopen(f"{base}/{app['id']}/jobs?status=running", timeout=20) as page:  # noqa: S310
        return json.load(page)


def wait_for_a_running_job(cluster, laptop, msg_id: str, tag: str, within: float = 240) -> float:
    """Seconds until the cell `msg_id` has a job tagged `tag` running on the cluster (its checks of the data dir
    run short jobs first). Fails with what the cell printed if it ends first, or with every job the driver knows of
    if none runs in time (the two cores may be busy with the other xdist worker's module: the wait is generous, the
    assertions after it are what the test is about)."""
    started, printed = time.monotonic(), []
    while time.monotonic() - started < within:
        if any(tag in job_tag for job in running_jobs(cluster) for job_tag in job.get("jobTags", [])):
            return time.monotonic() - started
        try:
            msg = laptop.client.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            printed.append((msg["msg_type"], msg["content"]))
            assert msg["msg_type"] != "status" or msg["content"]["execution_state"] != "idle", f"the cell ended first: {printed}"
    raise AssertionError(f"no job tagged {tag} ran on the cluster within {within:.0f} s; the driver's jobs: {all_jobs(cluster)}; "
                         f"the cell printed: {printed}")


def all_jobs(cluster) -> list:
    base = f"http://{cluster.hosts[0].ip}:4040/api/v1/applications"
    with urllib.request.urlopen(base, timeout=20) as page:  # noqa: S310 - the test bed's own driver
        (app,) = json.load(page)
    with urllib.request.urlopen(f"{base}/{app['id']}/jobs", timeout=20) as page:  # noqa: S310
        return [(job["jobId"], job["status"], job.get("jobTags"), job.get("submissionTime"), job.get("completionTime"))
                for job in json.load(page)]


def test_an_interrupt_frees_the_cluster_within_10_seconds(cluster, laptop, connected):
    waited = wait_for_a_running_job(cluster, laptop, laptop.client.execute(f"%%ingest endless\n{ENDLESS}"), "nbscale-ingest-endless-")
    print(f"the ingest's job ran on the cluster {waited:.1f} s after the cell was sent")
    laptop.manager.interrupt_kernel()
    interrupted = time.monotonic()
    while running_jobs(cluster) and time.monotonic() - interrupted < 30:
        time.sleep(0.5)
    freed = time.monotonic() - interrupted
    assert not running_jobs(cluster) and freed < 10, f"jobs still running {freed:.1f} s after the interrupt"
    # The cell ends as an interrupt; the next cell works and nothing was published.
    reply = laptop.client.get_shell_msg(timeout=60)
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    assert not (cluster.shared / "data" / "datasets" / "endless").exists() or not list(
        (cluster.shared / "data" / "datasets" / "endless").glob("v*"))
    assert ok(laptop, "import nbscale\nprint(nbscale.spark().range(5).count())").strip() == "5"


def test_a_server_gone_mid_cell_is_one_line_and_the_next_cell_works_once_it_is_back(cluster, laptop, connected):
    wait_for_a_running_job(cluster, laptop, laptop.client.execute(f"%%ingest vanishing\n{ENDLESS}"), "nbscale-ingest-vanishing-")
    cluster.stop_connect()
    try:
        gone = time.monotonic()
        reply = laptop.client.get_shell_msg(timeout=180)["content"]
        waited = time.monotonic() - gone
    finally:
        cluster.connect_url = cluster.start_connect()  # whatever happened: the next tests need the server
    assert reply["status"] == "error" and "the Spark Connect server does not answer" in reply["evalue"], reply
    assert "\n" not in reply["evalue"] and waited < 90, (waited, reply["evalue"])
    assert ok(laptop, "import nbscale\nprint(nbscale.spark().range(5).count())").strip() == "5"
    assert "pairs@v1" in ok(laptop, "print([row['dataset'] for row in nbscale.ingest.datasets()])")


def hidden_disk(cluster) -> list[str]:
    """A command prefix: what follows runs in a mount namespace where the whole test bed is an empty tmpfs."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=1m nbscale-not-shared "$0" && exec "$@"', str(cluster.base)]


def test_the_connect_tutorial_runs_under_nbval_from_a_laptop(cluster, tmp_path):
    """notebooks/11-laptop-connect.ipynb in a real kernel that sees none of the cluster's disk, outputs compared by nbval."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    inbox = cluster.shared / "tutorial-inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "more.csv").write_text("x1,x2,label\n1,2,0\n3,4,1\n")
    env = dict(os.environ, NBSCALE_CONNECT_URL=cluster.connect_url, NBSCALE_CLUSTER_DATA_DIR=str(cluster.shared / "tutorial"),
               NBSCALE_CLUSTER_FILE=str(inbox / "more.csv"), HOME=str(tmp_path))
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([*hidden_disk(cluster), sys.executable, "-m", "pytest", "--noconftest", "-p", "nbval", "--nbval", "-q",
                           "--nbval-sanitize-with", str(ROOT / "tests" / "nbval-sanitize.cfg"),
                           str(ROOT / "notebooks" / "11-laptop-connect.ipynb")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
    assert json.loads((cluster.shared / "tutorial" / "datasets" / "pairs" / "v1" / "manifest.json").read_text())["counts"]["loaded"] == 400

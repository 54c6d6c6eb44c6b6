"""The pure logic under the services, tested on its own in milliseconds (no JVM, no processes): routing
weights, shard routing, path containment, error lines, memo keys, events."""
import os
from collections import Counter

import pytest

from nbscale import events
from nbscale.errors import NbscaleError, first_useful_line
from nbscale.server.views import inside
from nbscale.serving.front import Front, shard_of, shard_rows
from nbscale.workflow.memo import fingerprint


def front(weights: dict) -> Front:
    return Front({"name": "m", "secret": "s", "sides": [{"label": label, "weight": w, "replicas": [f"http://r-{label}"]}
                                                       for label, w in weights.items()]})


def test_weighted_routing_is_exact_and_the_others_are_fallbacks():
    routing = front({"v1": 90, "v2": 10})
    picks = [routing.pick() for _ in range(100)]
    assert Counter(order[0].label for order in picks) == {"v1": 90, "v2": 10}  # smooth round robin: exact, not random
    assert all(sorted(s.label for s in order) == ["v1", "v2"] for order in picks)
    assert [routing.pick()[0].label for _ in range(10)].count("v2") == 1  # spread, not bunched
    drained = front({"v1": 100, "v2": 0})
    assert {drained.pick()[0].label for _ in range(20)} == {"v1"}


def test_shard_rows_routes_each_key_to_one_shard_and_keeps_row_order():
    payload = {"dataframe_split": {"columns": ["user", "x"], "data": [["a", 1], ["b", 2], ["a", 3]]}}
    groups, columns, order = shard_rows(payload, "user", 4)
    assert columns == ["x"] and sorted(p for positions in order.values() for p in positions) == [0, 1, 2]
    assert groups[shard_of("a", 4)][:2] == [[1], [3]] and shard_of("a", 4) == shard_of("a", 4)
    records = shard_rows({"dataframe_records": [{"user": "a", "x": 1}]}, "user", 4)
    assert records[1] == ["x"]
    with pytest.raises(ValueError, match="no column 'user'"):
        shard_rows({"dataframe_split": {"columns": ["x"], "data": [[1]]}}, "user", 2)
    with pytest.raises(ValueError, match="send dataframe_split or dataframe_records"):
        shard_rows({"inputs": [[1]]}, "user", 2)


def test_paths_stay_inside_their_root(tmp_path):
    root = tmp_path / "data"
    (root / "datasets").mkdir(parents=True)
    (tmp_path / "data-other").mkdir()
    os.symlink(tmp_path / "data-other", root / "link")
    assert inside(root, "datasets") == (root / "datasets").resolve()
    for bad, says in (("/etc/passwd", "relative"), ("../data-other", "'..'"), ("link/x", "outside"), ("a" * 300, "too long"),
                      ("", "relative"), ("C:/x", "relative")):
        with pytest.raises(NbscaleError, match=says):
            inside(root, bad)


def test_a_java_error_becomes_its_first_useful_line():
    text = ("An error occurred while calling o42.csv.\n"
            "org.apache.spark.sql.AnalysisException: [PATH_NOT_FOUND] Path does not exist:\n"
            "  file:/tmp/nothing.csv. SQLSTATE: 42K03\n"
            "\tat org.apache.spark.sql.errors.QueryCompilationErrors$.dataPathNotExistError(QueryCompilationErrors.scala:1)\n")
    assert first_useful_line(text) == "AnalysisException: [PATH_NOT_FOUND] Path does not exist: file:/tmp/nothing.csv. SQLSTATE: 42K03"
    assert len(first_useful_line("x" * 1000)) == 300 and first_useful_line("") == "unknown error"


def test_memo_keys_follow_content_not_identity():
    config = {"lr": 0.1}
    before = fingerprint(config)
    config["lr"] = 0.2  # changed in place: same object, another key
    assert fingerprint(config) != before and fingerprint({"lr": 0.2}) == fingerprint(config)

    def helper(x):
        return x * 2

    def changed(x):
        return x * 3

    assert fingerprint(helper) != fingerprint(changed)


def test_events_reach_their_subscribers_once_in_order():
    heard = []

    def first(**details):
        heard.append(("first", details))
        return "moved"

    def second(**details):
        heard.append(("second", details))

    events.subscribe("test-topic", first)
    events.subscribe("test-topic", first)  # twice is once
    events.subscribe("test-topic", second)
    assert events.emit("test-topic", name="m") == ["moved"]  # None results are dropped
    assert heard == [("first", {"name": "m"}), ("second", {"name": "m"})]
    assert events.emit("nobody-listens") == []


def test_recorded_traffic_stays_within_its_bound_and_each_line_is_one_record(tmp_path):
    import json

    from nbscale.serving.traffic import TrafficLog

    log = TrafficLog(str(tmp_path), max_bytes=20_000)
    request = json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1.5, 2], [3, 4]]}}, indent=1).encode()  # with newlines
    for _ in range(400):
        log.add("digits v3", request, b'{"predictions": [{"prediction": 1}]}', 2.5)
        if len(log.pending) == 50:
            log.flush()
    log.flush()
    folder = tmp_path / "digits" / "v3"
    held = sum(p.stat().st_size for p in folder.glob("*.jsonl"))
    assert 0 < held <= 20_000
    records = [json.loads(line) for p in folder.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert records and all(r["request"]["dataframe_split"]["data"] == [[1.5, 2], [3, 4]] and r["latency_ms"] == 2.5 for r in records)
    log.add("digits v3", b"x" * (1 << 21), b"{}", 1.0)  # too large to record: counted, not kept
    assert log.dropped == 1 and log.pending == []


def test_drift_statistics_see_a_moved_distribution_and_not_a_resample():
    import numpy as np

    from nbscale.drift.stats import shift

    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    same, moved = shift("x", reference, rng.normal(0, 1, 500)), shift("x", reference, rng.normal(1, 1, 500))
    assert same.test == "KS" and same.psi < 0.1 and same.p_value > 0.01
    assert moved.psi > 0.5 and moved.p_value < 1e-10
    classes = shift("c", rng.integers(0, 3, 3000), np.full(300, 2))
    assert classes.test == "chi2" and classes.psi > 1 and classes.p_value < 1e-10
    assert shift("k", np.zeros(100), np.zeros(50)).psi == 0  # constant and unchanged: nothing to report


def test_a_contract_builds_named_rows_from_arrays_frames_and_one_row():
    import pandas as pd

    from nbscale.serving.contract import InputContract

    contract = InputContract(("a", "b"))
    assert contract.body([[1, 2], [3, 4]]) == {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.0]]}}
    assert contract.body([5, 6])["dataframe_split"]["data"] == [[5.0, 6.0]]  # one row as a 1-D list
    assert contract.body(pd.DataFrame({"b": [2], "a": [1]}))["dataframe_split"]["columns"] == ["b", "a"]  # names travel with values
    with pytest.raises(NbscaleError, match=r"^The rows have 3 values where this model takes 2 columns \(a, b\)"):
        contract.body([[1, 2, 3]])
    with pytest.raises(NbscaleError, match=r"^The rows have no column b: this model takes a, b"):
        contract.body(pd.DataFrame({"a": [1]}))
    image = InputContract(("image",), vector=True)
    assert image.body([[0, 255, 3, 4]])["dataframe_split"] == {"columns": ["image"], "data": [[[0.0, 255.0, 3.0, 4.0]]]}
    assert InputContract(None).body([[0.5, 0.25]]) == {"inputs": [[0.5, 0.25]]}  # an older model: bare scaled rows


def test_promote_reads_how_long_the_canary_runs():
    from nbscale.promote import parse_for

    assert parse_for("200 requests") == (200, None) and parse_for("1 request") == (1, None) and parse_for("50") == (50, None)
    assert parse_for("10m") == (None, 600.0) and parse_for("90s") == (None, 90.0) and parse_for("1.5h") == (None, 5400.0)
    for bad in ("0 requests", "soon", "10 minutes", "-5m", ""):
        with pytest.raises(NbscaleError, match=r"^--for .*(as requests \(--for 200 requests\) or time|at least 1 request)"):
            parse_for(bad)


def test_promote_scores_both_versions_on_the_same_rows_in_order(monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from nbscale.promote import same_rows

    class Doubler(BaseHTTPRequestHandler):  # answers each row with 2 * its x: the order of the answers is checkable
        sizes = []

        def do_POST(self):
            split = json.loads(self.rfile.read(int(self.headers["content-length"])))["dataframe_split"]
            Doubler.sizes.append(len(split["data"]))
            x = split["columns"].index("x")
            body = json.dumps({"predictions": [{"prediction": 2 * row[x]} for row in split["data"]]}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    def record(columns, rows, answers):
        return {"request": {"dataframe_split": {"columns": columns, "data": rows}}, "response": {"predictions": answers}}

    # three requests, two column orders (sent in separate groups), one without the label column (not labelled)
    records = [record(["x", "y"], [[1, 1], [2, 4], [3, 6]], [1, 4, 0]), record(["x", "y"], [[4, 8]], [8]),
               record(["y", "x"], [[10, 5], [None, 6]], [10, 12]), record(["x"], [[7]], [14])]
    labelled = same_rows.labelled_requests(records, "y")
    assert labelled.truth == [1, 4, 6, 8, 10, None] and labelled.answers == [1, 4, 0, 8, 10, 12] and len(labelled.frames) == 3
    assert same_rows.quality(labelled.truth, labelled.answers, "classification") == (5, 0.8)
    assert same_rows.quality([1.0, 3.0], [2.0, 1.0], "regression") == (2, 1.5)
    monkeypatch.setattr(same_rows, "REPLAY_ROWS_PER_REQUEST", 3)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Doubler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        assert same_rows.answers_from(url, labelled.frames) == [2, 4, 6, 8, 10, 12] and Doubler.sizes == [3, 1, 2]
        # the champion served `labelled` (5 rows with a truth), the canary one row: both versions scored on those 6
        canary = same_rows.labelled_requests([record(["x", "y"], [[9, 18]], [0])], "y")
        compared = same_rows.compare(labelled, canary, url, url, "classification")
        # champion: its own 1,4,0,8,10 (+ None row dropped) and 18 replayed on the canary's row; canary: 2,4,6,8,10 replayed and its own 0
        assert (compared.rows, compared.champion, compared.canary) == (6, 5 / 6, 4 / 6)
    finally:
        server.shutdown()


def test_recorded_traffic_is_sampled_at_the_share_asked(tmp_path):
    import random

    from nbscale.serving.traffic import TrafficLog

    random.seed(1)
    none, half = TrafficLog(str(tmp_path / "a"), 1 << 20, sample=0.0), TrafficLog(str(tmp_path / "b"), 1 << 20, sample=0.5)
    for _ in range(1000):
        none.add("m v1", b"{}", b"{}", 1.0)
        half.add("m v1", b"{}", b"{}", 1.0)
    assert none.pending == [] and 400 < len(half.pending) < 600


def test_written_facts_reads_exact_rows_and_nulls_from_footers_and_leaves_the_unknown_to_spark(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nbscale.ingest.profile import written_facts

    table = pa.table({"a": [1, None, 3], "b": ["x", None, None], "v": [[1.0], None, [2.0, None]], "c.d": [1, 2, None],
                      "s": [{"x": 1}, None, {"x": None}]})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "p1.parquet", row_group_size=2)
    pq.write_table(table, tmp_path / "data" / "p2.parquet")
    (tmp_path / "quarantine").mkdir()
    pq.write_table(table.slice(0, 2), tmp_path / "quarantine" / "q.parquet")
    facts = written_facts(str(tmp_path / "data"), str(tmp_path / "quarantine"))
    assert facts["rows"] == 6 and facts["quarantined"] == 2
    assert facts["shards"] == [{"file": "p1.parquet", "rows": 3, "row_groups": 2}, {"file": "p2.parquet", "rows": 3, "row_groups": 1}]
    assert facts["nulls"] == {"a": 2, "b": 4, "c.d": 2}  # a dotted name is one column; lists and structs are Spark's to count
    pq.write_table(table, tmp_path / "data" / "p3.parquet", write_statistics=False)
    assert set(written_facts(str(tmp_path / "data"), None)["nulls"].values()) == {None}  # a file without statistics: counted by Spark


def test_epoch_ticks_label_the_first_and_last_epochs_without_crowding():
    from nbscale.train.card import epoch_ticks

    assert epoch_ticks(1) == [1] and epoch_ticks(8) == list(range(1, 9))
    assert epoch_ticks(20) == [1, 5, 10, 15, 20] and epoch_ticks(100) == [1, 20, 40, 60, 80, 100]
    for epochs in (11, 19, 37, 333, 5000, 12345):
        ticks = epoch_ticks(epochs)
        assert ticks[0] == 1 and ticks == sorted(set(ticks)) and len(ticks) <= 11, (epochs, ticks)
        assert ticks[-1] <= epochs and epochs - ticks[-1] < ticks[2] - ticks[1], (epochs, ticks)  # the end is labelled or near


def test_the_progress_bar_fills_once_per_job_and_counts_the_jobs_done_so_far():
    from types import SimpleNamespace

    from nbscale.jobs.progress import ProgressWatcher
    from nbscale.widgets.progress import ProgressBar

    stages = {1: SimpleNamespace(numTasks=4, numCompletedTasks=4, numActiveTasks=0, name="count at x"),
              2: SimpleNamespace(numTasks=8, numCompletedTasks=2, numActiveTasks=3, name="parquet at y")}
    jobs = {10: SimpleNamespace(status="SUCCEEDED", stageIds=[1]), 11: SimpleNamespace(status="RUNNING", stageIds=[2])}
    tracker = SimpleNamespace(getJobIdsForGroup=lambda group: list(jobs), getJobInfo=jobs.get, getStageInfo=stages.get)
    watcher = ProgressWatcher(SimpleNamespace(statusTracker=lambda: tracker, master="local[2]"), "g", lambda state: None)
    state = watcher.poll()
    assert (state.tasks_done, state.tasks_total, state.running_tasks_done, state.running_tasks_total) == (6, 12, 2, 8)
    bar = ProgressBar("ingest x")
    bar.update(state)
    assert (bar.bar.value, bar.bar.max) == (2, 8)  # this job's tasks, not 6 of a total that grows with each job
    assert bar.label.value.startswith("job 2: 2/8 tasks · parquet · 1 job(s) done so far"), bar.label.value


def test_each_training_option_is_declared_once_and_reaches_every_command():
    """%%train's flags, %%tune's share of them and the launcher's line all come from TrainOptions/ClusterOptions."""
    import dataclasses
    import inspect

    from IPython.core.magic_arguments import parse_argstring

    from nbscale.magics.train import TrainMagics
    from nbscale.magics.workflow import WorkflowMagics
    from nbscale.train.options import ClusterOptions, TrainOptions, from_args
    from nbscale.workflow.tune import TUNE_DEFAULTS

    train_magic, tune_magic = TrainMagics.train, WorkflowMagics.tune
    args = parse_argstring(train_magic, "--data d --epochs 3 --ps 2 --resume --precision float32 --min-workers 1")
    assert from_args(TrainOptions, args) == TrainOptions(data="d", epochs=3, resume=True, precision="float32")
    assert from_args(ClusterOptions, args) == ClusterOptions(parameter_servers=2, min_workers=1)
    tuned = from_args(TrainOptions, parse_argstring(tune_magic, "--data d --seed 7"), TrainOptions(**TUNE_DEFAULTS))
    assert (tuned.epochs, tuned.batch_size, tuned.experiment, tuned.seed) == (3, 64, "nbscale-tune", 7)
    assert "--resume" not in tune_magic.__doc__ and "--precision" not in tune_magic.__doc__  # trials train afresh
    with pytest.raises(Exception, match="--data"):
        parse_argstring(train_magic, "--epochs 3")
    # No flag of the option model is spelled out again in the two magics or the form.
    from nbscale.widgets import launcher

    flags = {f"\"--{f.name.replace('_', '-')}\"" for group in (TrainOptions, ClusterOptions) for f in dataclasses.fields(group)}
    for code in (inspect.getsource(train_magic), inspect.getsource(tune_magic), inspect.getsource(launcher)):
        assert "@argument(" in code or "LaunchForm" in code  # the decorators are in what is read
        assert [flag for flag in flags if flag in code] == [], code[:200]


def test_the_equivalent_train_line_shows_what_differs_from_the_defaults():
    from nbscale.train.options import ClusterOptions, TrainOptions, train_line

    assert train_line(TrainOptions(data="d"), ClusterOptions()) == "%%train --data d"
    assert train_line(TrainOptions(data="d", scale=16.0, label="y", resume=True), ClusterOptions(workers=2, pool="p"), background=True) \
        == "%%train --data d --workers 2 --pool p --label y --scale 16 --resume --background"
    assert "--ps" not in train_line(TrainOptions(data="d"), ClusterOptions(workers=2, parameter_servers=3))  # all-reduce has none
    assert "--strategy parameter-server --ps 3" in train_line(TrainOptions(data="d"),
                                                              ClusterOptions(workers=2, strategy="parameter-server", parameter_servers=3))


def test_library_calls_refuse_an_option_no_command_has():
    from nbscale.train import train
    from nbscale.workflow.tune import tune

    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        train("model = None", data="d", epoch=3)
    with pytest.raises(NbscaleError, match="--data NAME"):
        train("model = None")
    with pytest.raises(NbscaleError, match="resume is for %%train"):
        tune("", data="d", resume=True)


def test_a_model_version_label_is_read_back_in_one_place():
    from nbscale.contracts import ModelVersion

    model = ModelVersion("fashion v2 cnn", 12)  # a name may itself contain " v"
    assert model.label == "fashion v2 cnn v12" and str(model) == model.label
    assert ModelVersion.from_label(model.label) == model
    for bad in ("digits", "digits vx", " v3", "digits v"):
        with pytest.raises(ValueError, match="not a model version label"):
            ModelVersion.from_label(bad)


def test_ui_links_go_through_the_jupyter_server_only_when_it_proxies_them(monkeypatch):
    """A kernel its server told where UIs are proxied links them there and publishes the port for the server; any
    other kernel links the UI as it is and publishes nothing. A stopped UI is no longer published."""
    from nbscale import uilinks

    monkeypatch.delenv(uilinks.PREFIX_VARIABLE, raising=False)
    assert uilinks.browser_url("http://127.0.0.1:4040", "spark", page="jobs/") == "http://127.0.0.1:4040"
    assert uilinks.published() == []
    monkeypatch.setenv(uilinks.PREFIX_VARIABLE, "/user/ann/nbscale/ui/")
    assert uilinks.browser_url("http://127.0.0.1:4040", "spark", page="jobs/") == "/user/ann/nbscale/ui/4040/jobs/"
    assert uilinks.browser_url("http://10.1.2.3:5001/", "mlflow") == "/user/ann/nbscale/ui/5001/"
    assert uilinks.browser_url("https://mlflow.example.org/", "mlflow") == "https://mlflow.example.org/"  # not ours to proxy
    try:
        assert uilinks.published() == [{"kind": "mlflow", "host": "10.1.2.3", "port": 5001}, {"kind": "spark", "host": "127.0.0.1", "port": 4040}]
        uilinks.forget("mlflow")
        assert [ui["kind"] for ui in uilinks.published()] == ["spark"]
    finally:
        uilinks.forget("spark")
        uilinks.forget("mlflow")


def test_the_replica_runtime_variable_is_the_one_the_model_code_reads():
    """compiled_keras is logged with each model and cannot import nbscale: it spells the variable itself."""
    from nbscale import limits
    from nbscale.train.pyfunc import MODEL_CODE

    assert f'RUNTIME_VARIABLE = "{limits.REPLICA_RUNTIME_VARIABLE}"' in MODEL_CODE.read_text()


def test_a_bounded_cluster_check_is_cancelled_when_it_outlives_its_wait_or_the_cell_is_interrupted():
    """An interrupt inside a thread's join can leave the thread looking stopped (CPython 3.11): the check must
    cancel its Spark work all the same, not leave it running behind the cell."""
    import signal
    import threading

    from nbscale import clustercheck
    from nbscale.errors import SparkStartError

    def checked(timeout):
        release, cancelled = threading.Event(), []
        run = lambda: clustercheck._in_thread(lambda: release.wait(30), timeout, start=lambda: None, end=lambda: None,  # noqa: E731
                                              cancel=lambda: cancelled.append(1) or release.set(), too_late="too late")
        return run, cancelled

    run, cancelled = checked(0.2)
    with pytest.raises(SparkStartError, match="too late"):
        run()
    assert cancelled == [1]
    run, cancelled = checked(30)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            run()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert cancelled == [1]
    assert clustercheck._in_thread(lambda: 7, 5, start=lambda: None, end=lambda: None, cancel=lambda: None, too_late="") == 7


def test_waiting_on_a_background_job_after_an_interrupted_wait_still_waits_for_its_end():
    """%jobs wait interrupted once must not make the next wait return at once while the job still runs."""
    import signal
    import threading

    from nbscale.jobs import background

    release = threading.Event()
    job = background.start("test", "waits for its release", lambda job: release.wait(30) and "done")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            job.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert job.state == "running"
    threading.Timer(0.5, release.set).start()
    try:
        assert job.wait(30).state == "finished" and job.result == "done"
    finally:
        release.set()
        with background._lock:  # this process's other tests list the kernel's jobs
            background._jobs.pop(job.id)

"""In a real kernel: the live progress bar, and interrupts that cancel Spark jobs and mark MLflow runs KILLED."""
import json
import os
import time
import urllib.request

import pytest
from kernel_client import Kernel

pytestmark = pytest.mark.slow


def own_data_dir(tmp_path) -> dict:
    """The kernel's environment with a data dir of its own: its datasets must not meet the notebooks'."""
    return dict(os.environ, NBSCALE_DATA_DIR=str(tmp_path / "data"))


def spark_time(text: str) -> float:
    """A time from Spark's REST API ("2026-12-02T03:00:00.123GMT") as seconds since the epoch."""
    from datetime import datetime

    return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def test_interrupt_cancels_the_jobs_and_keeps_the_session(tmp_path):
    big = tmp_path / "big.csv"
    with open(big, "w") as f:
        f.write("id,a,b,c\n")
        for start in range(0, 3_000_000, 100_000):
            f.write("".join(f"{i},{i * 3},{i % 7},x{i % 11}\n" for i in range(start, start + 100_000)))
    with Kernel("nbscale-local", env=own_data_dir(tmp_path)) as kernel:
        ui = kernel.run("import nbscale; spark = nbscale.spark(); print(spark.sparkContext.uiWebUrl)").text().strip()
        app = json.load(urllib.request.urlopen(f"{ui}/api/v1/applications", timeout=10))[0]["id"]
        msg_id = kernel.client.execute(f"%%ingest big\n{big}")
        # Interrupt while the ingest's Spark job runs (asked of the Spark UI's REST API).
        jobs_url = f"{ui}/api/v1/applications/{app}/jobs"
        deadline = time.monotonic() + 60
        while not (running := json.load(urllib.request.urlopen(f"{jobs_url}?status=running", timeout=10))):
            assert time.monotonic() < deadline, "the ingest started no Spark job within 60 s"
            time.sleep(0.2)
        started, interrupted_at = time.monotonic(), time.time()
        kernel.manager.interrupt_kernel()
        reply = kernel.client.get_shell_msg(timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kernel.client.get_shell_msg(timeout=60)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt", reply["content"].get("evalue")
        assert time.monotonic() - started < 30
        # The job that was running was cancelled by Spark, not left to run to its end (unless it ended on its own
        # before the interrupt was sent: on a loaded machine the poll above can see a job in its last moment).
        job_id = running[0]["jobId"]
        for _ in range(50):
            job = json.load(urllib.request.urlopen(f"{jobs_url}/{job_id}", timeout=10))
            if job["status"] != "RUNNING":
                break
            time.sleep(0.2)
        assert job["status"] == "FAILED" or (job["status"] == "SUCCEEDED" and spark_time(job["completionTime"]) <= interrupted_at), job
        # ...and no job of the ingest ran on, or started and finished, after the interrupt.
        after = [j for j in json.load(urllib.request.urlopen(jobs_url, timeout=10)) if spark_time(j["submissionTime"]) > interrupted_at]
        assert all(j["status"] == "FAILED" for j in after), after
        check = kernel.run(
            "import time\n"
            "for _ in range(40):\n"
            "    if not spark.sparkContext.statusTracker().getActiveJobsIds(): break\n"
            "    time.sleep(0.25)\n"
            "from nbscale.ingest import store\n"
            "print(spark.sparkContext.statusTracker().getActiveJobsIds(), store.versions('big'),\n"
            "      [p.name for p in (store.root() / 'big').glob('.staging-*')] if (store.root() / 'big').exists() else [],\n"
            "      spark.range(5).count())"
        )
        assert check.text().strip() == "[] [] [] 5"


def test_progress_bar_shows_while_spark_runs_and_leaves_no_trace(tmp_path):
    source = tmp_path / "rows.csv"
    source.write_text("a,b\n" + "".join(f"{i},{i % 5}\n" for i in range(300_000)))
    with Kernel("nbscale-local", env=own_data_dir(tmp_path)) as kernel:
        done = kernel.run(f"%%ingest rows --label b\n{source}")
        assert done.status == "ok", done.text()
        kinds = [(kind, content) for kind, content in done.outputs if kind in ("display_data", "update_display_data")]
        placeholder = kinds[0][1]
        display_id = placeholder["transient"]["display_id"]
        assert kinds[0][0] == "display_data" and placeholder["data"] == {"text/plain": ""}
        updates = [c for k, c in kinds[1:] if c["transient"]["display_id"] == display_id]
        assert updates[0]["data"]["text/plain"].startswith("Starting Spark for this session")  # the first Spark cell says why it waits
        assert any("application/vnd.jupyter.widget-view+json" in c["data"] for c in updates)
        assert updates[-1]["data"] == {"text/plain": ""}  # removed once the card is there
        result = next(c for k, c in done.outputs if k == "execute_result")
        assert "rows@v1: read 300000 = loaded 300000 + quarantined 0" in result["data"]["text/plain"]


def test_interrupting_training_marks_the_run_killed(tmp_path):
    code = ("%%train --data digits --epochs 400 --batch-size 16 --scale 16 --experiment interrupted\n"
            "model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(10, activation='softmax')])\n"
            "model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])\n")
    with Kernel("nbscale-local", env=own_data_dir(tmp_path)) as kernel:
        assert kernel.run("%ingest digits nbscale:digits --label label").status == "ok"
        msg_id = kernel.client.execute(code)
        # Bounded waits, generous: before its first epoch the cell imports TensorFlow and writes the split,
        # minutes on a loaded 2-core machine.
        deadline = time.monotonic() + 300
        while True:  # interrupt once the live card shows a finished epoch
            msg = kernel.client.get_iopub_msg(timeout=300)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "update_display_data" \
                    and "epoch 1/400" in msg["content"]["data"].get("text/html", ""):
                break
            assert time.monotonic() < deadline, "no epoch finished within 300 s"
        kernel.manager.interrupt_kernel()
        reply = kernel.client.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kernel.client.get_shell_msg(timeout=120)
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        status = kernel.run("import nbscale\nruns = nbscale.session.mlflow().search_runs(experiment_names=['interrupted'])\n"
                            "print(list(runs['status']))")
        assert status.text().strip() == "['KILLED']"

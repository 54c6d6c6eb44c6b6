"""A data dir on a read-only mount can be read, not written (each write refused in one line); a full disk
says so and keeps the previous version. Real mounts (a read-only bind mount, a small tmpfs), real kernels."""
import os
import random
import subprocess
from pathlib import Path

import pytest
from kernel_client import Kernel

pytestmark = pytest.mark.slow

SMALL = "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n"


@pytest.fixture
def mounts():
    """mount(...) for the test; every mount is undone afterwards (we run as root, as CI does)."""
    made = []

    def mount(*args: str, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(target)], check=True)
        made.append(target)
        return target

    yield mount
    for target in reversed(made):
        subprocess.run(["umount", "-l", str(target)], check=False)


def files_under(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_read_only_data_dir_is_read_and_every_write_is_refused_in_one_line(tmp_path, mounts):
    source = tmp_path / "small.csv"
    source.write_text(SMALL)
    data = tmp_path / "data"
    with Kernel("nbscale-local", env=dict(os.environ, NBSCALE_DATA_DIR=str(data))) as kernel:
        made = kernel.run(f"%%ingest small --label label\n{source}")
        assert made.status == "ok", made.text()
        # The same folder, mounted read-only: a published dataset a team reads but must not change.
        read_only = mounts("--bind", "-o", "ro", str(data), target=tmp_path / "published")
        subprocess.run(["mount", "-o", "remount,ro,bind", str(read_only)], check=True)
        assert subprocess.run(["touch", str(read_only / "probe")], capture_output=True).returncode != 0
        before = files_under(data / "datasets")
        moved = kernel.run(f"%nbscale connect --data-dir {read_only}\nimport nbscale\nprint(nbscale.spark().range(3).count())")
        assert moved.status == "ok", moved.text()
        listed = kernel.run("%datasets")
        html = "".join(content["data"].get("text/html", "") for kind, content in listed.outputs if kind == "execute_result")
        assert listed.status == "ok" and "small@v1" in html, listed.outputs
        rows = kernel.run("from nbscale.ingest import dataset\nprint(dataset('small@v1').df.count(), dataset('small').version)")
        assert rows.text().strip() == "4 1", rows.text()
        for cell, doing in ((f"%%ingest small --label label\n{source}", "Ingesting small"),
                            ("%%train --data small --epochs 1\nmodel = keras.Sequential([keras.layers.Dense(2, activation='softmax')])",
                             "Training on small@v1"),
                            ("%register --name m --best val_loss", "Registering m")):
            refused = kernel.run(cell)
            error = refused.error()
            assert refused.status == "error" and error["ename"] == "ReadOnlyDataDir", refused.text()
            assert error["evalue"].startswith(f"{doing} needs to write into ") and "read-only" in error["evalue"], error["evalue"]
            assert "\n" not in error["evalue"] and "Traceback" not in refused.text()
        # Spark's working files went to a scratch folder; the data dir is exactly as it was.
        assert files_under(data / "datasets") == before
        log = kernel.run("from nbscale.session import driver_log\nprint(driver_log())").text().strip()
        assert not log.startswith(str(read_only)) and Path(log).exists(), log


def test_a_full_disk_is_named_and_the_previous_version_stays(tmp_path, mounts):
    data = mounts("-t", "tmpfs", "-o", "size=3m", "tmpfs", target=tmp_path / "small-disk")
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_text("a,b,label\n0.5,1.5,0\n2.5,3.5,1\n")
    # 400 000 rows of random doubles (~6.5 MB of Parquet, which cannot compress them): more than 3 MiB holds.
    draw = random.Random(7).random
    with open(big, "w") as out:
        out.write("a,b,label\n")
        for start in range(0, 400_000, 100_000):
            out.write("".join(f"{draw()},{draw()},{i % 2}\n" for i in range(start, start + 100_000)))
    with Kernel("nbscale-local", env=dict(os.environ, NBSCALE_DATA_DIR=str(data))) as kernel:
        first = kernel.run(f"%%ingest pairs --label label\n{small}")
        assert first.status == "ok", first.text()
        full = kernel.run(f"%%ingest pairs --label label\n{big}")
        error = full.error()
        assert full.status == "error" and error["ename"] == "SparkJobError", full.text()
        assert error["evalue"].startswith("Ingesting pairs failed: the disk is full"), error["evalue"]
        assert "Check the source" not in error["evalue"] and "TASK_WRITE_FAILED" not in error["evalue"]
        after = kernel.run("from nbscale.ingest import store\n"
                           "print(store.versions('pairs'), [p.name for p in (store.root() / 'pairs').glob('.staging-*')])")
        assert after.text().strip() == "[1] []", after.text()


def test_the_scratch_folder_is_this_users_own(tmp_path, mounts, monkeypatch):
    """Working files of a read-only data dir go under the temp dir, never into a folder someone else made there."""
    import tempfile

    from nbscale.datadir import work_dir
    from nbscale.errors import NbscaleError

    (tmp_path / "data").mkdir()
    read_only = mounts("--bind", "-o", "ro", str(tmp_path / "data"), target=tmp_path / "ro")
    subprocess.run(["mount", "-o", "remount,ro,bind", str(read_only)], check=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))
    (tmp_path / "temp").mkdir()
    scratch = work_dir(str(read_only))
    assert scratch.parent == tmp_path / "temp" / f"nbscale-{os.getuid()}" and scratch.is_dir()
    assert (scratch.parent.stat().st_mode & 0o777) == 0o700 and work_dir(str(read_only)) == scratch  # one per data dir
    assert work_dir(str(tmp_path / "data")) == tmp_path / "data"  # a writable data dir is its own work dir
    os.chown(scratch.parent, 65534, 65534)  # as if another user had made it first
    with pytest.raises(NbscaleError, match="is not this user's own folder"):
        work_dir(str(read_only))

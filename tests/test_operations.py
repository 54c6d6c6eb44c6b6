"""Fair-scheduler pools on a real Spark session; the Binder profile's caps."""
import threading
import time

import pytest

from nbscale.errors import NbscaleError, SettingError


def _sleepy_job(tasks: int, seconds: float) -> None:
    from nbscale.session import spark

    spark().sparkContext.parallelize(range(tasks), tasks).foreach(lambda _: time.sleep(seconds))


@pytest.mark.slow
def test_an_interactive_pool_is_not_held_behind_a_long_background_job(settings, ip):
    from nbscale import scheduling
    from nbscale.session import spark

    sc = spark().sparkContext
    assert sc.getConf().get("spark.scheduler.mode") == "FAIR"
    weights = {name: sc._jsc.sc().getPoolForName(name).get().weight() for name in ("interactive", "background")}
    assert weights == {"interactive": 4, "background": 1}  # the allocation file nbscale wrote is Spark's

    ended = {}

    def background():
        with scheduling.pool("background"):
            _sleepy_job(tasks=16, seconds=0.5)  # 4 s on 2 slots
        ended["background"] = time.monotonic()

    thread = threading.Thread(target=background)
    thread.start()
    deadline = time.monotonic() + 30
    background_pool = sc._jsc.sc().getPoolForName("background").get()
    while not (sc.statusTracker().getActiveStageIds() and background_pool.runningTasks()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the stage is submitted and its first tasks run in the background pool
    try:
        card = ip.run_line_magic("pool", "interactive")
        assert {r["pool"]: r["active_stages"] for r in card.rows}["background"] == 1
        _sleepy_job(tasks=2, seconds=0.1)
        ended["interactive"] = time.monotonic()
    finally:
        ip.run_line_magic("pool", "default")
    thread.join(60)
    # FIFO would run it after all 16 background tasks; the fair scheduler gives it the next free slots.
    assert ended["interactive"] < ended["background"] - 1
    assert scheduling.current_pool() == "default"


@pytest.mark.slow
def test_an_unknown_pool_is_one_line_naming_the_pools(settings):
    from nbscale import scheduling

    with pytest.raises(NbscaleError, match=r"^There is no Spark pool 'interactve' \(pools: default, interactive, background\): define it"):
        with scheduling.pool("interactve"):
            pass
    assert scheduling.current_pool() == "default"


def test_pool_weights_must_be_whole_and_positive(settings):
    with pytest.raises(SettingError, match=r"^Nbscale.pools: batch=0.5 is not a pool name with a whole weight"):
        settings.pools = {"batch": 0.5}
    assert settings.pools == {"interactive": 4, "background": 1}


def test_the_binder_profile_caps_and_says_so(settings, capsys):
    from nbscale import limits

    assert limits.cap("epochs", 10) == 10 and limits.spark_conf() == {}
    settings.profile = "binder"
    assert limits.cap("epochs", 10) == 3 and limits.cap("epochs", 2) == 2
    assert "Binder profile: epochs capped at 3 (asked 10)" in capsys.readouterr().out
    assert limits.spark_conf()["spark.executor.memory"] == "512m"
    assert "spark.python.daemon.module" not in limits.spark_conf()  # local Python workers never carry TensorFlow
    settings.master = "spark://127.0.0.1:7077"
    assert limits.spark_conf()["spark.python.daemon.module"] == "nbscale.distributed.preload"  # a cluster's workers share it
    with pytest.raises(SettingError, match="^Nbscale.profile = 'tiny' is not a profile: use full or binder."):
        settings.profile = "tiny"


@pytest.mark.slow
def test_the_binder_profile_ingests_the_first_rows_of_a_built_in_dataset(settings, tmp_path, monkeypatch, capsys):
    from nbscale import limits
    from nbscale.ingest import dataset, ingest

    settings.data_dir = str(tmp_path)
    settings.profile = "binder"
    monkeypatch.setitem(limits.BINDER, "rows", 100)  # digits has 1797: the cap must bite
    ingest("small_digits", "nbscale:digits", label="label")
    version = dataset("small_digits")
    assert version.manifest["counts"] == {"read": 100, "loaded": 100, "quarantined": 0}
    assert "Binder profile: the first 100 of 1797 records" in version.manifest["notes"]
    assert version.df.count() == 100
    assert "Binder profile: rows capped at 100 (asked 1797)" in capsys.readouterr().out

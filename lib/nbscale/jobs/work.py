"""One block of Spark work that a cell waits on: labelled, watched for progress, cancelled by an interrupt —
by job group on a classic session, by operation tag over Spark Connect (which has no SparkContext)."""
from __future__ import annotations

import contextlib
from typing import Callable

from ..config import over_connect
from .interrupts import cancel_on_interrupt, interrupt_tag_on_interrupt
from .progress import ConnectProgressWatcher, ProgressWatcher, SparkProgress


@contextlib.contextmanager
def spark_work(spark, group: str, description: str, progress: Callable[[SparkProgress], None] | None = None):
    """`with spark_work(spark, group, "%%ingest x", on_progress):` the block's Spark jobs carry `group`."""
    if over_connect():
        watcher = ConnectProgressWatcher(spark, progress) if progress else contextlib.nullcontext()
        with interrupt_tag_on_interrupt(spark, group), watcher:
            yield
        return
    sc = spark.sparkContext
    sc.setJobGroup(group, description, interruptOnCancel=True)
    try:
        watcher = ProgressWatcher(sc, group, progress) if progress else contextlib.nullcontext()
        with cancel_on_interrupt(sc, group), watcher:
            yield
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)

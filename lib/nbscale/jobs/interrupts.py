"""Interrupting a cell that waits on Spark: the user's KeyboardInterrupt, and the JVM's jobs cancelled with it
(ipykernel's SIGINT stops only Python)."""
from __future__ import annotations

import contextlib
import time

from ..errors import caused_by_interrupt


def cancel_group(sc, group: str, tries: int = 3) -> None:
    """Cancel a Spark job group; the gateway may refuse the first connection made right after an interrupt."""
    for attempt in range(tries):
        try:
            sc.cancelJobGroup(group)
            return
        except Exception:  # noqa: BLE001 - a refused connection is retried; the last failure is reported
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextlib.contextmanager
def cancel_on_interrupt(sc, group: str):
    """`with cancel_on_interrupt(sc, group):` an interrupt cancels the group's Spark jobs and is raised as
    KeyboardInterrupt, whatever Py4J error it turned into on the way."""
    try:
        yield
    except BaseException as exc:
        if not caused_by_interrupt(exc):
            raise
        cancel_group(sc, group)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt from None


@contextlib.contextmanager
def interrupt_tag_on_interrupt(spark, tag: str):
    """The Spark Connect form of `cancel_on_interrupt`: the block's operations carry `tag` (Connect has no
    job groups), and an interrupt asks the server to interrupt every operation with it."""
    spark.addTag(tag)
    try:
        yield
    except BaseException as exc:
        if not caused_by_interrupt(exc):
            raise
        spark.interruptTag(tag)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise KeyboardInterrupt from None
    finally:
        spark.removeTag(tag)

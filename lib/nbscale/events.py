"""Announcements that travel up the layers without imports pointing up.

A lower layer emits ("dataset_resolved" from the dataset store, "alias_moved" from the model registry,
"work_started" from jobs and serving); the layer that cares subscribes when it is imported (the memo
of a running %%step, the services following an alias, the kernel's state publisher). A module that is
not imported has nothing to do with the event: no %%step runs, no service follows, no panel listens.
"""
from __future__ import annotations

import threading
from typing import Callable

DATASET_RESOLVED = "dataset_resolved"  # name, version, pinned
ALIAS_MOVED = "alias_moved"  # name, alias -> a line saying what followed
WORK_STARTED = "work_started"  # a background job, a model service or a proxied UI started in this kernel

_subscribers: dict[str, list[Callable]] = {}
_lock = threading.Lock()


def subscribe(topic: str, callback: Callable) -> None:
    """Call `callback(**details)` on each `emit(topic, ...)`; subscribing twice is once."""
    with _lock:
        callbacks = _subscribers.setdefault(topic, [])
        if callback not in callbacks:
            callbacks.append(callback)


def emit(topic: str, **details) -> list:
    """Run the topic's callbacks in order, in this thread; their results (None dropped)."""
    with _lock:
        callbacks = list(_subscribers.get(topic, ()))
    return [result for result in (callback(**details) for callback in callbacks) if result is not None]

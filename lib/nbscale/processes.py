"""Child processes that never outlive the process that started them (no orphan holding a port).

Two mechanisms, so it holds on every POSIX system: Linux's parent-death signal (`prctl`), immediate and kept
across exec; and, where there is no `prctl` (macOS) or as a second line on Linux, a thread in the child that
notices it was re-parented — its parent died — and ends it."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """When this process's parent dies, the kernel sends it `sig`; kept across exec, so it also works as the
    `preexec_fn` of a third-party server."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:
        pass  # not Linux: the parent's own cleanup stops the child


PARENT_CHECK_S = 0.5  # how often a child looks whether its parent is still there (the portable mechanism)


def watch_parent(sig: int = signal.SIGKILL, every_s: float = PARENT_CHECK_S) -> threading.Thread:
    """A daemon thread that sends this process `sig` once its parent is gone: a dead parent's children are
    re-parented (to init or a subreaper), so `getppid()` changes. Portable, and needs no psutil."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), sig)

    watcher = threading.Thread(target=watch, name="nbscale-parent-watch", daemon=True)
    watcher.start()
    return watcher


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Call first thing in a child: when its parent dies, so does it (at once on Linux, within
    PARENT_CHECK_S elsewhere)."""
    parent_death_signal(sig)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(3)
    watch_parent(sig)


_spawner: ThreadPoolExecutor | None = None
_spawner_lock = threading.Lock()


def spawn(args: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen from one thread that lives as long as this process. Linux sends a child's parent-death
    signal when the *thread* that forked it exits, so a server started by a short-lived thread (a
    workflow step, a background job) would be killed the moment that thread ended."""
    global _spawner
    with _spawner_lock:
        if _spawner is None:
            _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbscale-spawner")
    return _spawner.submit(subprocess.Popen, args, **popen_kwargs).result()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True

"""Child processes that never outlive the process that started them (no orphan holding a port)."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

PR_SET_PDEATHSIG = 1


def parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """When this process's parent dies, the kernel sends it `sig`; kept across exec, so it also works as the
    `preexec_fn` of a third-party server."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    except OSError:
        pass  # not Linux: the parent's own cleanup stops the child


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Call first thing in a child: when its parent dies, the kernel sends it `sig`."""
    parent_death_signal(sig)
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(3)


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

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def restored_settings():
    """The process-wide settings; every value comes back after the block, also when it fails (a module
    whose set-up fails must not leave its data dir or master to the next module on the same worker)."""
    from nbscale.config import settings as current

    cfg = current()
    saved, chosen = cfg.as_dict(), cfg.host_was_chosen()
    try:
        yield cfg
    finally:
        for name, value in saved.items():
            if getattr(cfg, name) != value:
                setattr(cfg, name, value)
        cfg.host_chosen = chosen


@contextlib.contextmanager
def module_data_dir(tmp_path_factory, name: str):
    """A module's own, empty data dir (its datasets, runs and models meet no other module's) for the block."""
    with restored_settings() as cfg:
        cfg.data_dir = str(tmp_path_factory.mktemp(name))
        yield cfg


@pytest.fixture
def settings():
    """The process-wide settings, restored after the test (tests may change them)."""
    with restored_settings() as cfg:
        yield cfg


@pytest.fixture(scope="session")
def ip():
    """A real IPython shell with the extension loaded."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "nbscale")
    return shell


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_python(code: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter of this venv (for what one process can observe only once)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env or os.environ.copy())


def wait_until_answers(url: str, process: subprocess.Popen, timeout: float, why=lambda: "") -> None:
    """Poll `url` until it answers 200; fail with `why()` (e.g. the server's log) if `process` dies or time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert process.poll() is None, f"{process.args[0]} exited: {why()}"
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout:.0f} s: {why()}"
            time.sleep(0.3)

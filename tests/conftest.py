import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings():
    """The process-wide settings, restored after the test (tests may change them)."""
    from nbscale.config import settings as current

    cfg = current()
    saved, chosen = cfg.as_dict(), cfg.host_was_chosen()
    yield cfg
    for name, value in saved.items():
        if getattr(cfg, name) != value:
            setattr(cfg, name, value)
    cfg.host_chosen = chosen


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

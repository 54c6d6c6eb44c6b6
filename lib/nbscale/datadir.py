"""The data dir may be read-only (a team's published datasets, a read-only mount): reading it must work.

nbscale's own working files (the fair-scheduler pools, the driver log, Spark's spill files) then go to a
scratch folder of this user, and anything that would write a dataset, run or model says in one line that
the data dir is read-only — before any work starts, so nothing is half-written.
"""
from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path

from .config import over_connect, settings
from .errors import NbscaleError

# Errors that mean "this folder cannot take writes", as opposed to a bug.
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


class ReadOnlyDataDir(NbscaleError):
    """Something had to write into a data dir that takes no writes."""


def writable(folder: str | Path) -> bool:
    """Whether a file can be created in `folder` (created if missing). A real write, not `os.access`:
    root passes permission checks, and only the write itself meets a read-only mount."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".nbscale-write-probe-"):
            return True
    except OSError as exc:
        if exc.errno in READ_ONLY_ERRNOS:
            return False
        raise


def work_dir(data_dir: str | None = None) -> Path:
    """Where nbscale keeps its own working files: the data dir, or, when that is read-only, a private
    folder of this user under the system temp dir (one per data dir)."""
    data = Path(data_dir or settings().data_dir)
    if writable(data):
        return data
    scratch = _own_temp_folder() / hashlib.sha256(str(data.resolve()).encode()).hexdigest()[:12]
    scratch.mkdir(exist_ok=True)
    return scratch


def local_dir(master: str | None = None) -> Path:
    """This machine's folder for nbscale's local files (downloads, the panel's state, model servers, and over
    Connect the default MLflow store): the data dir — or, on a Spark Connect master, where the data dir is a
    folder on the cluster, `~/.nbscale/connect` (in the home folder, not /tmp: runs must outlive a reboot)."""
    if not over_connect(master):
        return Path(settings().data_dir)
    local = connect_home()
    local.mkdir(mode=0o700, parents=True, exist_ok=True)
    return local


def connect_home() -> Path:
    """This machine's folder for a Spark Connect session's local files (see `local_dir`); it may not exist yet."""
    return Path.home() / ".nbscale" / "connect"


def _own_temp_folder() -> Path:
    mine = Path(tempfile.gettempdir()) / f"nbscale-{os.getuid()}"
    mine.mkdir(mode=0o700, exist_ok=True)
    # A shared temp dir: a folder of that name made (or linked) by someone else must not receive our files.
    if mine.is_symlink() or mine.stat().st_uid != os.getuid():
        raise NbscaleError(f"{mine} is not this user's own folder: remove it, or point Nbscale.data_dir at a writable folder.")
    mine.chmod(0o700)
    return mine



def require_writable_store(doing: str) -> None:
    """Refuse `doing` in one line when the MLflow store is a SQLite file in a read-only folder."""
    uri = settings().tracking_uri
    if uri.startswith("sqlite:///") and not writable(Path(uri[len("sqlite:///"):]).parent):
        raise ReadOnlyDataDir(f"{doing} needs to write into the MLflow store {uri}, whose folder is read-only. Point "
                              "Nbscale.tracking_uri at a writable SQLite file or a tracking server.")

"""User-facing errors: one line saying what is wrong and how to fix it.

Library functions raise these; the IPython extension prints them as a single line
(no Python or JVM traceback), and plain Python callers get an ordinary exception.
"""
from __future__ import annotations

import contextlib
import errno
import re

from traitlets import TraitError


class NbscaleError(Exception):
    """An error the user can fix. Its message is one line: the problem, then the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class SettingError(NbscaleError, TraitError):
    """A setting of `Nbscale` has a value nbscale cannot use."""


class JavaMissingError(NbscaleError):
    """Spark needs a Java runtime that is not there (or too old)."""


class SparkStartError(NbscaleError):
    """The Spark session could not be started or reached."""


class SparkJobError(NbscaleError):
    """A Spark job failed; the message is the first useful line of the JVM error."""


# Lines of a JVM/Py4J error that say nothing to a notebook user.
_NOISE = re.compile(r"^(\s+at |Traceback|\s*File \"|py4j\.|An error occurred while calling|Caused by: )")


def first_useful_line(text: str, limit: int = 300) -> str:
    """The first sentence of a (possibly Java) error text that names the problem, as one line."""
    lines = str(text).splitlines()
    for start, line in enumerate(lines):
        line = line.strip()
        if line and not _NOISE.match(line):
            # Spark wraps long messages over several lines; keep them up to the stack trace.
            for more in lines[start + 1:]:
                if not more.strip() or _NOISE.match(more) or re.match(r"^\s*(SQLSTATE|== |at )", more):
                    break
                line += " " + more.strip()
            # "org.apache.spark.SparkException: Job aborted ..." -> keep the message part.
            match = re.match(r"^(?:[\w$]+\.)+([\w$]+(?:Exception|Error)): (.+)$", line)
            line = f"{match.group(1)}: {match.group(2)}" if match else line
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return str(text).strip().splitlines()[0] if str(text).strip() else "unknown error"


_CANNOT_RUN = re.compile(r"\(([^()\s]+) executor [^)]*\): java\.io\.IOException: Cannot run program \"([^\"]+)\"[^:]*: error=\d+, ([^\n]+)")


def executor_failure(text: str) -> str | None:
    """A task failure that is the environment's fault (no Python at the driver's path on a host), as one line."""
    match = _CANNOT_RUN.search(text)
    if match:
        host, program, why = match.groups()
        return (f"Executors on {host} cannot run Python at {program} ({why.strip().rstrip('.')}): executors run the notebook's "
                "interpreter path — install the same environment at that path on every host, set spark.pyspark.python in "
                "Nbscale.spark_conf to the Python there, or ship an archive of it with spark.archives (venv-pack, conda-pack).")
    match = re.search(r"\(([^()\s]+) executor [^)]*\):.*?Python in worker has different version ([\d.]+) than that in driver ([\d.]+)", text, re.S)
    if match:
        return (f"Executors on {match.group(1)} run Python {match.group(2)}, this notebook {match.group(3)}: PySpark needs the same minor "
                "version on both sides. Install the notebook's environment there, or ship an archive of it with spark.archives (venv-pack, conda-pack).")
    return None


def caused_by_interrupt(exc: BaseException | None) -> bool:
    """True when `exc` is a KeyboardInterrupt or was raised while one was being handled. Py4J closes an
    interrupted connection, so PySpark's own clean-up call (`SCCallSiteSync.__exit__`) can fail next with
    "Answer from Java side is empty", hiding the interrupt: such an error *is* the user's interrupt."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


# A write that the disk refused: the one cause a user can act on, whatever Spark's first line says.
_DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up", errno.EROFS: "the folder is read-only"}
_DISK_MESSAGES = {"No space left on device": "the disk is full (No space left on device)",
                  "Disk quota exceeded": "the disk quota is used up (Disk quota exceeded)",
                  "Read-only file system": "the folder is on a read-only file system"}
_DISK_FIX = "Free space there, or point Nbscale.data_dir at a folder with room."


SERVER_GONE = "the Spark Connect server does not answer"


def connect_server_gone(exc: BaseException) -> bool:
    """The Spark Connect server does not answer (after the client's bounded retries; raw, or as nbscale's
    line): clean-up calls to it would only wait out the same retries again."""
    text = str(exc)
    return "RETRIES_EXCEEDED" in text or "StatusCode.UNAVAILABLE" in text or SERVER_GONE in text


@contextlib.contextmanager
def spark_errors(doing: str, fix: str = ""):
    """Turn a PySpark / Py4J exception raised while `doing` something into one SparkJobError line."""
    try:
        yield
    except NbscaleError:
        raise
    except Exception as exc:  # noqa: BLE001 - we re-raise anything that is not a Spark error
        if caused_by_interrupt(exc):  # the user's interrupt, turned into a Py4J error by PySpark's clean-up
            raise KeyboardInterrupt from None
        module = type(exc).__module__ or ""
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:  # nbscale's own writes (a manifest, a rename)
            raise SparkJobError(f"{doing} failed: {_DISK_ERRNOS[exc.errno]} ({exc.filename or exc.strerror}). {_DISK_FIX}") from None
        if not (module.startswith("pyspark") or module.startswith("py4j")):
            raise
        text = (exc.getMessage() if hasattr(exc, "getMessage") else "") or str(exc)
        disk = next((why for marker, why in _DISK_MESSAGES.items() if marker in text), None)
        if disk:  # Spark's own line is "[TASK_WRITE_FAILED] Task failed while writing rows": the cause is further down
            raise SparkJobError(f"{doing} failed: {disk}. {_DISK_FIX}") from None
        if connect_server_gone(exc):
            raise SparkJobError(f"{doing} failed: {SERVER_GONE} (it stopped, or the network to it "
                                "dropped; retried for about 30 s): check the server, then run the cell "
                                "again.") from None
        environment = executor_failure(text)
        if environment:
            raise SparkJobError(f"{doing} failed: {environment}") from None
        detail = first_useful_line(text)
        message = f"{doing} failed: {detail}"
        raise SparkJobError(f"{message}. {fix}" if fix else message) from None

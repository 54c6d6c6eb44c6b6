"""Connecting to a cluster is checked, not assumed.

On a cluster master (spark://, yarn, k8s://) a Spark session only proves that the master answered:
executors that cannot reach the driver exit and are relaunched forever while jobs wait without a
word. After the session starts, nbscale therefore waits a bounded time for executors, then runs one
small job on them that reports each host's Python and stack versions and whether it sees the data
dir at the same path (a marker file the notebook wrote). Anything wrong is one line naming the host
and the fix, and the session is stopped. The result is kept for the status card.

This module never imports `session` (which calls it): it is handed the SparkSession.
"""
from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .datadir import writable
from .errors import SERVER_GONE, NbscaleError, SparkStartError, connect_server_gone, executor_failure, first_useful_line

# What a worker process needs to run every nbscale feature, compared with the notebook's:
# distribution name(s) -> the module that must be importable (metadata alone can outlive a package).
STACK = {"nbscale": "nbscale", "pyspark": "pyspark", "tensorflow|tensorflow-cpu": "tensorflow", "tf-keras": "tf_keras",
         "petastorm": "petastorm", "mlflow": "mlflow"}
CHECK_TIMEOUT_S = 60
SETTLE_S = 3  # after the first executor, how long to wait for the others to register
_last: "ClusterCheck | None" = None


def is_cluster(master: str) -> bool:
    """Executors run on other machines (or could): everything but local[...] and Spark Connect."""
    return bool(master) and not master.startswith(("local", "sc://"))


def master_address(master: str) -> tuple[str, int] | None:
    """(host, port) of the (first) master a driver talks to, when the URL names one."""
    if master.startswith("k8s://"):
        match, port = re.match(r"^k8s://https?://([\w.\-]+)(?::(\d+))?", master), 443
    else:
        match, port = re.match(r"^(?:spark|sc)://([\w.\-]+)(?::(\d+))?", master), 7077
    if not match:
        return None
    return match.group(1), int(match.group(2) or port)


def route_address(master: str) -> str | None:
    """The local address of the interface this machine uses to reach the master: what executors on
    the master's network can connect back to. A UDP connect sends nothing; it only asks the kernel's
    routing table."""
    target = master_address(master)
    if target is None:
        return None
    try:
        infos = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
    except socket.gaierror:
        return None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(address)
        except OSError:
            return None
        return probe.getsockname()[0]


@dataclass
class ClusterCheck:
    master: str
    driver: str  # host:port executors connect to
    hosts: list[dict] = field(default_factory=list)  # {"host", "executors", "cores", "python", "versions", "data_dir"}
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    over_connect: bool = False  # the driver is a Spark Connect server's; executors are known by the tasks they ran

    @property
    def cores(self) -> int:
        return sum(h.get("cores") or 0 for h in self.hosts)

    def lines(self) -> list[str]:
        if self.over_connect:
            out = [f"{len(self.hosts)} host(s) ran the check's tasks; the driver is the Spark Connect server's ({self.driver}), "
                   "the data dir is on the cluster"]
        else:
            out = [f"{len(self.hosts)} host(s), {self.cores} executor cores; executors reach this notebook at {self.driver}"]
        for h in self.hosts:
            seen = "sees the data dir" if h.get("data_dir") else "does NOT see the data dir"
            runs = "" if self.over_connect else f"{h['executors']} executor(s), {h['cores']} cores, "
            out.append(f"{h['host']}: {runs}Python {h.get('python', '?')}, {seen}")
        return out + self.problems


def last_check() -> ClusterCheck | None:
    """The check of the session that runs now (None on a local master or before one started)."""
    return _last


def forget() -> None:
    global _last
    _last = None


# ---- executors ------------------------------------------------------------------------------
def executors_by_host(sc) -> dict[str, int]:
    """host -> executors registered with this driver (the driver's own entry left out)."""
    jsc = sc._jsc.sc()
    own = jsc.env().blockManager().blockManagerId()
    driver = (own.host(), own.port())
    hosts: dict[str, int] = {}
    for info in jsc.statusTracker().getExecutorInfos():
        if (info.host(), info.port()) != driver:
            hosts[info.host()] = hosts.get(info.host(), 0) + 1
    return hosts


def _new_lines(log: Path, offset: int) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def wait_for_executors(sc, timeout: float) -> dict[str, int]:
    """Executors by host once at least one registered (and the others had a moment); else one line why.
    (Spark logs executors that exit at INFO level, below the driver log's WARN: the address is the clue.)"""
    deadline = time.monotonic() + timeout
    hosts = executors_by_host(sc)
    while not hosts and time.monotonic() < deadline:
        time.sleep(0.5)
        hosts = executors_by_host(sc)
    if hosts:
        settle = time.monotonic() + SETTLE_S
        while time.monotonic() < settle:
            time.sleep(0.5)
            hosts = executors_by_host(sc)
        return hosts
    driver = f"{sc.getConf().get('spark.driver.host')}:{sc.getConf().get('spark.driver.port')}"
    if driver.startswith(("127.", "localhost:", "[::1]")):
        raise SparkStartError(f"No executor registered within {timeout:.0f} s: executors cannot reach this notebook at {driver}, a "
                              "loopback address of this machine. Set --host to an address of this machine that the cluster can reach "
                              "(%nbscale connect --master URL --host ADDRESS), or leave Nbscale.host unset to use the one that routes to the master.")
    raise SparkStartError(f"No executor registered within {timeout:.0f} s: the executors cannot reach this notebook at {driver}, or the "
                          "cluster has no worker with free cores and memory for this application (see the master's web UI). Set --host "
                          "to an address the cluster can reach, free some cores, or lower spark.executor.memory in Nbscale.spark_conf.")


# ---- the environment check job ----------------------------------------------------------------
def _probe(marker: str, token: str, driver_host: str, driver_port: int, stack: dict[str, str]):
    """The function each check task runs: pickled by value (a closure), so it needs nothing but PySpark there."""

    def probe(_):
        import importlib.metadata as md
        import importlib.util
        import os
        import platform
        import socket as sock
        import sys as system

        with sock.socket(sock.AF_INET, sock.SOCK_DGRAM) as s:  # this executor's address towards the driver
            try:
                s.connect((driver_host, driver_port))
                address = s.getsockname()[0]
            except OSError:
                address = sock.gethostname()
        versions = {}
        for names, module in stack.items():
            versions[names] = None
            found = importlib.util.find_spec(module)
            if found is None or found.origin is None:  # an empty folder is only a namespace package
                continue
            for name in names.split("|"):
                try:
                    versions[names] = md.version(name)
                    break
                except md.PackageNotFoundError:
                    continue
        try:  # a file the notebook just wrote, or (a read-only data dir) the folder's listing as the notebook sees it
            seen = (open(marker).read() if os.path.isfile(marker) else "\n".join(sorted(os.listdir(marker)))) == token
        except OSError:
            seen = False
        yield {"address": os.environ.get("SPARK_LOCAL_IP") or address, "python": platform.python_version(),
               "executable": system.executable, "versions": versions, "data_dir": seen}

    return probe


def _local_versions() -> dict[str, str | None]:
    """This notebook's stack, by the very code the executors run."""
    probe = _probe("", "", "127.0.0.1", 9, STACK)
    return next(iter(probe(None)))["versions"]


def _run_bounded(sc, group: str, job, timeout: float):
    """Run `job()` (a Spark action) in a thread; cancel its job group when it outlives `timeout`."""
    return _in_thread(job, timeout, start=lambda: sc.setJobGroup(group, "nbscale: cluster environment check", interruptOnCancel=True),
                      end=lambda: sc.setLocalProperty("spark.jobGroup.id", None), cancel=lambda: sc.cancelJobGroup(group),
                      too_late=f"The cluster environment check did not finish within {timeout:.0f} s (its executors never ran it): "
                               "see the master's web UI for the workers' state, then %nbscale connect again.")


def _in_thread(job, timeout: float, start, end, cancel, too_late: str):
    """`job()` in a thread between `start()` and `end()` (which label its Spark work there); `cancel()` and one
    line (`too_late`) when it outlives `timeout`, and `cancel()` when the cell is interrupted while it waits; its
    error, if any, raised here. Its end is an event, not Thread.is_alive: on CPython 3.11 an interrupt inside
    Thread.join marks a thread that still runs as stopped."""
    box: dict = {}
    ended = threading.Event()

    def target():
        start()
        try:
            box["value"] = job()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            end()
            ended.set()

    thread = threading.Thread(target=target, name="nbscale-cluster-check", daemon=True)
    thread.start()
    try:
        finished = ended.wait(timeout)
    except BaseException:  # an interrupt: the check's Spark work must not run on behind the cell
        try:
            cancel()
        except Exception:  # noqa: BLE001 - a server already gone: the interrupt is what the cell reports
            pass
        raise
    if not finished:
        cancel()
        ended.wait(10)
        raise SparkStartError(too_late)
    if "error" in box:
        raise box["error"]
    return box["value"]


def check(session, data_dir: str, log: Path, wait_s: float) -> ClusterCheck:
    """Wait for executors, then check every host's Python, stack and view of the data dir.
    Raises one line (NbscaleError) on the first thing that would make later work fail or hang."""
    global _last
    started = time.monotonic()
    sc = session.sparkContext
    executors = wait_for_executors(sc, wait_s)
    conf = sc.getConf()
    driver_host, driver_port = conf.get("spark.driver.host"), int(conf.get("spark.driver.port"))
    result = ClusterCheck(sc.master, f"{driver_host}:{driver_port}")
    token = uuid.uuid4().hex
    if writable(data_dir):
        marker = Path(data_dir) / ".nbscale-check" / f"{token}.txt"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(token)
        written = marker
    else:
        marker, written = Path(data_dir), None
        listing = "\n".join(sorted(os.listdir(marker)))
    slots = max(2, sc.defaultParallelism)
    probe = _probe(str(marker), token if written else listing, driver_host, driver_port, STACK)
    log_offset = log.stat().st_size if log.exists() else 0
    try:
        rows = _run_bounded(sc, f"nbscale-check-{token[:8]}",
                            lambda: sc.parallelize(range(slots * 2), slots * 2).mapPartitions(probe).collect(), CHECK_TIMEOUT_S)
    except NbscaleError:
        raise
    except Exception as exc:  # noqa: BLE001 - a task that cannot start at all: say which host and why
        raise SparkStartError(executor_failure(str(exc)) or f"The cluster environment check failed: {first_useful_line(str(exc))}") from None
    finally:
        if written:
            written.unlink(missing_ok=True)
    # A host whose tasks failed and were retried elsewhere still counts: its failures are in the driver log.
    failed = executor_failure(_new_lines(log, log_offset))
    if failed:
        raise SparkStartError(failed)
    mine = _local_versions()
    python = ".".join(map(str, sys.version_info[:3]))
    by_host: dict[str, dict] = {}
    for row in rows:
        by_host.setdefault(row["address"], row)
    cores = _cores_by_host(sc)
    for host, count in sorted(executors.items()):
        row = by_host.get(host)
        entry = {"host": host, "executors": count, "cores": cores.get(host, 0)}
        if row is None:
            result.problems.append(f"{host}: its executor ran none of the check's tasks (not checked)")
            result.hosts.append(entry)
            continue
        entry.update(python=row["python"], versions=row["versions"], data_dir=row["data_dir"])
        result.hosts.append(entry)
    result.seconds = time.monotonic() - started
    _refuse_mismatches(result, mine, python, data_dir)
    _last = result
    return result


def _cores_by_host(sc) -> dict[str, int]:
    """Executor cores per host, from the driver's executor summaries (the REST API the Spark UI serves)."""
    try:
        status = sc._jsc.sc().statusStore().executorList(True)
        out: dict[str, int] = {}
        for i in range(status.size()):
            summary = status.apply(i)
            if summary.id() != "driver":
                host = summary.hostPort().rsplit(":", 1)[0]
                out[host] = out.get(host, 0) + summary.totalCores()
        return out
    except Exception:  # noqa: BLE001 - the card can do without the cores
        return {}


def _refuse_mismatches(result: ClusterCheck, mine: dict, python: str, data_dir: str) -> None:
    for h in result.hosts:
        if "python" not in h:
            continue
        if h["python"].rsplit(".", 1)[0] != python.rsplit(".", 1)[0]:
            raise SparkStartError(f"Executors on {h['host']} run Python {h['python']}, this notebook {python}: PySpark needs the same "
                                  "minor version on both sides. Install the notebook's environment there, or ship an "
                                  "archive of it with spark.archives (venv-pack, conda-pack).")
        missing = [name.split("|")[0] for name, version in h["versions"].items() if version is None and mine.get(name)]
        if missing:
            raise SparkStartError(f"Executors on {h['host']} lack {', '.join(missing)} (installed here): install the notebook's "
                                  "environment on every host (same versions), or ship an archive of it with spark.archives (venv-pack, conda-pack).")
        differ = [f"{name.split('|')[0]} {version} (here {mine[name]})" for name, version in h["versions"].items()
                  if version is not None and mine.get(name) and version != mine[name]]
        if differ:
            raise SparkStartError(f"Executors on {h['host']} have {', '.join(differ)}: models and datasets must be read by the same "
                                  "versions everywhere — install the notebook's versions there, or ship them in an archive with spark.archives (venv-pack, conda-pack).")
        if not h["data_dir"]:
            raise SparkStartError(f"Nbscale.data_dir = {data_dir} is not visible at that path on {h['host']} (its executors cannot "
                                  "read a file the notebook wrote there): on a cluster the data dir must be a shared mount every host "
                                  "sees at the same path — %nbscale connect --master URL --data-dir /shared/path.")


def describe() -> dict | None:
    """The last check as plain data (status card, panel)."""
    if _last is None:
        return None
    return {"master": _last.master, "driver": _last.driver, "hosts": _last.hosts, "problems": _last.problems,
            "seconds": round(_last.seconds, 1), "lines": _last.lines()}


# ---- over Spark Connect -----------------------------------------------------------------------
def check_over_connect(session, master: str, data_dir: str, wait_s: float, tasks: int = 8) -> ClusterCheck:
    """The same check for a Spark Connect client, which has no SparkContext: DataFrame tasks (mapInPandas)
    write the marker into the data dir *on the cluster* (or read its listing, when it takes no writes)
    and then report each host's Python, stack and view of it. Bounded: no executor means one line."""
    global _last
    started = time.monotonic()
    server = master_address(master) or ("127.0.0.1", 15002)
    token = uuid.uuid4().hex
    marker = f"{data_dir.rstrip('/')}/.nbscale-check/{token}.txt"

    def write_marker(batches):  # on one executor: the marker, or the listing of a data dir that takes no writes
        import os as _os

        import pandas as pd

        for _ in batches:
            pass
        try:
            _os.makedirs(_os.path.dirname(marker), exist_ok=True)
            with open(marker, "w") as f:
                f.write(token)
            answer = ""
        except OSError:
            try:
                answer = "\n".join(sorted(_os.listdir(data_dir)))
            except OSError as exc:
                answer = f"\0{exc.strerror or exc}"
        yield pd.DataFrame({"answer": [answer]})

    tag = f"nbscale-check-{token[:8]}"
    (answer,) = _run_tagged(session, tag, lambda: session.range(1, numPartitions=1).mapInPandas(write_marker, "answer string").first(),
                            wait_s + CHECK_TIMEOUT_S)  # the first task also waits for the application's executors
    if answer.startswith("\0"):
        raise SparkStartError(f"Nbscale.data_dir = {data_dir} cannot be used on the cluster ({answer[1:]}): over Spark Connect the data "
                              "dir is a folder of the cluster, every host at the same path — %nbscale connect --data-dir /shared/path.")
    probe = _probe(marker if not answer else data_dir, token if not answer else answer, server[0], server[1], STACK)
    # The first task ran on the first executor; the others may still be registering (Connect cannot list them, as
    # the classic check does): give them the classic check's settling time, so the report's tasks spread over all.
    time.sleep(SETTLE_S)

    def report(batches):
        import json as js

        import pandas as pd

        for _ in batches:
            pass
        for row in probe(None):
            yield pd.DataFrame([{"address": row["address"], "python": row["python"], "versions": js.dumps(row["versions"]),
                                 "data_dir": bool(row["data_dir"])}])

    rows = _run_tagged(session, tag, lambda: session.range(tasks, numPartitions=tasks).mapInPandas(
        report, "address string, python string, versions string, data_dir boolean").collect(), CHECK_TIMEOUT_S)
    if not answer:
        _run_tagged(session, tag, lambda: session.range(1, numPartitions=1).mapInPandas(_remover(marker), "answer string").collect(),
                    CHECK_TIMEOUT_S)
    result = ClusterCheck(master, f"{server[0]}:{server[1]}", over_connect=True)
    if answer:
        result.problems.append(f"the data dir {data_dir} takes no writes on the cluster: datasets there can be read, not added")
    by_host: dict[str, dict] = {}
    for row in rows:
        by_host.setdefault(row["address"], {"host": row["address"], "python": row["python"], "versions": json.loads(row["versions"]),
                                            "data_dir": row["data_dir"]})
    result.hosts = [by_host[host] for host in sorted(by_host)]
    result.seconds = time.monotonic() - started
    _refuse_mismatches(result, _local_versions(), ".".join(map(str, sys.version_info[:3])), data_dir)
    _last = result
    return result


def _remover(path: str):
    def remove(batches):
        import os as _os

        import pandas as pd

        for _ in batches:
            pass
        try:
            _os.unlink(path)
        except OSError:
            pass
        yield pd.DataFrame({"answer": [""]})

    return remove


def _run_tagged(session, tag: str, job, timeout: float):
    """`job()` in a thread whose Connect operations carry `tag`; interrupted when it outlives `timeout`."""
    try:
        return _in_thread(job, timeout, start=lambda: session.addTag(tag), end=lambda: session.removeTag(tag),
                          cancel=lambda: session.interruptTag(tag),
                          too_late=f"The cluster environment check did not finish within {timeout:.0f} s (no executor ran it): the "
                                   "Spark Connect server's application has no executors — see its cluster's master web UI, then "
                                   "%nbscale connect again.")
    except SparkStartError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of the check is one line
        if connect_server_gone(error):
            raise SparkStartError(f"Spark is out of reach: {SERVER_GONE} (it stopped, or the network to it dropped; retried for "
                                  "about 30 s): check the server, then run the cell again.") from None
        raise SparkStartError(f"The cluster environment check failed over Spark Connect: {first_useful_line(str(error))}") from None

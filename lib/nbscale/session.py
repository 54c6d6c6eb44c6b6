"""Lifecycles of the engines nbscale drives: the Spark session (lazy, restarted when the
settings it was built from change) and the MLflow tracking URI.

Every check that can fail here fails before the JVM starts, with one line naming the setting,
because a JVM that cannot reach its master retries for minutes and then dies in a traceback.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from xml.sax.saxutils import quoteattr
from functools import lru_cache
from pathlib import Path

from .config import CLUSTER_KERNEL_MASTER_ENV, settings
from .errors import JavaMissingError, SettingError, SparkStartError, first_useful_line
from . import limits, uilinks
from .datadir import local_dir, work_dir
from .config import over_connect

MIN_JAVA = 17
_INSTALL_JAVA = "install Java 17 (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME to one"

_lock = threading.RLock()
_spark = None  # the SparkSession nbscale started
_spark_key = None  # the settings it was started with


# ---- Java ----------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _java_version(java: str) -> str:
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return match.group(1) if match else ""


def find_java() -> tuple[str, str]:
    """(path to java, version) of the Java Spark will use; JavaMissingError if there is none fit."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        java = Path(java_home) / "bin" / "java"
        if not java.is_file():
            raise JavaMissingError(f"JAVA_HOME={java_home} has no bin/java: Spark needs Java {MIN_JAVA}+; {_INSTALL_JAVA}.")
        java = str(java)
    else:
        java = shutil.which("java")
        if not java:
            raise JavaMissingError(f"Java was not found (no JAVA_HOME, no java on PATH): Spark needs Java {MIN_JAVA}+; {_INSTALL_JAVA}.")
    try:
        version = _java_version(java)
    except (OSError, subprocess.SubprocessError) as exc:
        raise JavaMissingError(f"{java} does not run ({exc}): {_INSTALL_JAVA}.") from None
    major = int(re.match(r"(?:1\.)?(\d+)", version).group(1)) if re.match(r"(?:1\.)?(\d+)", version) else 0
    if major < MIN_JAVA:
        raise JavaMissingError(f"{java} is Java {version or '?'}, Spark 4 needs Java {MIN_JAVA}+: {_INSTALL_JAVA}.")
    return java, version


# ---- master URL ------------------------------------------------------------------------------
def _tcp_reachable(host: str, port: int, timeout: float) -> str | None:
    """None when host:port accepts a TCP connection, else why not."""
    try:
        socket.getaddrinfo(host, port)
    except socket.gaierror:
        return f"cannot resolve host {host!r}"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"nothing answers at {host}:{port} ({exc.strerror or exc})"


def check_master(master: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line naming Nbscale.master, when the master cannot be used."""
    fix = "fix it with %nbscale connect --master URL (local[*] runs on this machine)"
    if not master:
        raise SettingError(
            f"Nbscale.master is not set: the 'nbscale — Spark cluster' kernel reads it from "
            f"{CLUSTER_KERNEL_MASTER_ENV} (export {CLUSTER_KERNEL_MASTER_ENV}=spark://HOST:7077 before "
            f"starting Jupyter), or {fix}."
        )
    targets: list[tuple[str, int]] = []
    if master.startswith("spark://"):
        for hostport in master[len("spark://"):].split(","):
            host, _, port = hostport.rpartition(":")
            targets.append((host, int(port)))
    elif master.startswith(("k8s://", "sc://")):
        rest = master.split("://", 2)[-1].split("/")[0]
        host, _, port = rest.partition(":")
        default_port = 15002 if master.startswith("sc://") else (443 if "https" in master else 80)
        targets.append((host, int(port or default_port)))
    elif master == "yarn" and not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
        raise SettingError("Nbscale.master = 'yarn' needs HADOOP_CONF_DIR or YARN_CONF_DIR set to your cluster's configuration directory.")
    problems = [p for p in (_tcp_reachable(h, p, timeout) for h, p in targets) if p]
    if targets and len(problems) == len(targets):  # HA masters: one answering is enough
        raise SettingError(f"Nbscale.master = {master!r}: {problems[0]}; {fix}.")


# ---- Spark session ---------------------------------------------------------------------------
def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def _bind_address(host: str) -> str:
    """The address a host name stands for: the driver binds that interface, never all of them."""
    if _is_ip(host):
        return host
    try:
        return socket.getaddrinfo(host, None)[0][4][0]
    except socket.gaierror:
        return host  # Spark's start then names the name it cannot use


def driver_host() -> str:
    """The address executors connect back to: Nbscale.host when chosen or on a local master; on a
    cluster master otherwise the address of this machine's interface that routes to the master
    (127.0.0.1 there would send every executor to its own loopback)."""
    from .clustercheck import is_cluster, route_address

    cfg = settings()
    if cfg.host_was_chosen() or not is_cluster(cfg.master):
        return cfg.host
    return route_address(cfg.master) or cfg.host


def allocation_file(folder: Path, pools: dict[str, int]) -> Path:
    """Spark's fair-scheduler allocation file for `pools` (Nbscale.pools; see nbscale.scheduling), in `folder`."""
    entries = "".join(f"  <pool name={quoteattr(name)}><schedulingMode>FAIR</schedulingMode><weight>{weight}</weight>"
                      "<minShare>0</minShare></pool>\n" for name, weight in sorted(pools.items()))
    path = Path(folder) / "spark-pools.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0"?>\n<allocations>\n{entries}</allocations>\n')
    return path


def spark_conf() -> dict[str, str]:
    """The Spark settings nbscale starts its session with (user's spark_conf wins)."""
    cfg = settings()
    work = work_dir(cfg.data_dir)  # the data dir, or a scratch folder when it is read-only
    host = driver_host()
    conf = {
        "spark.driver.host": host,
        "spark.driver.bindAddress": _bind_address(host),
        "spark.driver.memory": cfg.driver_memory,
        # nbscale shows its own progress bars; Spark's console bar would garble cell output.
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.warehouse.dir": str(work / "spark-warehouse"),
        "spark.sql.session.timeZone": "UTC",
        # Fair sharing between a notebook's concurrent jobs: a background training (in its own --pool)
        # does not starve the cells run meanwhile.
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(allocation_file(work, cfg.pools)),
        # %ingest --encoding cp1252 (or any Java charset): Spark 4 alone takes only ISO-8859-1, US-ASCII, UTF-8/16/32.
        "spark.sql.legacy.javaCharsets": "true",
    }
    conf.update(limits.spark_conf())
    conf.update(cfg.spark_conf)
    return conf


def connect_conf() -> dict[str, str]:
    """Over Spark Connect the server owns the driver and its static settings: only session settings go."""
    return {"spark.sql.session.timeZone": "UTC", "spark.sql.legacy.javaCharsets": "true", **settings().spark_conf}


def driver_log() -> Path:
    # Over Spark Connect the data dir is on the cluster; this machine's log goes to its own folder.
    return (local_dir() if over_connect() else work_dir()) / "logs" / "spark-driver.log"


@contextlib.contextmanager
def native_output_to(path: Path):
    """Point fds 1 and 2 at `path` for the block: native code (the Spark JVM we launch, which
    inherits them for its whole life; TensorFlow's C++ logging at import) writes there instead
    of into every notebook cell (ipykernel forwards fd output to the frontend)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _jvm_start_error(log: Path, offset: int) -> str | None:
    """The JVM's own reason for dying at start (e.g. a bad -Xmx): what it logged since `offset`."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if re.search(r"(Error|Exception|Invalid|Could not|Cannot)", line) and not re.match(r"\s+at |.* WARN ", line):
            return first_useful_line(line)
    return None


def _settings_key() -> tuple:
    cfg = settings()
    return (cfg.master, driver_host(), cfg.driver_memory, cfg.data_dir, cfg.app_name, tuple(sorted(cfg.spark_conf.items())),
            tuple(sorted(cfg.pools.items())))


def _alive(session) -> bool:
    try:
        if over_connect():
            return not session.is_stopped
        return not session.sparkContext._jsc.sc().isStopped()
    except Exception:  # noqa: BLE001 - a dead gateway raises anything; dead is the answer
        return False


def active_spark():
    """The running session nbscale started, or None (never starts one)."""
    with _lock:
        return _spark if _spark is not None and _alive(_spark) else None


def spark():
    """The SparkSession for the current settings, started on first need.

    A session started with other settings (another master, say) is stopped and replaced.
    """
    global _spark, _spark_key
    with _lock:
        key = _settings_key()
        if _spark is not None and _spark_key == key and _alive(_spark):
            if not over_connect() or _connect_session_answers(_spark):
                return _spark
            _spark = _spark_key = None  # the server restarted (its sessions are gone): a new session, no goodbye to the old
        cfg = settings()
        find_java()
        check_master(cfg.master)
        stop_spark()
        host = driver_host()
        if _is_ip(host):
            os.environ["SPARK_LOCAL_IP"] = host  # the Spark UI and block manager bind here too
        # Executors (also on a local standalone cluster) run this interpreter, with this stack.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from pyspark.sql import SparkSession

        builder = SparkSession.builder.appName(cfg.app_name)
        connect = over_connect()
        builder = builder.remote(cfg.master) if connect else builder.master(cfg.master)
        for name, value in (connect_conf() if connect else spark_conf()).items():
            builder = builder.config(name, value)
        if not connect:
            os.environ["SPARK_LOCAL_DIRS"] = str(work_dir(cfg.data_dir) / "spark-tmp")  # shuffle/spill files
        log = driver_log()
        log_start = log.stat().st_size if log.exists() else 0
        try:
            with native_output_to(log):
                # Over Connect, getOrCreate would hand back PySpark's default session, which may be one a
                # restarted server no longer knows.
                session = builder.create() if connect else builder.getOrCreate()
        except Exception as exc:  # noqa: BLE001 - any start failure becomes one line
            reason = _jvm_start_error(log, log_start) or first_useful_line(exc)
            raise SparkStartError(
                f"Spark did not start with Nbscale.master = {cfg.master!r}: {reason}. "
                f"Check Nbscale.spark_conf and Nbscale.driver_memory; the JVM log is {log}."
            ) from None
        if connect:
            _bound_connect_retries(session)
        _check_cluster(session, log)
        if not cfg.master.startswith("sc://"):
            session.sparkContext.setLogLevel("WARN")
        # PySpark logs every SQL error as a multi-line JSON record on stderr before raising it;
        # the exception itself (one line through nbscale's errors) is what the user needs.
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        _spark, _spark_key = session, key
        return session


CONNECT_RETRY_S = 30
CONNECT_RECHECK_S = 5  # a Connect session that answered this recently is taken as alive without asking again
_connect_answered_at = 0.0


def _connect_session_answers(session) -> bool:
    """Whether the Connect server still knows `session` (one small RPC, at most every CONNECT_RECHECK_S). A
    server that does not answer at all is one line here, instead of a hang in whatever comes next."""
    global _connect_answered_at
    if time.monotonic() - _connect_answered_at < CONNECT_RECHECK_S:
        return True
    try:
        # An execution, not an analysis: a restarted server answers analyses for an unknown session and only
        # refuses its executions (INVALID_HANDLE.SESSION_CHANGED). SELECT 1 runs on the server alone, no job.
        session.sql("SELECT 1").collect()
    except Exception:  # noqa: BLE001 - any failure means this session cannot be used
        # Not even "the server is gone": a server that is back may still be refused by this session's gRPC channel,
        # whose reconnect backoff grew while the server was away. A new session (a new channel) asks afresh, and its
        # check says in one line if the server is really gone.
        return False
    _connect_answered_at = time.monotonic()
    return True


def _bound_connect_retries(session) -> None:
    """PySpark's Connect client retries an unreachable server for at least 10 minutes (its DefaultPolicy), a
    silent cell all that time: nbscale gives up after about CONNECT_RETRY_S and says so (errors.spark_errors)."""
    from pyspark.sql.connect.client.retries import DefaultPolicy

    # 50 ms x4 each time, capped at 8 s: 0.05+0.2+0.8+3.2+8+8+8 ~ 28 s (plus jitter) before the cell fails.
    session.client.set_retry_policies([DefaultPolicy(max_retries=7, max_backoff=8000)])


def _check_cluster(session, log: Path) -> None:
    """On a cluster master: executors must come and every host must run this stack and see the data
    dir; otherwise the session stops here with the one line saying why (no cell waits forever)."""
    from . import clustercheck

    clustercheck.forget()
    cfg = settings()
    if over_connect(cfg.master):
        try:
            clustercheck.check_over_connect(session, cfg.master, cfg.data_dir, cfg.executor_wait)
        except BaseException:
            session.stop()
            raise
        return
    if not clustercheck.is_cluster(cfg.master):
        return
    try:
        clustercheck.check(session, cfg.data_dir, log, cfg.executor_wait)
    except BaseException:
        try:
            session.stop()
        finally:
            _shutdown_jvm()
        raise


def stop_spark() -> bool:
    """Stop the session nbscale started, and its JVM; True when there was one.

    The JVM goes too: settings such as driver memory or the bind address only apply when a JVM
    starts, so a restart with new settings needs a new one (and a stopped session frees memory).
    """
    global _spark, _spark_key
    with _lock:
        session, key, _spark, _spark_key = _spark, _spark_key, None, None
        if session is None:
            return False
        try:
            session.stop()
        except Exception:  # noqa: BLE001 - stopping a session whose JVM is gone is already done
            pass
        if not key[0].startswith("sc://"):  # Spark Connect has no local JVM
            _shutdown_jvm()
        uilinks.forget("spark")
        return True


def _shutdown_jvm() -> None:
    from pyspark import SparkContext

    gateway, SparkContext._gateway, SparkContext._jvm = SparkContext._gateway, None, None
    if gateway is None:
        return
    try:
        gateway.shutdown()
    except Exception:  # noqa: BLE001 - a gateway already gone needs no shutdown
        pass
    proc = getattr(gateway, "proc", None)
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def spark_info() -> dict:
    """What the status card says about Spark, without starting it."""
    session = active_spark()
    info = {"master": settings().master, "started": session is not None, "ui_url": None, "app_id": None}
    if session is not None and not settings().master.startswith("sc://"):
        sc = session.sparkContext
        # Proxied, the link opens the jobs page: Spark answers "/" with a redirect to a full URL of the proxy's
        # host without the proxy's path, which the proxy passes through as it is.
        ui = sc.uiWebUrl and uilinks.browser_url(sc.uiWebUrl, "spark", page="jobs/")
        info.update(ui_url=ui, app_id=sc.applicationId, version=session.version)
    return info


# ---- MLflow ----------------------------------------------------------------------------------
def check_tracking_uri(uri: str, timeout: float = 3.0) -> None:
    """Fail in one line naming Nbscale.tracking_uri when the tracking store cannot be used."""
    fix = "fix it with %nbscale connect --tracking-uri URI"
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user's own server
                if response.status == 200:
                    return
                problem = f"GET {url} answered {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"GET {url} answered {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            problem = f"no MLflow server answers at {uri} ({getattr(exc, 'reason', exc)})"
        raise SettingError(f"Nbscale.tracking_uri = {uri!r}: {problem}; {fix}.")
    local_dir = None
    if uri.startswith("sqlite:///"):
        local_dir = Path(uri[len("sqlite:///"):]).parent  # sqlite:////abs/x.db -> /abs
    elif uri.startswith("file:"):
        local_dir = Path(urllib.parse.urlparse(uri).path)
    if local_dir is not None:
        try:
            local_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SettingError(f"Nbscale.tracking_uri = {uri!r}: cannot create {local_dir} ({exc.strerror}); {fix}.") from None


def artifact_root() -> str:
    """Where a local tracking store keeps artifacts: under the data dir, never the notebook's cwd."""
    return (Path(settings().data_dir) / "mlartifacts").as_uri()


def mlflow():
    """The `mlflow` module, pointed at Nbscale.tracking_uri (checked first)."""
    uri = settings().tracking_uri
    check_tracking_uri(uri)
    import mlflow as _mlflow

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # schema set-up chatter
    for name, value in MLFLOW_ENV.items():  # the user's own settings of these win
        os.environ.setdefault(name, value)
    _mlflow.set_tracking_uri(uri)
    return _mlflow


def tracking_client():
    """An MLflow client of Nbscale.tracking_uri (runs, registered models, aliases)."""
    return mlflow().MlflowClient()


# A tracking server that stops answering fails a call in seconds (MLflow's default: 7 retries with backoff).
MLFLOW_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
              # With tqdm installed (Optuna brings it) MLflow draws a progress widget per artifact download.
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def experiment_id(name: str) -> str:
    """Id of the MLflow experiment `name`, created (artifacts under the data dir) when missing."""
    client = mlflow().MlflowClient()
    with _creating:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        remote = settings().tracking_uri.startswith(("http://", "https://", "databricks"))
        try:
            return client.create_experiment(name, artifact_location=None if remote else f"{artifact_root()}/{name}")
        except Exception:  # noqa: BLE001 - another kernel created it first (a unique-name error): use that one
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id


_creating = threading.Lock()  # concurrent steps of one kernel create an experiment once

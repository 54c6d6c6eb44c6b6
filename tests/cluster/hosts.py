"""N "machines" on this one, for tests of nbscale on a real multi-host Spark standalone cluster.

Each host is a Linux network namespace with its own address on a private test bridge, and its own
private /tmp (a tmpfs in a mount namespace of its own); the hosts and the notebook (this process, in
the root namespace, at the bridge's address) share only that network and one folder, `shared`,
which plays the NFS mount every host sees at the same path. Host 1 runs the standalone master; every
host runs a worker. All of it comes from the project's own PySpark (`bin/spark-class`).

Needs root (CI and the developers' machines run as root). Where the namespaces cannot be built it
raises `HostsUnavailable` with the command that failed: a test that needs hosts then fails loudly.
Every process started here is in one process group per host and ends with `stop()`, by pid.
"""
from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MASTER_PORT = 7077
MASTER_UI_PORT = 8080
CONNECT_PORT = 15002
MLFLOW_PORT = 5000
START_TIMEOUT_S = 120


class HostsUnavailable(RuntimeError):
    pass


def _sh(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise HostsUnavailable(f"{' '.join(argv)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[:300]}"
                               " — the multi-host tests build network namespaces and need root (CAP_SYS_ADMIN, CAP_NET_ADMIN).")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.0.0.0/8 that no interface or route of this machine uses."""
    used = [ipaddress.ip_network(line.split()[0], strict=False) for line in _sh("ip", "-4", "route", "show").splitlines()
            if line.split() and line.split()[0] != "default"]
    used += [ipaddress.ip_interface(word).network for line in _sh("ip", "-4", "-o", "addr", "show").splitlines()
             for word in line.split()[3:4]]
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(200, 250)}.{rng.randrange(1, 255)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise HostsUnavailable("no free 10.x.y.0/24 subnet for the test hosts")


def spark_class() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "bin" / "spark-class"


@dataclass
class Host:
    name: str  # network namespace
    ip: str
    home: Path  # its logs, in the notebook's view (outside every /tmp)
    pid: int | None = None  # leader of its process group: master (host 1), worker, executors
    hidden: list[str] = field(default_factory=list)

    @property
    def worker_log(self) -> Path:
        return self.home / "worker.log"

    @property
    def master_log(self) -> Path:
        return self.home / "master.log"

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a command on this host: in its network and mount namespaces (its private /tmp)."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-n", "--", *argv], capture_output=True, text=True, timeout=timeout)


class Hosts:
    """`with Hosts(2) as hosts:` -> hosts.master_url, hosts.notebook_ip, hosts.shared, hosts.hosts."""

    def __init__(self, count: int = 2, cores: int = 2, memory: str = "3g", hide: dict[int, list[str]] | None = None,
                 master: bool = True):
        self.count, self.cores, self.memory, self.hide, self.with_master = count, cores, memory, hide or {}, master
        self.tag = f"nbs{random.Random(os.getpid() ^ time.monotonic_ns()).randrange(16**4):04x}"
        self.base = Path(tempfile.mkdtemp(prefix=f"nbscale-hosts-{self.tag}-", dir="/var/tmp"))
        self.shared = self.base / "shared"
        self.hosts: list[Host] = []
        self.bridge = f"{self.tag}br"
        self.notebook_ip = ""
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self._connect_pids: list[int] = []
        self._service_pids: list[int] = []  # other servers on the hosts (MLflow)

    # ---- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> "Hosts":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def master_url(self) -> str:
        return f"spark://{self.hosts[0].ip}:{MASTER_PORT}"

    def start(self) -> None:
        self.shared.mkdir(parents=True)
        os.chmod(self.base, 0o755)
        net = _free_subnet()
        addresses = list(net.hosts())
        self.notebook_ip = str(addresses[0])
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _sh("ip", "addr", "add", f"{self.notebook_ip}/{net.prefixlen}", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            self._add_host(i, str(addresses[9 + i]), net.prefixlen)
        for host in self.hosts:
            self._launch(host, master=self.with_master and host is self.hosts[0])
        for host in self.hosts:
            self._wait(host.worker_log, "Successfully registered with master", host)

    def _add_host(self, number: int, ip: str, prefix: int) -> None:
        ns, outside, inside = f"{self.tag}h{number}", f"{self.tag}v{number}", f"{self.tag}p{number}"
        _sh("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        _sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        self._links.append(outside)
        _sh("ip", "link", "set", inside, "netns", ns)
        _sh("ip", "link", "set", outside, "master", self.bridge, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/{prefix}", "dev", inside)
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        home = self.base / f"host{number}"
        home.mkdir()
        self.hosts.append(Host(ns, ip, home, hidden=list(self.hide.get(number, []))))

    def _launch(self, host: Host, master: bool) -> None:
        """One shell per host, in the host's namespaces with a private /tmp: (master and) worker."""
        spark = str(spark_class())
        master_cmd = (f'"{spark}" org.apache.spark.deploy.master.Master --host {host.ip} --port {MASTER_PORT} '
                      f'--webui-port {MASTER_UI_PORT} > "{host.master_log}" 2>&1 &\n') if master else ""
        hide = "".join(f'mount -t tmpfs -o size=1m nbscale-hidden "{path}"\n' for path in host.hidden)
        # The project's venv and sources, when this checkout lives under /tmp (a CI clone): every host has
        # them at the same path, as a cluster with the notebook's environment installed would.
        keep = [(path, host.home / f"keep{i}") for i, path in enumerate(_installed_under_tmp())]
        for _, holder in keep:
            holder.mkdir(exist_ok=True)
        hold = "".join(f'mount --bind "{path}" "{holder}"\n' for path, holder in keep)
        restore = "".join(f'mkdir -p "{path}"\nmount --bind "{holder}" "{path}"\n' for path, holder in keep)
        script = (
            "set -e\n"
            f"{hold}"
            "mount -t tmpfs -o size=4g nbscale-tmp /tmp\n"  # this host's own /tmp
            f"{restore}"
            f"{hide}"
            "mkdir -p /tmp/spark-work /tmp/spark-local\n"
            f"{master_cmd}"
            f'"{spark}" org.apache.spark.deploy.worker.Worker --host {host.ip} --cores {self.cores} --memory {self.memory} '
            f'--webui-port 8081 --work-dir /tmp/spark-work {self.master_url} > "{host.worker_log}" 2>&1 &\n'
            "wait\n"
        )
        env = self._host_env(host)
        with open(host.home / "host.log", "ab") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", host.name, "unshare", "--mount", "--propagation", "private",
                                     "sh", "-c", script], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
        host.pid = proc.pid
        if master:
            self._wait(host.master_log, "I have been elected leader", host)

    @staticmethod
    def _host_env(host: Host) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_", "NBSCALE_", "MLFLOW_"))}
        env.update(SPARK_LOCAL_IP=host.ip, SPARK_LOCAL_DIRS="/tmp/spark-local", SPARK_WORKER_DIR="/tmp/spark-work",
                   SPARK_LOG_DIR=str(host.home), SPARK_PID_DIR=str(host.home),
                   SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false", SPARK_DAEMON_MEMORY="256m")
        return env

    def _wait(self, log: Path, text: str, host: Host, pid: int | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if text in (log.read_text(errors="replace") if log.exists() else ""):
                return
            if not _alive(pid or host.pid or 0):
                break
            time.sleep(0.3)
        logged = log.read_text(errors="replace") if log.exists() else ""
        first_error = next((line for line in logged.splitlines() if "Exception" in line or " ERROR " in line), "")
        tail = first_error + "\n...\n" + logged[-1500:] + (host.home / "host.log").read_text(errors="replace")[-800:]
        raise HostsUnavailable(f"{host.name} ({host.ip}): {text!r} not seen in {log} within {START_TIMEOUT_S} s:\n{tail}")

    def start_connect(self, port: int = CONNECT_PORT) -> str:
        """A Spark Connect server on host 1 (the driver of one application on this cluster), from the
        project's own PySpark (its jars include spark-connect): the URL a laptop outside the cluster uses."""
        import sys

        host = self.hosts[0]
        log = host.home / "connect.log"
        argv = [str(spark_class()), "org.apache.spark.deploy.SparkSubmit", "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer", "--master", self.master_url, "--name", "nbscale-connect",
                "--conf", f"spark.connect.grpc.binding.port={port}", "--conf", f"spark.connect.grpc.binding.address={host.ip}",
                "--conf", f"spark.driver.host={host.ip}",
                "--conf", f"spark.driver.bindAddress={host.ip}", "--driver-memory", "1g",
                "--conf", "spark.ui.showConsoleProgress=false", "spark-internal"]
        env = self._host_env(host)
        env.pop("SPARK_DAEMON_MEMORY")  # the master's and workers' heap, not this driver's
        env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
        with open(log, "ab") as out:
            proc = subprocess.Popen(["nsenter", "-t", str(host.pid), "-m", "-n", "--", *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self._connect_pids.append(proc.pid)
        self._wait(log, "Spark Connect server started", host, proc.pid)
        return f"sc://{host.ip}:{port}"

    def start_mlflow(self, port: int = MLFLOW_PORT) -> str:
        """A real MLflow tracking server on host 2 (`--serve-artifacts`: runs, registry and model files over HTTP),
        its store in that host's private folder: the one MLflow store a laptop and the cluster's executors both reach."""
        import sys

        host = self.hosts[-1]
        store = host.home / "mlflow"
        store.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "mlflow", "server", "--host", host.ip, "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{store}/mlflow.db", "--serve-artifacts", "--artifacts-destination", str(store / "artifacts")]
        with open(host.home / "mlflow.log", "ab") as out:
            proc = subprocess.Popen(["nsenter", "-t", str(host.pid), "-m", "-n", "--", *argv], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._host_env(host), start_new_session=True)
        self._service_pids.append(proc.pid)
        url = f"http://{host.ip}:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:  # noqa: S310 - the test bed's own server
                    if answer.status == 200:
                        return url
            except OSError:
                time.sleep(0.5)
        raise HostsUnavailable(f"MLflow server on {host.name} ({url}) did not answer within {START_TIMEOUT_S} s:\n"
                               + (host.home / "mlflow.log").read_text(errors="replace")[-1500:])

    def stop_connect(self) -> None:
        for pid in self._connect_pids:
            _kill_group(pid, signal.SIGKILL)
            for _ in range(100):
                if not _group_alive(pid):
                    break
                time.sleep(0.1)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self._connect_pids = []

    def workers(self) -> list[dict]:
        """The master's view of its workers (over the bridge, as any client of the cluster would ask)."""
        with urllib.request.urlopen(f"http://{self.hosts[0].ip}:{MASTER_UI_PORT}/json/", timeout=5) as page:  # noqa: S310
            return [w for w in json.load(page)["workers"] if w["state"] == "ALIVE"]

    def kill_worker(self, number: int) -> None:
        """The Spark worker of host `number` fails: it and its executors die at once (a master there stays)."""
        host = self.hosts[number - 1]
        for pid in _group_members(host.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if pid != host.pid and b"deploy.master.Master" not in command:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stop_connect()
        for pid in self._service_pids:
            _kill_group(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for host in reversed(self.hosts):
            if host.pid is not None:
                _kill_group(host.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for host in self.hosts:
            while host.pid is not None and _group_alive(host.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if host.pid is not None:
                _kill_group(host.pid, signal.SIGKILL)
        for host in self.hosts:
            if host.pid is not None:
                for _ in range(50):
                    if not _group_alive(host.pid):
                        break
                    time.sleep(0.1)
                try:
                    os.waitpid(host.pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        for link in reversed(self._links):
            subprocess.run(["ip", "link", "del", link], capture_output=True, timeout=30)
        self._namespaces, self._links = [], []
        shutil.rmtree(self.base, ignore_errors=True)


def _installed_under_tmp() -> list[str]:
    """This interpreter's environment and nbscale's sources, where they are under /tmp."""
    import sys

    import nbscale

    roots = {Path(sys.prefix).resolve(), Path(nbscale.__file__).resolve().parents[2]}
    under = sorted(str(p) for p in roots if p.is_relative_to("/tmp"))
    return [p for p in under if not any(p != q and Path(p).is_relative_to(q) for q in under)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass

"""The tutorial suite's cost: wall time and peak memory of each notebook run under nbval.

    .venv/bin/python benchmarks/suite.py                      # the default profile
    .venv/bin/python benchmarks/suite.py --profile binder     # what Binder's 2 GiB machines run
    .venv/bin/python benchmarks/suite.py notebooks/04-serve.ipynb

Memory is summed over every process the suite starts — the kernels, their Spark JVMs, the local
standalone cluster's daemons (which detach from their parent), model servers, MLflow — found by a
marker variable they all inherit. RSS counts a shared library once per process that maps it; PSS
shares it out, so it is the closer figure for "how much RAM does this need". Both are printed.
In the binder profile the notebooks' outputs differ from the committed ones (fewer epochs and rows),
so there the notebooks are executed (an error still fails the run) instead of compared.

`--memory-limit 2` runs each notebook as Binder does: inside a memory cgroup of that many GiB (Binder's pods
are cgroups), every process it starts included, no swap. PSS counts clean pages of mapped libraries
(TensorFlow's ~0.45 GiB) that such a cgroup reclaims under pressure instead of failing; the cgroup run says
whether the notebook completes within the limit, and how often the kernel killed a process for memory.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
MARKER = "NBSCALE_SUITE_RUN"
GIB = 1024 ** 3
NOTEBOOK_TIMEOUT_S = 900
# Run by their own tests (test_multihost, test_connect) on the hosts and the Spark Connect server those build:
# alone they have no cluster to talk to.
ON_BUILT_HOSTS = {"10-multi-host.ipynb", "11-laptop-connect.ipynb"}


def tagged_memory(tag: str) -> tuple[int, int, list[tuple[str, int]]]:
    """(RSS, PSS) summed over the live processes carrying the marker, and each one's (role, PSS)."""
    rss = pss = 0
    each = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) != tag:
                continue
            info = proc.memory_full_info()
            rss, pss = rss + info.rss, pss + info.pss
            each.append((role(proc), info.pss))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return rss, pss, each


def memory_cgroup(name: str, limit_gib: float) -> Path:
    """A new memory cgroup (v1 or v2) below this process's own, limited to `limit_gib` GiB, swap included."""
    v1 = next((line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.split(":")[1] == "memory"), None)
    limit = str(int(limit_gib * GIB))
    if v1 is not None:
        group = Path("/sys/fs/cgroup/memory") / v1.lstrip("/") / name
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(limit)
        if (group / "memory.memsw.limit_in_bytes").exists():
            (group / "memory.memsw.limit_in_bytes").write_text(limit)
    else:
        own = Path("/proc/self/cgroup").read_text().splitlines()[0].split(":", 2)[2]
        group = Path("/sys/fs/cgroup") / own.lstrip("/") / name
        group.mkdir()
        (group / "memory.max").write_text(limit)
        (group / "memory.swap.max").write_text("0")
    return group


def cgroup_outcome(group: Path) -> tuple[int, int]:
    """(peak bytes charged, processes killed for memory) of a cgroup whose processes have ended."""
    if (group / "memory.max_usage_in_bytes").exists():
        peak = int((group / "memory.max_usage_in_bytes").read_text())
        events = (group / "memory.oom_control").read_text()
    else:
        peak = int((group / "memory.peak").read_text()) if (group / "memory.peak").exists() else -1
        events = (group / "memory.events").read_text()
    kills = next((int(line.split()[1]) for line in events.splitlines() if line.startswith("oom_kill ")), 0)
    return peak, kills


def role(proc: psutil.Process) -> str:
    """A short name for what a process of the suite is."""
    cmdline = proc.cmdline()
    text = " ".join(cmdline)
    daemon = "-m nbscale.distributed.preload"  # the Binder profile's PySpark daemon (the driver's command line names it too)
    if daemon in text:  # the daemon, the Python workers it forked and the training workers they forked
        depth, parent = 0, proc.parent()
        while parent is not None and daemon in " ".join(parent.cmdline()):
            depth, parent = depth + 1, parent.parent()
        return ("PySpark daemon (TF preloaded)", "PySpark worker", "TF training worker (forked)")[min(depth, 2)]
    for needle, name in (("ipykernel", "kernel"), ("SparkSubmit", "Spark driver JVM"), ("deploy.master", "Spark master JVM"),
                         ("deploy.worker", "Spark worker JVM"), ("CoarseGrainedExecutorBackend", "Spark executor JVM"),
                         ("pyspark.daemon", "PySpark worker"), ("pyspark/daemon", "PySpark worker"),
                         ("nbscale.distributed.worker", "TF training worker"), ("nbscale.serving.replica", "model replica"),
                         ("nbscale.serving.front", "serving front"), ("pytest", "pytest (nbval)")):
        if needle in text:
            return name
    return cmdline[0].rsplit("/", 1)[-1] if cmdline else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", default=sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb")
                                                               if p.name not in ON_BUILT_HOSTS))
    parser.add_argument("--profile", choices=("full", "binder"), default="full")
    parser.add_argument("--memory-limit", type=float, metavar="GIB", help="run each notebook in a memory cgroup of this size (root)")
    args = parser.parse_args()

    tag = uuid.uuid4().hex
    env = dict(os.environ, **{MARKER: tag, "NBSCALE_PROFILE": args.profile, "NBSCALE_DATA_DIR": tempfile.mkdtemp(prefix="nbscale-suite-")})
    if args.profile == "binder":  # as binder/start sets them
        env.update(NBSCALE_DRIVER_MEMORY="512m", NBSCALE_MASTER="local[2]", MALLOC_ARENA_MAX="2")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax"]
    else:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                   "--nbval-sanitize-with", str(ROOT / "tests" / "nbval-sanitize.cfg")]
    failed, rows = 0, []
    for notebook in args.notebooks:  # one pytest run each, so every notebook gets its own peak
        peak, at_peak = [0, 0], []
        done = threading.Event()

        def sample(done=done, peak=peak, at_peak=at_peak):  # this notebook's, bound now
            while not done.wait(0.5):
                rss, pss, each = tagged_memory(tag)
                peak[0] = max(peak[0], rss)
                if pss > peak[1]:
                    peak[1], at_peak[:] = pss, each

        sampler = threading.Thread(target=sample, daemon=True)
        started = time.monotonic()
        sampler.start()
        group = memory_cgroup(f"nbscale-suite-{tag[:8]}-{len(rows)}", args.memory_limit) if args.memory_limit else None
        enter = (lambda group=group: (group / "cgroup.procs").write_text(str(os.getpid()))) if group else None
        if group is not None:  # a fresh machine's pod: libraries it maps are read (and charged) inside its limit
            Path("/proc/sys/vm/drop_caches").write_text("1")
        try:
            outcome = subprocess.run([*command, notebook], cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=enter,
                                     timeout=NOTEBOOK_TIMEOUT_S)
        except subprocess.TimeoutExpired as late:  # e.g. a kernel killed for memory that nbval keeps waiting on
            outcome = subprocess.CompletedProcess(late.cmd, 1, f"timed out after {NOTEBOOK_TIMEOUT_S} s", "")
        done.set()
        sampler.join()
        rows.append((Path(notebook).stem, time.monotonic() - started, *peak))
        if outcome.returncode:
            failed += 1
            print(outcome.stdout[-3000:])
        limited = ""
        if group is not None:
            for pid in (group / "cgroup.procs").read_text().split():  # what the notebook left (a killed kernel's cluster)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(2)
            charged, kills = cgroup_outcome(group)
            limited = f"  in {args.memory_limit:g} GiB: peak charged {charged / GIB:.2f} GiB, {kills} killed for memory"
            try:
                group.rmdir()
            except OSError as busy:  # a process outlived the notebook: the group stays, the run goes on
                limited += f" (cgroup {group} kept: {busy.strerror})"
        print(f"{rows[-1][0]:<22} {rows[-1][1]:6.0f} s  peak RSS {rows[-1][2] / GIB:.2f} GiB  PSS {rows[-1][3] / GIB:.2f} GiB"
              + limited + ("  FAILED" if outcome.returncode else ""), flush=True)
        roles: dict[str, list[int]] = {}
        for name, pss in at_peak:
            roles.setdefault(name, []).append(pss)
        print("    at the peak: " + ", ".join(f"{name} {sum(v) / GIB:.2f}" + (f" ({len(v)})" if len(v) > 1 else "")
                                           for name, v in sorted(roles.items(), key=lambda kv: -sum(kv[1]))), flush=True)
    subprocess.run(["pkill", "-f", env["NBSCALE_DATA_DIR"]], check=False)  # anything the suite left behind
    if not failed:  # a failed run's data dir stays, for its logs
        shutil.rmtree(env["NBSCALE_DATA_DIR"], ignore_errors=True)
    total = sum(r[1] for r in rows)
    print(f"profile {args.profile}: {len(rows)} notebooks in {total / 60:.1f} min (budget 15); "
          f"peak RSS {max(r[2] for r in rows) / GIB:.2f} GiB, peak PSS {max(r[3] for r in rows) / GIB:.2f} GiB "
          f"(budget 2 GiB in the binder profile); {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

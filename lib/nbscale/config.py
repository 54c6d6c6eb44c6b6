"""The one settings object, `Nbscale` (traitlets).

Precedence: `%config Nbscale.x = ...` / `%nbscale connect` / kernel command line  >
`NBSCALE_*` environment variables  >  embedded defaults (Spark local[*], MLflow on a SQLite
file under the data directory, everything bound to 127.0.0.1).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from traitlets import Dict, Float, Integer, Unicode, default, observe, validate
from traitlets.config import SingletonConfigurable

from .errors import SettingError

ENV_PREFIX = "NBSCALE_"
# The "nbscale — Spark cluster" kernel sets NBSCALE_KERNEL=cluster and takes its master from here,
# so one Jupyter server can offer a local kernel and a cluster kernel side by side.
CLUSTER_KERNEL_MASTER_ENV = "NBSCALE_CLUSTER_MASTER"
# The user's MLFLOW_TRACKING_URI, read once: mlflow.set_tracking_uri() writes that variable into
# this process, and a default must not follow what nbscale itself set.
_USER_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI")

_MASTER_FORMS = [
    r"local",
    r"local\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\]",
    r"local-cluster\[[1-9]\d*,\s*[1-9]\d*,\s*[1-9]\d*\]",
    r"spark://[\w.\-]+:\d+(,[\w.\-]+:\d+)*",
    r"yarn",
    r"k8s://https?://[\w.\-]+(:\d+)?",
    r"sc://[\w.\-]+(:\d+)?(/.*)?",
]
_MASTER_RE = re.compile("^(" + "|".join(_MASTER_FORMS) + ")$")
_TRACKING_SCHEMES = ("sqlite:///", "file:/", "http://", "https://", "postgresql", "mysql", "mssql", "databricks")


DEFAULT_POOLS = {"interactive": 4, "background": 1}
PROFILES = ("full", "binder")


def _env(name: str, fallback: str | None = None) -> str | None:
    return os.environ.get(ENV_PREFIX + name, fallback)


def _env_count(name: str, fallback: int, unit: str) -> int:
    """NBSCALE_<name> as a whole number of 1 or more, or one line saying how to write it."""
    raw = _env(name, str(fallback))
    if not raw.isdigit() or int(raw) < 1:
        raise SettingError(f"{ENV_PREFIX}{name}={raw!r} is not a whole number of {unit}: write e.g. {fallback}.")
    return int(raw)


def default_tracking_uri(data_dir: str) -> str:
    return "sqlite:///" + str(Path(data_dir) / "mlflow.db")


class Nbscale(SingletonConfigurable):
    """nbscale settings. Change them with `%config Nbscale.<name> = value`, with
    `%nbscale connect --master URL [--tracking-uri URI]`, or with NBSCALE_<NAME> variables."""

    master = Unicode(
        help="Spark master URL: local[*] (default), spark://host:7077 (standalone), yarn, "
        "k8s://https://host:443, sc://host:15002 (Spark Connect). Env: NBSCALE_MASTER.",
    ).tag(config=True)
    tracking_uri = Unicode(
        help="MLflow tracking URI. Default: a SQLite file under data_dir. Env: NBSCALE_TRACKING_URI "
        "(or MLFLOW_TRACKING_URI).",
    ).tag(config=True)
    data_dir = Unicode(
        help="Where datasets, MLflow's SQLite store and artifacts, checkpoints and job state live. "
        "Env: NBSCALE_DATA_DIR. Default: ~/nbscale-data.",
    ).tag(config=True)
    host = Unicode(
        help="Address the Spark driver, Spark UI and model servers bind to. Default 127.0.0.1; for a cluster master "
        "(spark://, k8s://) left unset, the Spark driver binds the address of the interface that routes to the "
        "master (model servers stay on 127.0.0.1). Set it when the cluster reaches this machine at another address. "
        "Env: NBSCALE_HOST.",
    ).tag(config=True)
    max_request_mb = Integer(
        64, help="Largest request body (MB) a model service's front accepts; larger ones get 413. Env: NBSCALE_MAX_REQUEST_MB.",
    ).tag(config=True)
    traffic_mb = Integer(
        64, help="Megabytes of served traffic (requests, answers, latency) each model version keeps for %drift, on this "
        "machine under the data dir's traffic/ folder; the oldest hours go first. Env: NBSCALE_TRAFFIC_MB.",
    ).tag(config=True)
    traffic_sample = Float(
        1.0, help="Share of served requests the fronts record for %drift and %promote (0.1 records one in ten; 0 none). "
        "Env: NBSCALE_TRAFFIC_SAMPLE.",
    ).tag(config=True)
    executor_wait = Integer(
        60, help="Seconds a new session on a cluster waits for its first executor before it stops and says why "
        "(executors that cannot reach the notebook never register). Env: NBSCALE_EXECUTOR_WAIT.",
    ).tag(config=True)
    driver_memory = Unicode(
        help="spark.driver.memory for the session nbscale starts (used at JVM start only). "
        "Env: NBSCALE_DRIVER_MEMORY.",
    ).tag(config=True)
    spark_conf = Dict(
        help="Extra Spark settings for the session, e.g. {'spark.executor.memory': '4g'}. "
        "Env: NBSCALE_SPARK_CONF as JSON.",
    ).tag(config=True)
    app_name = Unicode("nbscale", help="Spark application name.").tag(config=True)
    pools = Dict(
        help="Spark fair-scheduler pools and their weights, e.g. {'interactive': 4, 'background': 1}: a pool with "
        "weight 4 gets four task slots for every one of a weight-1 pool while both wait for slots. "
        "Env: NBSCALE_POOLS as JSON.",
    ).tag(config=True)
    profile = Unicode(
        help="'full' (default) or 'binder': the Binder profile shrinks epochs, rows and memory so the tutorials fit "
        "a 2 GiB machine, and says so where it does. Env: NBSCALE_PROFILE.",
    ).tag(config=True)

    # ---- defaults from the environment -------------------------------------------------
    @default("master")
    def _default_master(self):
        if os.environ.get("NBSCALE_KERNEL") == "cluster":
            # Empty means "not given": the Spark session start says which variable to set.
            return os.environ.get(CLUSTER_KERNEL_MASTER_ENV, "")
        return _env("MASTER", "local[*]")

    @default("data_dir")
    def _default_data_dir(self):
        return _env("DATA_DIR") or str(Path.home() / "nbscale-data")

    @default("tracking_uri")
    def _default_tracking_uri(self):
        return _env("TRACKING_URI") or _USER_MLFLOW_URI or default_tracking_uri(self.data_dir)

    @default("host")
    def _default_host(self):
        return _env("HOST", "127.0.0.1")

    @default("max_request_mb")
    def _default_max_request_mb(self):
        return _env_count("MAX_REQUEST_MB", 64, "megabytes")

    @default("traffic_mb")
    def _default_traffic_mb(self):
        return _env_count("TRAFFIC_MB", 64, "megabytes")

    @default("traffic_sample")
    def _default_traffic_sample(self):
        raw = _env("TRAFFIC_SAMPLE", "1")
        try:
            share = float(raw)
        except ValueError:
            share = -1.0
        if not 0 <= share <= 1:
            raise SettingError(f"{ENV_PREFIX}TRAFFIC_SAMPLE={raw!r} is not a share between 0 and 1: write e.g. 0.1.")
        return share

    @validate("traffic_sample")
    def _check_traffic_sample(self, proposal):
        if not 0 <= proposal["value"] <= 1:
            raise SettingError(f"Nbscale.traffic_sample = {proposal['value']!r}: the share of requests recorded is between 0 and 1 (e.g. 0.1).")
        return proposal["value"]

    @default("executor_wait")
    def _default_executor_wait(self):
        return _env_count("EXECUTOR_WAIT", 60, "seconds")

    @default("driver_memory")
    def _default_driver_memory(self):
        return _env("DRIVER_MEMORY", "2g")

    @default("spark_conf")
    def _default_spark_conf(self):
        raw = _env("SPARK_CONF")
        if not raw:
            return {}
        try:
            conf = json.loads(raw)
        except ValueError:
            conf = None
        if not isinstance(conf, dict):
            raise SettingError(
                f"NBSCALE_SPARK_CONF={raw!r} is not a JSON object: write it like "
                """'{"spark.executor.memory": "4g"}'."""
            )
        return {str(k): str(v) for k, v in conf.items()}

    @default("pools")
    def _default_pools(self):
        raw = _env("POOLS")
        if not raw:
            return dict(DEFAULT_POOLS)
        try:
            return json.loads(raw)  # checked by _check_pools
        except ValueError:
            raise SettingError(f"NBSCALE_POOLS={raw!r} is not JSON: write it like '{{\"interactive\": 4, \"background\": 1}}'.") from None

    @default("profile")
    def _default_profile(self):
        return _env("PROFILE", "full")

    # ---- validation: one line naming the setting and the fix -------------------------
    @validate("master")
    def _check_master(self, proposal):
        value = proposal["value"].strip()
        if value and not _MASTER_RE.match(value):
            raise SettingError(
                f"Nbscale.master = {value!r} is not a Spark master URL: use local[*], "
                "spark://HOST:PORT, yarn, k8s://https://HOST:PORT or sc://HOST:PORT."
            )
        return value

    @validate("tracking_uri")
    def _check_tracking_uri(self, proposal):
        value = proposal["value"].strip()
        if value.startswith("/"):
            value = "file://" + value
        if not value.startswith(_TRACKING_SCHEMES):
            raise SettingError(
                f"Nbscale.tracking_uri = {value!r} is not an MLflow tracking URI: use "
                "http://HOST:PORT, sqlite:///ABS/PATH.db, file:///ABS/DIR or a database URL."
            )
        return value

    @validate("data_dir")
    def _check_data_dir(self, proposal):
        path = Path(os.path.expandvars(proposal["value"])).expanduser()
        if path.exists() and not path.is_dir():
            raise SettingError(f"Nbscale.data_dir = '{path}' is a file: point it at a directory.")
        return str(path.resolve())

    @validate("host")
    def _check_host(self, proposal):
        value = proposal["value"].strip()
        if not re.match(r"^[\w.\-:]+$", value):
            raise SettingError(f"Nbscale.host = {value!r} is not a host name or IP address: use e.g. 127.0.0.1.")
        return value

    @validate("pools")
    def _check_pools(self, proposal):
        pools = proposal["value"]
        bad = [f"{k}={v!r}" for k, v in pools.items() if not re.match(r"^\w[\w.\-]*$", str(k)) or not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if not isinstance(pools, dict) or bad:
            raise SettingError(f"Nbscale.pools: {', '.join(bad)} is not a pool name with a whole weight of 1 or more: "
                               "write e.g. {'interactive': 4, 'background': 1}.")
        return {str(k): v for k, v in pools.items()}

    @validate("profile")
    def _check_profile(self, proposal):
        value = proposal["value"].strip().lower()
        if value not in PROFILES:
            raise SettingError(f"Nbscale.profile = {value!r} is not a profile: use {' or '.join(PROFILES)}.")
        return value

    @validate("executor_wait")
    def _check_executor_wait(self, proposal):
        if proposal["value"] < 1:
            raise SettingError(f"Nbscale.executor_wait = {proposal['value']} must be 1 second or more.")
        return proposal["value"]

    @observe("host")
    def _remember_host_was_chosen(self, change):
        # Chosen (by %config, connect, a config file): it wins over the address found by routing.
        self.host_chosen = True

    def host_was_chosen(self) -> bool:
        return getattr(self, "host_chosen", False) or _env("HOST") is not None

    @observe("data_dir")
    def _move_default_tracking_uri(self, change):
        # A tracking URI derived from the old data dir follows the data dir; a chosen one stays.
        if isinstance(change["old"], str) and change["old"] and self.tracking_uri == default_tracking_uri(change["old"]):
            self.tracking_uri = default_tracking_uri(change["new"])

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.class_trait_names(config=True)}


def settings() -> Nbscale:
    """The process-wide settings (the same object `%config Nbscale` edits)."""
    return Nbscale.instance()


def over_connect(master: str | None = None) -> bool:
    """The notebook is a Spark Connect client (`sc://`): the driver and the data dir are on the cluster."""
    return (master if master is not None else settings().master).startswith("sc://")

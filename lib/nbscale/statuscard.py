"""The status card: where work goes (Spark, MLflow, data dir), what it runs on (GPUs, stack).

Built without starting Spark or importing TensorFlow: the card must be instant.
"""
from __future__ import annotations

import html
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

from .version import __version__
from .config import settings
from .errors import NbscaleError

STACK = ("pyspark", "pyarrow", "numpy", "pandas", "petastorm", "tensorflow", "tf-keras", "mlflow", "jupyterlab", "ipywidgets")


def stack_versions() -> dict[str, str]:
    versions = {}
    for name in STACK:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def gpus_seen() -> list[str]:
    """GPU names the NVIDIA driver reports (TensorFlow confirms at training time)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.split(" (UUID")[0] for line in out.stdout.splitlines() if line.startswith("GPU ")]


@dataclass
class Status:
    master: str
    spark_started: bool
    spark_ui: str | None
    spark_app_id: str | None
    tracking_uri: str
    data_dir: str
    host: str
    java: str
    gpus: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    cluster: list[str] = field(default_factory=list)  # the connect-time check: hosts, cores, environment

    def rows(self) -> list[tuple[str, str, str | None]]:
        """(label, text, link) rows shared by the text and HTML renderings."""
        if self.spark_started and self.master.startswith("sc://"):
            spark = (f"{self.master} — Spark Connect session open (the driver and its UI are on the cluster)", None)
        elif self.spark_started:
            spark = (f"{self.master} — running ({self.spark_app_id}), UI {self.spark_ui}", self.spark_ui)
        else:
            spark = (f"{self.master or '(not set)'} — not started (starts on first use)", None)
        return [
            ("Spark", *spark),
            ("MLflow", self.tracking_uri, self.tracking_uri if self.tracking_uri.startswith("http") else None),
            ("Data dir", self.data_dir, None),
            ("Binds to", self.host, None),
            *[("Cluster" if i == 0 else "", line, None) for i, line in enumerate(self.cluster)],
            ("Java", self.java, None),
            ("GPUs", ", ".join(self.gpus) if self.gpus else "none seen (training runs on CPU)", None),
            ("Stack", " · ".join(f"{k} {v}" for k, v in self.versions.items()), None),
        ]

    def __repr__(self) -> str:
        lines = [f"nbscale {__version__}"]
        lines += [f"  {label:<9} {text}" for label, text, _ in self.rows()]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = []
        for label, text, link in self.rows():
            value = html.escape(text)
            if link:
                value = f'<a href="{html.escape(link)}" target="_blank">{value}</a>'
            cells.append(f'<tr><th style="text-align:left;padding-right:1em">{label}</th><td style="text-align:left">{value}</td></tr>')
        return (
            '<div class="nbscale-status" style="border:1px solid #ccc;border-radius:6px;padding:6px 10px;display:inline-block">'
            f"<b>nbscale {__version__}</b><table>{''.join(cells)}</table></div>"
        )


def status() -> Status:
    from .clustercheck import last_check
    from .session import driver_host, find_java, spark_info

    cfg = settings()
    try:
        java_path, java_version = find_java()
        java = f"{java_version} ({java_path})"
    except NbscaleError as exc:
        java = f"missing — {exc}"
    spark = spark_info()
    return Status(
        master=cfg.master,
        spark_started=spark["started"],
        spark_ui=spark["ui_url"],
        spark_app_id=spark["app_id"],
        tracking_uri=cfg.tracking_uri,
        data_dir=cfg.data_dir,
        host=cfg.host if driver_host() == cfg.host else f"{cfg.host} (model servers); Spark driver {driver_host()} (routes to the master)",
        java=java,
        gpus=gpus_seen(),
        versions=stack_versions(),
        cluster=(last_check().lines() if spark["started"] and last_check() is not None else []),
    )

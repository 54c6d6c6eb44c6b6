"""nbscale: notebook machine learning from a laptop to a Spark cluster.

`%load_ext nbscale` registers the magics. Importing this package is cheap: TensorFlow,
PySpark and MLflow are imported only when a function first needs them.
"""
from __future__ import annotations

from .version import __version__
from .config import Nbscale, settings  # traitlets only
from .errors import NbscaleError

__all__ = ["Nbscale", "NbscaleError", "__version__", "connect", "settings", "spark", "status"]


def spark():
    """The Spark session for the current settings (started on first call)."""
    from .session import spark as _spark

    return _spark()


def status():
    """Where work goes and what it runs on (does not start Spark)."""
    from .statuscard import status as _status

    return _status()


def connect(master: str | None = None, tracking_uri: str | None = None, data_dir: str | None = None, host: str | None = None):
    """Point nbscale at a Spark master and/or MLflow tracking URI, checked before they are kept."""
    from .connection import connect as _connect

    return _connect(master=master, tracking_uri=tracking_uri, data_dir=data_dir, host=host)


def load_ipython_extension(ipython):
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload

    unload(ipython)


def __getattr__(name):
    # `nbscale.ingest.ingest(...)`, `nbscale.serving.serve(...)`: each module on first use (PEP 562), so
    # `import nbscale` and `%load_ext` import none of them (nor PySpark, TensorFlow or MLflow).
    import importlib
    import importlib.util

    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nbscale' has no attribute {name!r}")

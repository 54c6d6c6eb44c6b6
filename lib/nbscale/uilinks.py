"""Links a browser can open to the UIs a kernel starts (Spark's, MLflow's), wherever JupyterLab runs.

Those UIs listen on the kernel's machine (127.0.0.1, or the Spark driver's address); a browser elsewhere
(JupyterLab on a remote host, Binder) cannot reach them. nbscale's Jupyter server extension proxies them
through the Jupyter server with jupyter-server-proxy, at `{base_url}nbscale/ui/<port>/`: behind the server's
authentication, and only for ports that a running kernel published as one of its UIs. The extension tells the
kernels it starts where that route is through an environment variable (a kernel inherits its server's
environment); a kernel started any other way (nbval, a console) links its UIs directly."""
from __future__ import annotations

import os
import threading
import urllib.parse

from . import events
from .contracts import PublishedUI

PREFIX_VARIABLE = "NBSCALE_UI_PROXY_PREFIX"  # set by nbscale.server in the Jupyter server, e.g. /user/ann/nbscale/ui/
_published: dict[str, PublishedUI] = {}  # kind ("spark", "mlflow") -> what the server may proxy
_lock = threading.Lock()


def browser_url(url: str, kind: str, page: str = "") -> str:
    """The address to show for the UI at `url` (http://host:port/path): through the Jupyter server when this
    kernel's server proxies UIs (the port is then published for it; `page` is added to the path, for a UI whose
    root redirects to an absolute URL that a proxy cannot rewrite), else `url` itself."""
    prefix = os.environ.get(PREFIX_VARIABLE)
    parts = urllib.parse.urlsplit(url)
    if not prefix or parts.scheme != "http" or not parts.hostname or not parts.port:
        return url
    with _lock:
        _published[kind] = PublishedUI(kind=kind, host=parts.hostname, port=parts.port)
    events.emit(events.WORK_STARTED)  # the kernel's state publisher writes uis.json, which the server reads
    path = "/".join(part for part in (parts.path.strip("/"), page.strip("/")) if part)
    return f"{prefix.rstrip('/')}/{parts.port}/" + (f"{path}/" if path else "")


def forget(kind: str) -> None:
    """The UI of `kind` stopped: its port is no longer this kernel's to have proxied."""
    with _lock:
        _published.pop(kind, None)


def published() -> list[PublishedUI]:
    with _lock:
        return sorted(_published.values(), key=lambda ui: ui["kind"])

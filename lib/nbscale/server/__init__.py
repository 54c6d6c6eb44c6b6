"""nbscale's Jupyter server extension: the REST API the nbscale panel reads, under `/nbscale/api/`, and the
kernels' Spark and MLflow UIs under `/nbscale/ui/<port>/` (through jupyter-server-proxy; `nbscale.uilinks`).

Enabled by `make lab`'s set-up (`jupyter server extension enable --sys-prefix nbscale.server`). Every
route requires the server's authentication; kernels' jobs, servers and UIs come from the state files they
publish under the data dir (`nbscale.state`)."""
from __future__ import annotations

import os


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "nbscale.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from jupyter_server.utils import url_path_join

    from ..uilinks import PREFIX_VARIABLE
    from .handlers import routes

    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    web_app.add_handlers(".*$", routes(base_url))
    serverapp.log.info("nbscale: REST API at %snbscale/api/", base_url)
    try:
        from . import uiproxy
    except ImportError as missing:  # an install without it: kernels then link their UIs directly
        serverapp.log.warning("nbscale: no UI proxy (%s); Spark and MLflow UI links point at the kernel's machine", missing)
        return
    web_app.add_handlers(".*$", uiproxy.routes(base_url))
    # Kernels this server starts inherit its environment: that is how they learn where their UIs are proxied.
    os.environ[PREFIX_VARIABLE] = url_path_join(base_url, uiproxy.PATH) + "/"
    serverapp.log.info("nbscale: kernels' Spark and MLflow UIs at %s<port>/", os.environ[PREFIX_VARIABLE])

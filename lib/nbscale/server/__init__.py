"""nbscale's Jupyter server extension: the REST API the nbscale panel reads, under `/nbscale/api/`.

Enabled by `make lab`'s set-up (`jupyter server extension enable --sys-prefix nbscale.server`). Every
route requires the server's authentication; kernels' jobs and servers come from the state files they
publish under the data dir (`nbscale.state`)."""
from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "nbscale.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .handlers import routes

    web_app = serverapp.web_app
    web_app.add_handlers(".*$", routes(web_app.settings["base_url"]))
    serverapp.log.info("nbscale: REST API at %snbscale/api/", web_app.settings["base_url"])

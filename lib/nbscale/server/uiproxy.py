"""`{base_url}nbscale/ui/<port>/...`: a kernel's Spark or MLflow UI, proxied by jupyter-server-proxy.

Not jupyter-server-proxy's own `/proxy/<port>/` route: Spark's UI scripts read the path segment after one
named "proxy" as an application id (the layout of Spark's own reverse proxy), so its executors and stage
pages break under that route. Here only the port of a UI that a live kernel published (`nbscale.uilinks`)
is proxied, to the address that kernel gave; any other port is a 404. Spark renders its links under the
prefix the proxy sends in X-Forwarded-Context; MLflow's UI uses relative links."""
from __future__ import annotations

import tornado.web
from jupyter_server.utils import url_path_join
from jupyter_server_proxy.handlers import LocalProxyHandler, ProxyHandler

from . import views

PATH = "nbscale/ui"


def _published_host(port: str) -> str:
    for ui in views.uis():
        if str(ui["port"]) == port:
            return ui["host"]
    raise tornado.web.HTTPError(404, reason=f"Port {port} is not the UI of a running nbscale kernel")


class UIProxyHandler(LocalProxyHandler):
    """Every HTTP method of LocalProxyHandler ends in `proxy(port, path)`; a websocket in `open`."""

    published_host: str | None = None

    def _route(self, port: str) -> str:
        """The published address of the UI on `port` (read once per request), and the context path the proxy sends
        and rewrites redirects under."""
        self.published_host = _published_host(port)
        self.proxy_base = f"{PATH}/{port}"
        return self.published_host

    def proxy(self, port, proxied_path):
        return ProxyHandler.proxy(self, self._route(port), port, proxied_path)

    async def open(self, port, proxied_path):
        return await self.proxy_open(self._route(port), port, proxied_path)


def _the_published_host(handler: UIProxyHandler, host: str) -> bool:
    """jupyter-server-proxy's host check: only the address the kernel published for this request's port."""
    return host == handler.published_host


def routes(base_url: str) -> list[tuple]:
    return [(url_path_join(base_url, PATH, r"(\d+)(/.*|)"), UIProxyHandler, {"host_allowlist": _the_published_host})]

"""Tornado handlers for `/nbscale/api/...`: each authenticated, each a call of one `views` function
on a worker thread (MLflow and file reads must not block the server's loop)."""
from __future__ import annotations

import asyncio

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..errors import NbscaleError
from . import views


class NbscaleHandler(APIHandler):
    async def answer(self, view, *args, **kwargs) -> None:
        try:
            result = await asyncio.to_thread(view, *args, **kwargs)
        except views.NotFound as missing:
            self.set_status(404)
            result = {"message": str(missing)}
        except NbscaleError as refused:
            self.set_status(400)
            result = {"message": str(refused)}
        self.finish({"result": result} if self.get_status() < 400 else result)


class ViewHandler(NbscaleHandler):
    """GET answers `view(*path_args)`."""
    view = None

    @tornado.web.authenticated
    async def get(self, *args):
        await self.answer(type(self).view, *args)


class ActionHandler(NbscaleHandler):
    """POST answers `action(*path_args)` (a request the kernel carries out)."""
    action = None

    @tornado.web.authenticated
    async def post(self, *args):
        await self.answer(type(self).action, *args)


def _get(view):
    return type(f"Get_{view.__name__}", (ViewHandler,), {"view": staticmethod(view)})


def _post(action):
    return type(f"Post_{action.__name__}", (ActionHandler,), {"action": staticmethod(action)})


class Runs(NbscaleHandler):
    @tornado.web.authenticated
    async def get(self):
        limit = self.get_query_argument("limit", "20")
        if not limit.isdigit():
            raise tornado.web.HTTPError(400, reason=f"limit={limit!r} is not a number")
        await self.answer(views.runs, int(limit))


class Logs(NbscaleHandler):
    @tornado.web.authenticated
    async def get(self):
        if self.get_query_argument("format", "json") != "text":
            return await self.answer(views.log_tail, self.get_query_argument("path", ""))
        try:  # the panel's log link: the tail as a page of text
            tail = await asyncio.to_thread(views.log_tail, self.get_query_argument("path", ""))
        except views.NotFound as missing:
            raise tornado.web.HTTPError(404, reason=str(missing)) from None
        except NbscaleError as refused:
            raise tornado.web.HTTPError(400, reason=str(refused)) from None
        self.finish(tail["text"], set_content_type="text/plain; charset=utf-8")


ROUTES = [
    ("status", _get(views.status)), ("datasets", _get(views.datasets)), (r"datasets/([^/]+)", _get(views.dataset)),
    ("runs", Runs), ("models", _get(views.models)), ("jobs", _get(views.jobs)),
    (r"jobs/([^/]+)/([^/]+)/cancel", _post(views.cancel_job)), ("servers", _get(views.servers)),
    (r"servers/([^/]+)/([^/]+)/stop", _post(views.stop_server)), ("logs", Logs),
]


def routes(base_url: str) -> list[tuple[str, type]]:
    return [(url_path_join(base_url, "nbscale", "api", pattern), handler) for pattern, handler in ROUTES]

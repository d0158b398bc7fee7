"""Tornado handlers: pages, the JSON API, /metrics and static files, all behind one access check.

Routes::

    /  /status /workers /tasks /jobs /logs     the page (one static HTML file; JS picks the view)
    /static/...                                CSS, JS, icon shipped in the package
    /api/summary /api/workers /api/progress    JSON
    /api/tasks?since=T /api/jobs /api/logs[?name=N]
    /metrics                                   Prometheus text format

In token mode every route needs the token. A refused request gets 403 and a body that says only
that a token is needed: no address, no name, no number.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from urllib.parse import urlencode

import tornado.web

from . import api, metrics

logger = logging.getLogger("jobqueue.dashboard")

STATIC = os.path.join(os.path.dirname(__file__), "static")
PAGES = ("status", "workers", "tasks", "jobs", "logs")
FORBIDDEN = "403 Forbidden: this dashboard needs its token; open the link from dashboard_link.\n"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'")


class Guarded(tornado.web.RequestHandler):
    """Checks access before anything else; answers errors with plain text and no details."""

    @property
    def dashboard(self):
        return self.application.settings["jobqueue_dashboard"]

    def set_default_headers(self):
        self.clear_header("Server")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def prepare(self):
        dashboard = self.dashboard
        if not dashboard.require_token:
            return
        query = self.get_query_argument("token", None)
        header = self.request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        cookie = self.get_cookie(dashboard.cookie_name)
        if not any(dashboard.accepts(t) for t in (query, bearer, cookie)):
            raise tornado.web.HTTPError(403)
        if query is not None and dashboard.accepts(query):
            self.set_cookie(dashboard.cookie_name, dashboard.token, httponly=True,
                            samesite="Strict", path="/")
            self.on_token_in_query()

    def on_token_in_query(self):
        """Pages drop the token from the address bar (the cookie carries it from now on)."""

    def write_error(self, status_code, **kwargs):
        # send_error() has cleared the response (headers back to set_default_headers)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if status_code == 403:
            self.finish(FORBIDDEN)
        else:
            self.finish(f"{status_code} {self._reason}\n")


class PageHandler(Guarded):
    def on_token_in_query(self):
        rest = [(k, v.decode()) for k, vs in self.request.query_arguments.items()
                if k != "token" for v in vs]
        # relative, so that it stays under a proxy's prefix (/proxy/8787/workers)
        target = self.request.path.rsplit("/", 1)[-1] or "./"
        self.redirect(target + (f"?{urlencode(rest)}" if rest else ""))

    def get(self, page=None):
        if page is None:
            self.redirect("status")
            return
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("Cache-Control", "no-cache")
        self.write(_index_html())


class StaticHandler(Guarded, tornado.web.StaticFileHandler):
    def set_default_headers(self):
        Guarded.set_default_headers(self)
        self.set_header("Cache-Control", "no-cache")


class ApiHandler(Guarded):
    def set_default_headers(self):
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")

    def reply(self, data):
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(data, default=str, separators=(",", ":")))

    def get(self, what):
        scheduler = self.dashboard.scheduler
        if what == "summary":
            self.reply(api.summary(scheduler))
        elif what == "workers":
            self.reply({"workers": api.workers(scheduler)})
        elif what == "progress":
            self.reply({"groups": api.progress(scheduler.state)})
        elif what == "tasks":
            since = self.get_query_argument("since", None) or None
            try:
                since = float(since) if since is not None else None
            except ValueError:
                raise tornado.web.HTTPError(400) from None
            self.reply(api.task_stream(scheduler.state, since))
        elif what == "jobs":
            self.reply(api.jobs(scheduler))
        else:
            raise tornado.web.HTTPError(404)


class LogsHandler(Guarded):
    async def get(self):
        scheduler = self.dashboard.scheduler
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json")
        name = self.get_query_argument("name", None)
        if name is None:
            self.write(json.dumps({"logs": api.log_names(scheduler)}))
            return
        if name == "scheduler":  # in memory, appended to on this loop: read it here
            data = api.log_text(scheduler, name)
        else:  # a job's log may be a file: read it off the event loop
            data = await asyncio.get_running_loop().run_in_executor(
                None, api.log_text, scheduler, name)
        if data is None:
            raise tornado.web.HTTPError(404)
        self.write(json.dumps(data))


class MetricsHandler(Guarded):
    def get(self):
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.set_header("Cache-Control", "no-store")
        self.write(metrics.render(self.dashboard.scheduler))


class NotFound(Guarded):
    def prepare(self):
        super().prepare()
        raise tornado.web.HTTPError(404)


_INDEX = None


def _index_html() -> bytes:
    global _INDEX
    if _INDEX is None:
        with open(os.path.join(STATIC, "index.html"), "rb") as f:
            _INDEX = f.read()
    return _INDEX


def make_app(dashboard) -> tornado.web.Application:
    pages = "|".join(PAGES)
    return tornado.web.Application(
        [
            (r"/", PageHandler),
            (rf"/({pages})", PageHandler),
            (r"/static/(.*)", StaticHandler, {"path": STATIC}),
            (r"/api/logs", LogsHandler),
            (r"/api/(\w+)", ApiHandler),
            (r"/metrics", MetricsHandler),
        ],
        default_handler_class=NotFound,
        jobqueue_dashboard=dashboard,
        log_function=_log_request,
    )


def _log_request(handler):
    status = handler.get_status()
    if status >= 500:
        logger.warning("dashboard: %d %s", status, handler.request.method)
    elif status == 403:
        logger.debug("dashboard: refused a request without the token from %s",
                     handler.request.remote_ip)

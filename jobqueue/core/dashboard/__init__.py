"""The scheduler's dashboard: static pages fed by a small JSON API, and /metrics for Prometheus.

It runs on the scheduler's own event loop and computes everything when a request comes in: the
scheduler's hot path does no dashboard work beyond one append to ``state.task_stream`` per task.

Access: by default the dashboard listens on 127.0.0.1 only (reach it from a laptop with
``ssh -L 8787:localhost:8787 login-node``). Bound to any other address it asks for a token on
every request (``?token=`` in the link, which sets a cookie, or ``Authorization: Bearer``); the
config key ``scheduler.dashboard-token-required`` (true/false) overrides that choice.

The dashboard token is derived from the cluster token (an HMAC), so the link shown in a notebook
or a log opens the dashboard but cannot connect a client or a worker to the cluster. Anyone who
holds the cluster token may use it on the dashboard as well.
"""
from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import hmac
import ipaddress
import logging
import socket

from .. import notice

logger = logging.getLogger("jobqueue.dashboard")

DEFAULT_HOST = "127.0.0.1"
WILDCARDS = ("0.0.0.0", "::", "*")


def parse_address(address) -> tuple[str, int]:
    """``":8787"``, ``"8787"``, ``8787``, ``"host:8787"``, ``"[::1]:8787"`` -> (host, port).

    A missing host means 127.0.0.1: the dashboard is private unless asked otherwise.
    """
    if isinstance(address, int) and not isinstance(address, bool):
        host, port = "", address
    elif isinstance(address, str):
        text = address.strip()
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port_text = rest.lstrip(":")
        elif text.count(":") == 1 or ":" not in text:
            host, _, port_text = text.rpartition(":")
        else:
            raise ValueError(f"dashboard address {address!r}: write an IPv6 host in brackets, "
                             "e.g. [::1]:8787")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"dashboard address {address!r}: expected host:port, :port or "
                             "port, e.g. :8787 or 0.0.0.0:8787") from None
    else:
        raise ValueError(f"dashboard address {address!r}: expected host:port, e.g. ':8787'")
    if not 0 <= port < 65536:
        raise ValueError(f"dashboard address {address!r}: port {port} is out of range")
    if host == "*":
        host = "0.0.0.0"
    return host or DEFAULT_HOST, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may be reachable from other machines


def derive_token(cluster_token: str) -> str:
    digest = hmac.new(cluster_token.encode(), b"jobqueue dashboard", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:24]).decode()


def _config_token_required():
    try:
        from ... import config

        return config.get("scheduler.dashboard-token-required", None)
    except Exception as e:  # a broken config must not stop the scheduler here; it fails elsewhere
        logger.debug("dashboard: could not read scheduler.dashboard-token-required: %s", e)
        return None


# Limits against slow or idle connections (one byte every few seconds, or none at all): the
# dashboard runs in the scheduler's own process, and anyone who can reach the port may try.
HEADER_TIMEOUT = 20.0      # seconds to send a whole request header (and between requests)
BODY_TIMEOUT = 20.0        # seconds to send a request body
MAX_CONNECTIONS = 256      # open at once; a new one closes the oldest


def _bounded_server(app):
    """tornado's HTTPServer with a cap on open connections: past it, the oldest is closed."""
    from collections import OrderedDict

    from tornado.httpserver import HTTPServer

    class BoundedHTTPServer(HTTPServer):
        def handle_stream(self, stream, address):
            streams = self._streams
            for old in [s for s in streams if s.closed()]:
                del streams[old]
            while len(streams) >= MAX_CONNECTIONS:
                oldest, _ = streams.popitem(last=False)
                oldest.close()
            streams[stream] = None
            super().handle_stream(stream, address)

    server = BoundedHTTPServer(app, idle_connection_timeout=HEADER_TIMEOUT,
                               body_timeout=BODY_TIMEOUT, max_header_size=64 << 10,
                               max_body_size=1 << 20)
    server._streams = OrderedDict()
    return server


class Dashboard:
    """The HTTP server of one scheduler. ``await Dashboard(scheduler, ":8787").start()``."""

    def __init__(self, scheduler, address, require_token=None):
        self.scheduler = scheduler
        self.host, self.port = parse_address(address)
        if require_token is None:
            require_token = _config_token_required()
        if require_token is None:
            require_token = not is_loopback(self.host)
        self.require_token = bool(require_token)
        self.token = derive_token(scheduler.token)
        self.cookie_name = None
        self.server = None
        self.link = None

    def accepts(self, token) -> bool:
        """Is *token* the dashboard token or the cluster token? (constant time)"""
        if not token or not isinstance(token, str):
            return False
        token = token.encode()
        return (hmac.compare_digest(token, self.token.encode())
                | hmac.compare_digest(token, self.scheduler.token.encode()))

    async def start(self):
        from .http import make_app

        sockets = self._bind()
        self.port = sockets[0].getsockname()[1]
        # Cookies are not kept apart by port: two dashboards on one host need two names.
        self.cookie_name = f"jobqueue-dashboard-{self.port}"
        self.server = _bounded_server(make_app(self))
        self.server.add_sockets(sockets)
        self.link = self._link()
        if self.require_token:
            logger.info("dashboard at %s (token required)", self.link.split("?")[0])
        else:
            logger.info("dashboard at %s", self.link)
            if not is_loopback(self.host):
                logger.warning("the dashboard listens on %s without a token: anyone who can "
                               "reach this port sees the cluster", self.host)
        return self

    def _bind(self):
        from tornado.netutil import bind_sockets

        try:
            return bind_sockets(self.port, self.host)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or self.port == 0:
                raise OSError(e.errno, f"the dashboard cannot listen on {self.host}:{self.port}: "
                              f"{e.strerror}; set dashboard_address (or the config key "
                              "scheduler.dashboard-address) to another host:port, or None for "
                              "no dashboard") from e
        sockets = bind_sockets(0, self.host)
        notice.warn(logger, "dashboard port %d is in use (another cluster's dashboard?): using "
                    "port %d instead", self.port, sockets[0].getsockname()[1])
        return sockets

    def _link(self) -> str:
        host = self.host
        if host in WILDCARDS:
            host = _advertised_host(self.scheduler.address) or socket.gethostname()
        if ":" in host:
            host = f"[{host}]"
        link = f"http://{host}:{self.port}/status"
        return f"{link}?token={self.token}" if self.require_token else link

    async def stop(self):
        if self.server is None:
            return
        self.server.stop()
        try:
            await asyncio.wait_for(self.server.close_all_connections(), 2.0)
        except asyncio.TimeoutError:
            logger.debug("dashboard: connections still open after 2 s; leaving them")
        self.server = None


def _advertised_host(address):
    """The host of ``tcp://host:port`` when it is not a loopback address, else None."""
    if not address or "://" not in address:
        return None
    host = address.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
    return None if is_loopback(host) or host in WILDCARDS else host

"""The listener: accepts connections, admits them to their handshake, and serves them.

Connections are accepted a few at a time, each admitted before the next takes a file
descriptor. Those still in their handshake are capped in total and per source address (the
oldest is dropped to make room), so idle connections cannot use up our file descriptors, and
rejections are logged at most once per interval with a count. An authenticated connection
becomes a :class:`~jobqueue.core.comm.Comm` handed to the listener's handler.

A client in the process that runs the scheduler (``Client(LocalCluster())``) reaches it over an
in-memory pipe instead of a loopback socket: the same bytes, handshake and decoder, without the
kernel round trip and the event-loop wake-up that cost ~100 us per message here. Batches on a
pipe carry no MAC: no other process can reach it.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections import OrderedDict

from . import protocol
from .comm import (HANDSHAKE_TIMEOUT, ROLES, Comm, _Copying, _handshake_server, _in_process,
                   _Protocol, as_token, format_address)
from .errors import CommClosedError
from .security import Security

logger = logging.getLogger(__name__)

MAX_HANDSHAKES = 256            # connections in their handshake, per listener
MAX_HANDSHAKES_PER_SOURCE = 64  # ... from one source address
ACCEPT_BURST = 32               # connections accepted per wake-up before their admission
REJECT_LOG_INTERVAL = 10.0



class _PipeTransport(asyncio.Transport):
    """One end of an in-memory connection between two protocols on one event loop.

    Written bytes go straight into the other end's protocol, which only decodes them and wakes
    its reader or schedules its handler (both ends are ``deferred``): no handler runs inside
    another's write. There is no flow control: both ends live in one process, which already
    holds whatever is sent."""

    def __init__(self, loop, proto):
        super().__init__()
        self._loop = loop
        self._proto = proto
        self.other = None
        self._closing = False

    def get_extra_info(self, name, default=None):
        return ("in-process", 0) if name == "peername" else default

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data) -> None:
        if self._closing or self.other._closing:
            return
        proto = self.other._proto
        view, offset = memoryview(data).cast("B"), 0
        while offset < view.nbytes:
            buf = proto.get_buffer(view.nbytes - offset)
            n = min(len(buf), view.nbytes - offset)
            buf[:n] = view[offset:offset + n]
            offset += n
            proto.buffer_updated(n)

    def writelines(self, list_of_data) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self.abort()  # nothing is ever pending

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._lose)

    def _lose(self):
        for end in (self, self.other):
            end._closing = True
            if end._proto is not None:
                proto, end._proto = end._proto, None
                proto.connection_lost(None)


class _RejectLog:
    """Rejected connections, logged at most once per interval: the first at once, then a count
    with the peers, so that a flood cannot drown the scheduler's log."""

    def __init__(self, interval: float = REJECT_LOG_INTERVAL):
        self.interval = interval
        self.next = 0.0
        self.count = 0
        self.peers: dict = {}

    def reject(self, peer: str, reason) -> None:
        now = time.monotonic()
        host = peer.rsplit(":", 1)[0]
        if now >= self.next:
            self.flush()
            logger.warning("rejected connection from %s: %s", peer, reason)
            self.next = now + self.interval
        else:
            self.count += 1
            self.peers[host] = self.peers.get(host, 0) + 1

    def flush(self) -> None:
        if self.count:
            top = sorted(self.peers.items(), key=lambda kv: -kv[1])[:5]
            logger.warning("rejected %d more connections in the last %g s (from %s)",
                           self.count, self.interval,
                           ", ".join(f"{h} x{n}" for h, n in top))
        self.count, self.peers = 0, {}


def raise_open_file_limit() -> None:
    """Soft limit of open files up to the hard limit: a scheduler holds one per worker, and the
    common default of 1,024 is what a flood of idle connections would exhaust first."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass


class Listener:
    """Accepts connections, authenticates them, and hands each Comm to ``handler``. *role* is
    what this server is (scheduler, or worker for its data server)."""

    def __init__(self, token, handler, max_body: int = protocol.DEFAULT_MAX_BODY,
                 role: str = "scheduler", security: Security | None = None):
        if role not in ROLES:
            raise ValueError(f"unknown listener role {role!r} (one of {sorted(ROLES)})")
        self.ssl = security.context(server_side=True) if security and security.tls else None
        self.scheme = "tls" if self.ssl is not None else "tcp"
        self.token = as_token(token)
        self.handler = handler
        self.max_body = max_body
        self.role = role
        self.port: int | None = None
        self.sock: socket.socket | None = None
        self.rejected = 0
        self._tasks: set = set()
        self._handshakes: OrderedDict = OrderedDict()  # _Pending, oldest first
        self._reject_log = _RejectLog()
        self._paused: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.addresses: list = []

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on *host* (empty: every interface) and *port* (0: any free port). We accept
        connections ourselves, a few at a time, so that each is admitted (and the oldest
        unauthenticated one dropped if need be) before the next takes a file descriptor;
        asyncio's server would accept thousands at once and then stall on EMFILE."""
        raise_open_file_limit()
        self.loop = loop = asyncio.get_running_loop()
        if host:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=4096)
        elif socket.has_dualstack_ipv6():
            sock = socket.create_server(("", port), family=socket.AF_INET6, backlog=4096,
                                        dualstack_ipv6=True)
        else:
            sock = socket.create_server(("", port), backlog=4096)
        sock.setblocking(False)
        self.sock = sock
        self.port = bound = sock.getsockname()[1]
        loop.add_reader(sock.fileno(), self._accept)
        return bound

    def serve_in_process(self, address: str) -> None:
        """Let connect() from this process and loop reach *address* over an in-memory pipe."""
        self.addresses.append(address)
        _in_process[address] = self

    def pipe(self, max_body):
        """(transport, protocol) of the client end of a new in-memory connection."""
        client, server = _Protocol(max_body), _ServerProtocol(self)
        client.deferred = server.deferred = True
        ct, st = _PipeTransport(self.loop, client), _PipeTransport(self.loop, server)
        ct.other, st.other = st, ct
        server.connection_made(st)
        client.connection_made(ct)
        return ct, client

    def stop(self):
        for address in self.addresses:
            if _in_process.get(address) is self:
                del _in_process[address]
        if self.sock is not None:
            if self._paused is not None:
                self._paused.cancel()
            else:
                self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        for entry in list(self._handshakes):
            entry.drop()
        self._handshakes.clear()
        for t in list(self._tasks):
            t.cancel()
        self._reject_log.flush()

    def _accept(self):
        for _ in range(ACCEPT_BURST):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    raise
                self._reject_log.reject("(accept)", f"{e.strerror}: dropping the oldest "
                                                    "unauthenticated connection")
                if not self._handshakes:  # all ours: wait for some to end
                    self.loop.remove_reader(self.sock.fileno())
                    self._paused = self.loop.call_later(1.0, self._resume)
                else:
                    self._handshakes.popitem(last=False)[0].drop()
                return
            conn.setblocking(False)
            entry = _Pending(conn, str(addr[0]))
            self._admit(entry)
            self._spawn(self._connect_accepted(entry))

    def _resume(self):
        self._paused = None
        if self.sock is not None:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _spawn(self, coro):
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_accepted(self, entry):
        if entry.dropped:
            return
        try:
            extra = dict(ssl=self.ssl, ssl_handshake_timeout=HANDSHAKE_TIMEOUT) if self.ssl else {}
            await self.loop.connect_accepted_socket(
                (lambda: _Copying(_ServerProtocol(self, entry))) if self.ssl else
                (lambda: _ServerProtocol(self, entry)), entry.sock, **extra)
        except (OSError, asyncio.TimeoutError) as e:
            self.rejected += 1
            self._reject_log.reject(entry.source, f"TLS handshake failed: {e}")
            entry.drop()
            self._handshakes.pop(entry, None)

    def _admit(self, entry) -> None:
        """Make room for one more connection in its handshake: drop the oldest of its source
        when that source holds its share, else the oldest of all when the listener is full."""
        pending = self._handshakes
        victim = None
        if sum(1 for e in pending if e.source == entry.source) >= MAX_HANDSHAKES_PER_SOURCE:
            victim = next(e for e in pending if e.source == entry.source)
        elif len(pending) >= MAX_HANDSHAKES:
            victim = next(iter(pending))
        if victim is not None:
            del pending[victim]
            victim.drop()
            self.rejected += 1
            self._reject_log.reject(victim.source, "dropped: too many connections in their "
                                                   "handshake")
        pending[entry] = None

    async def _serve(self, transport, proto):
        info = transport.get_extra_info("peername") or ("?", 0)
        peer = format_address(*info[:2])
        comm = Comm(transport, proto, peer)
        pipe = isinstance(transport, _PipeTransport)
        try:
            macs = await asyncio.wait_for(
                _handshake_server(comm, self.token, self.role, self.port), HANDSHAKE_TIMEOUT)
        except (CommClosedError, asyncio.TimeoutError, OSError) as e:
            if proto.entry is None or not proto.entry.dropped:  # dropped: counted already
                self.rejected += 1
                self._reject_log.reject(peer, e or "handshake timed out")
            transport.abort()
            return
        finally:
            if proto.entry is not None:
                self._handshakes.pop(proto.entry, None)
        comm.start_framing(*(() if pipe or self.ssl else macs))
        try:
            await self.handler(comm)
        except (CommClosedError, protocol.ProtocolError) as e:
            logger.debug("connection from %s ended: %s", peer, e)
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("error while serving %s", peer)
        finally:
            transport.abort()


class _Pending:
    """An accepted connection that has not yet completed its handshake."""

    __slots__ = ("sock", "source", "transport", "dropped")

    def __init__(self, sock, source):
        self.sock, self.source = sock, source
        self.transport = None
        self.dropped = False

    def drop(self):
        self.dropped = True
        if self.transport is not None:
            self.transport.abort()
        else:
            self.sock.close()


class _ServerProtocol(_Protocol):
    def __init__(self, listener, entry=None):
        super().__init__(listener.max_body)
        self.listener = listener
        self.entry = entry

    def connection_made(self, transport):
        super().connection_made(transport)
        if self.entry is not None:
            self.entry.transport = transport
        self.listener._spawn(self.listener._serve(transport, self))

"""TCP connections with an auth handshake, a listener, and batched sending.

Every connection starts with a mutual HMAC challenge over the cluster's token, in fixed-size raw
reads, before a single byte is handed to msgpack::

    server -> client   MAGIC(4) + server_nonce(32)
    client -> server   client_nonce(32) + HMAC(token, "client" + server_nonce + client_nonce)
    server -> client   HMAC(token, "server" + client_nonce + server_nonce)

A peer that fails, stalls or sends anything else is disconnected. After the handshake both sides
exchange batches (see protocol.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket

from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.tcpclient import TCPClient
from tornado.tcpserver import TCPServer

from . import protocol
from .errors import AuthenticationError, CommClosedError

logger = logging.getLogger(__name__)

MAGIC = b"JQ\x01\x00"
NONCE = 32
HANDSHAKE_TIMEOUT = 10.0
LARGE = 1 << 16


def parse_address(address: str) -> tuple[str, int]:
    """'tcp://host:port' (or 'host:port') -> (host, port)."""
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not an address of the form tcp://host:port: {address!r}")
    return host.strip("[]"), int(port)


def format_address(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _mac(token: bytes, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(token, label + a + b, hashlib.sha256).digest()


def as_token(token) -> bytes:
    if not token:
        raise AuthenticationError("no token: set JOBQUEUE_TOKEN or pass the cluster's token")
    return token.encode() if isinstance(token, str) else bytes(token)


class Comm:
    """One authenticated connection: read and write batches of messages."""

    def __init__(self, stream, peer: str, max_body: int = protocol.DEFAULT_MAX_BODY):
        self.stream = stream
        self.peer = peer
        self.max_body = max_body
        self.name = None

    async def read(self) -> list:
        try:
            prefix = await self.stream.read_bytes(protocol.PREFIX.size)
            size, nframes = protocol.parse_prefix(prefix, self.max_body)
            if size > LARGE:
                body = bytearray(size)
                await self.stream.read_into(body)
            else:
                body = await self.stream.read_bytes(size)
        except StreamClosedError as e:
            raise CommClosedError(f"connection to {self.peer} closed") from e
        except protocol.ProtocolError:
            self.abort()
            raise
        try:
            return protocol.loads(nframes, body)
        except protocol.ProtocolError:
            self.abort()
            raise

    async def write(self, messages: list) -> None:
        try:
            future = None
            for buf in protocol.dumps(messages):
                if memoryview(buf).nbytes:
                    future = self.stream.write(buf)
            await future
        except StreamClosedError as e:
            raise CommClosedError(f"connection to {self.peer} closed") from e

    async def request(self, msg: dict) -> dict:
        """Send one message and read one reply (for short-lived peer connections)."""
        await self.write([msg])
        (reply,) = await self.read()
        return reply

    @property
    def closed(self) -> bool:
        return self.stream.closed()

    def abort(self) -> None:
        self.stream.close()

    async def close(self) -> None:
        self.stream.close()

    def __repr__(self):
        return f"<Comm {self.name or ''} peer={self.peer}>"


async def _handshake_server(stream, token: bytes) -> None:
    nonce_s = os.urandom(NONCE)
    await stream.write(MAGIC + nonce_s)
    reply = await stream.read_bytes(2 * NONCE)
    nonce_c, mac_c = reply[:NONCE], reply[NONCE:]
    if not hmac.compare_digest(mac_c, _mac(token, b"client", nonce_s, nonce_c)):
        raise AuthenticationError("peer did not present the cluster's token")
    await stream.write(_mac(token, b"server", nonce_c, nonce_s))


async def _handshake_client(stream, token: bytes, address: str) -> None:
    hello = await stream.read_bytes(len(MAGIC) + NONCE)
    if hello[:len(MAGIC)] != MAGIC:
        raise AuthenticationError(f"{address} is not a jobqueue server (bad greeting)")
    nonce_s, nonce_c = hello[len(MAGIC):], os.urandom(NONCE)
    await stream.write(nonce_c + _mac(token, b"client", nonce_s, nonce_c))
    mac_s = await stream.read_bytes(NONCE)
    if not hmac.compare_digest(mac_s, _mac(token, b"server", nonce_c, nonce_s)):
        raise AuthenticationError(f"{address} does not hold the cluster's token")


def _tune(stream) -> None:
    stream.set_nodelay(True)
    sock = stream.socket
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


async def connect(address: str, token, timeout: float = 10.0, name: str | None = None) -> Comm:
    """Open and authenticate a connection to *address*."""
    host, port = parse_address(address)
    token = as_token(token)
    try:
        stream = await asyncio.wait_for(TCPClient().connect(host, port), timeout)
    except (OSError, StreamClosedError, asyncio.TimeoutError) as e:
        raise CommClosedError(f"could not connect to {address}: {type(e).__name__}: {e}") from None
    _tune(stream)
    try:
        await asyncio.wait_for(_handshake_client(stream, token, address), HANDSHAKE_TIMEOUT)
    except (StreamClosedError, asyncio.TimeoutError) as e:
        stream.close()
        raise AuthenticationError(
            f"{address} closed the connection during the handshake: wrong token?") from e
    except AuthenticationError:
        stream.close()
        raise
    comm = Comm(stream, address)
    comm.name = name
    return comm


class Listener(TCPServer):
    """Accepts connections, authenticates them, and hands each Comm to ``handler``."""

    def __init__(self, token, handler, max_body: int = protocol.DEFAULT_MAX_BODY):
        super().__init__()
        self.token = as_token(token)
        self.handler = handler
        self.max_body = max_body
        self.port = None
        self.rejected = 0

    def listen_on(self, host: str = "127.0.0.1", port: int = 0) -> int:
        family = socket.AF_INET if host in ("", "0.0.0.0") else socket.AF_UNSPEC
        sockets = bind_sockets(port, address=host or None, family=family)
        self.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        return self.port

    async def handle_stream(self, stream, address):
        peer = format_address(*address[:2])
        _tune(stream)
        try:
            await asyncio.wait_for(_handshake_server(stream, self.token), HANDSHAKE_TIMEOUT)
        except (AuthenticationError, StreamClosedError, asyncio.TimeoutError, OSError) as e:
            self.rejected += 1
            logger.warning("rejected connection from %s: %s", peer, e or type(e).__name__)
            stream.close()
            return
        comm = Comm(stream, peer, self.max_body)
        try:
            await self.handler(comm)
        except (CommClosedError, protocol.ProtocolError) as e:
            logger.debug("connection from %s ended: %s", peer, e)
        except Exception:
            logger.exception("error while serving %s", peer)
        finally:
            comm.abort()


class BatchedSend:
    """Coalesces messages to one peer: sent at once when idle, batched while a write is in flight."""

    def __init__(self, comm: Comm):
        self.comm = comm
        self.buffer: list = []
        self._busy = False
        self.closed = False
        self.messages_sent = 0
        self.batches_sent = 0

    def send(self, *messages) -> None:
        if self.closed:
            return
        self.buffer.extend(messages)
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().create_task(self._run())

    def send_many(self, messages: list) -> None:
        self.send(*messages)

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # let the current loop iteration add to the batch
            while self.buffer and not self.closed:
                batch, self.buffer = self.buffer, []
                await self.comm.write(batch)
                self.messages_sent += len(batch)
                self.batches_sent += 1
        except (CommClosedError, OSError) as e:
            logger.debug("batched send to %s stopped: %s", self.comm.peer, e)
            self.close()
        finally:
            self._busy = False

    def close(self) -> None:
        self.closed = True
        self.buffer = []
        self.comm.abort()

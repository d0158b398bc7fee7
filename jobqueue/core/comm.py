"""TCP connections with an auth handshake, a listener, and batched sending.

Built on asyncio's buffered protocols: bytes from the socket land directly in our buffer, a
pure incremental decoder (protocol.Decoder) cuts them into batches, and a large payload is
received straight into its own buffer without further copies. (tornado's IOStream was measured
at ~200 us per hop here against ~70 us for this; tornado serves the dashboard's HTTP.)

Every connection starts with a mutual HMAC challenge over the cluster's token, in raw reads of
bounded size, before a single byte is handed to msgpack::

    server -> client   MAGIC(4) + ns: server nonce(32)
    client -> server   nc: client nonce(32) + len(1) + hello + HMAC(token, "jq2 client" ns nc len hello)
    server -> client   HMAC(token, "jq2 server" ns nc len hello server_role)

``hello`` is ``"<client role> <server role> <address>"`` in ASCII: who connects (client, worker,
peer), whom it means to reach (scheduler, worker) and at which address. The server refuses a
proof made for another role or another port, and the client refuses a server whose proof is
not for the role it meant to reach: a handshake relayed from one of our connections to another
of our servers (the same token) fails. Every batch after the handshake carries an HMAC under a
key derived from the whole handshake, one per direction, with a sequence number
(protocol.FrameMac): a relay that passes the handshake through cannot write a batch that
either end would decode, nor replay, reorder or splice one.

A peer that fails, stalls or sends anything else is disconnected. The server side, which
accepts connections, admits them to this handshake and serves them, is listener.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import socket
from collections import deque

from . import memory, protocol, shm
from .errors import AuthenticationError, CommClosedError, UnpicklableResult
from .security import Security, scheme_of

logger = logging.getLogger(__name__)

MAGIC = b"JQ\x02\x00"
NONCE = 32
HANDSHAKE_TIMEOUT = 10.0
LARGE_WRITE = 1 << 16
WRITE_SLICE = 1 << 20

# Who may connect to whom: server role -> the roles of the connecting side it accepts.
ROLES = {"scheduler": frozenset({"client", "worker"}),
         "worker": frozenset({"peer"})}


def parse_address(address: str) -> tuple[str, int]:
    """'tcp://host:port' (or 'host:port') -> (host, port)."""
    rest = address.split("://", 1)[-1]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not an address of the form tcp://host:port: {address!r}")
    return host.strip("[]"), int(port)


def format_address(host: str, port: int, scheme: str = "tcp") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


_contexts: dict = {}  # (Security, server_side) -> SSLContext: loading certificates costs ~ms


def _tls_context(security, server_side: bool):
    if security is None:
        security = Security.from_config()
    ctx = _contexts.get((security, server_side))
    if ctx is None:
        ctx = _contexts[security, server_side] = security.context(server_side)
    return ctx


def _mac(token: bytes, *parts: bytes) -> bytes:
    return hmac.new(token, b"".join(parts), hashlib.sha256).digest()


def _session(token: bytes, transcript: bytes) -> tuple[protocol.FrameMac, protocol.FrameMac]:
    """(client-to-server, server-to-client) MACs keyed by the token and the whole handshake."""
    return (protocol.FrameMac(_mac(token, b"jq2 c2s ", transcript)),
            protocol.FrameMac(_mac(token, b"jq2 s2c ", transcript)))


def as_token(token) -> bytes:
    if not token:
        raise AuthenticationError("no token: set JOBQUEUE_TOKEN or pass the cluster's token")
    return token.encode() if isinstance(token, str) else bytes(token)


class _Protocol(asyncio.BufferedProtocol):
    """Receives into a reusable buffer; raw reads for the handshake, then decoded batches."""

    def __init__(self, max_body):
        self.decoder = protocol.Decoder(max_body)
        self.transport = None
        self.raw = bytearray()
        self.raw_mode = True
        self.batches: deque = deque()
        self.waiter = None
        self.error = None
        self.paused = False
        self.drain_waiter = None
        self.handler = None      # dispatch mode: called with each batch as it is decoded
        self.handled = None      # future: dispatch mode ended (handler stopped, raised, or lost)
        self.dispatching = False
        self.deferred = False    # the pipe's end: dispatch from the loop, never re-entrantly

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def get_buffer(self, sizehint):
        if self.raw_mode:
            self._scratch = bytearray(max(sizehint, 4096))
            return self._scratch
        return self.decoder.get_buffer()

    def buffer_updated(self, nbytes):
        if self.raw_mode:
            self.raw += self._scratch[:nbytes]
        else:
            try:
                self.batches.extend(self.decoder.buffer_updated(nbytes))
            except protocol.ProtocolError as e:
                self.error = e
                self.transport.abort()
            if self.handler is not None:
                if self.deferred:
                    asyncio.get_running_loop().call_soon(self.dispatch)
                else:
                    self.dispatch()
                return
        self._wake()

    def dispatch(self):
        """Hand every decoded batch to the handler, in order, and never re-entrantly."""
        if self.dispatching:
            return
        self.dispatching = True
        try:
            while self.batches and self.handler is not None:
                if self.handler(self.batches.popleft()):
                    self._end_dispatch(None)
        except BaseException as e:
            self._end_dispatch(e)
        finally:
            self.dispatching = False

    def _end_dispatch(self, exc):
        self.handler = None
        if not self.handled.done():
            if exc is None:
                self.handled.set_result(None)
            else:
                self.handled.set_exception(exc)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.decoder.close()
        if self.error is None:
            self.error = CommClosedError(f"connection closed{f': {exc}' if exc else ''}")
        if self.handler is not None:
            self.dispatch()  # what arrived before the end, then the end
            if self.handler is not None:
                self._end_dispatch(self.error)
        self._wake()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def _wake(self):
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)


class _Copying(asyncio.Protocol):
    """TLS connections: asyncio's SSL layer hands this plain protocol each chunk it decrypted,
    and it copies the bytes into the inner protocol's buffers. (Given a buffered protocol, the
    SSL layer of Python 3.11 now and then handed the decoder zero bytes in place of data.)"""

    def __init__(self, inner: _Protocol):
        self.inner = inner

    def connection_made(self, transport):
        self.inner.connection_made(transport)

    def data_received(self, data):
        inner, view = self.inner, memoryview(data).cast("B")
        while view.nbytes and not inner.transport.is_closing():
            buf = inner.get_buffer(view.nbytes)
            n = min(len(buf), view.nbytes)
            buf[:n] = view[:n]
            del buf
            view = view[n:]
            inner.buffer_updated(n)

    def eof_received(self):
        return self.inner.eof_received()

    def connection_lost(self, exc):
        self.inner.connection_lost(exc)

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()


class Comm:
    """One authenticated connection: read and write batches of messages."""

    def __init__(self, transport, proto: _Protocol, peer: str):
        self.transport = transport
        self.proto = proto
        self.peer = peer
        self.name: str | None = None
        self.peer_role: str | None = None  # what the handshake proved the other side to be
        self.mac_out: protocol.FrameMac | None = None  # what we send (None: pipe or TLS)
        self._slicing = False  # a write() is under way

    async def _wait(self):
        p = self.proto
        p.waiter = asyncio.get_running_loop().create_future()
        try:
            await p.waiter
        finally:
            p.waiter = None

    async def read_exactly(self, n: int) -> bytes:
        """Raw bytes (the handshake only)."""
        p = self.proto
        while len(p.raw) < n:
            if p.error is not None:
                raise CommClosedError(f"connection to {self.peer} closed during the handshake")
            await self._wait()
        data, p.raw = bytes(p.raw[:n]), p.raw[n:]
        return data

    def start_framing(self, mac_out=None, mac_in=None):
        """The handshake is over: from now on the bytes are batches (tagged, with MACs)."""
        self.mac_out = mac_out
        p = self.proto
        p.decoder.mac = mac_in
        p.raw_mode = False
        if p.raw:
            leftover, p.raw = bytes(p.raw), bytearray()
            try:
                p.batches.extend(p.decoder.feed(leftover))
            except protocol.ProtocolError as e:
                p.error = e
                self.transport.abort()

    async def read(self) -> list:
        p = self.proto
        while not p.batches:
            if p.error is not None:
                if isinstance(p.error, protocol.ProtocolError):
                    raise p.error
                raise CommClosedError(f"connection to {self.peer} closed") from p.error
            await self._wait()
        return p.batches.popleft()

    async def dispatch(self, handler) -> None:
        """Call ``handler(batch)`` for each batch as it arrives, straight from the protocol (no
        task wake-up per batch, unlike ``read()``). Returns when the handler returns a true
        value; raises what the handler raised, or CommClosedError/ProtocolError when the
        connection ends."""
        p = self.proto
        p.handled = asyncio.get_running_loop().create_future()
        p.handler = handler
        p.dispatch()  # what arrived already
        if p.handler is not None and p.error is not None:
            p._end_dispatch(p.error)
        try:
            await p.handled
        except CommClosedError as e:
            raise CommClosedError(f"connection to {self.peer} closed") from e
        finally:
            p.handler = None

    def write_nowait(self, messages: list) -> None:
        if self.transport.is_closing():
            raise CommClosedError(f"connection to {self.peer} closed")
        if self._slicing:
            raise RuntimeError(f"write_nowait on {self!r} while a write() is under way")
        small = []
        buffers = protocol.dumps(messages)
        if self.mac_out is not None:
            buffers.append(self.mac_out.sign(buffers))
        for buf in buffers:
            if len(buf) < LARGE_WRITE:
                small.append(buf)
                continue
            if small:  # writelines joins its buffers: fine for small ones only
                self.transport.writelines(small)
                small = []
            self.transport.write(buf)
        if small:
            self.transport.writelines(small)

    async def write(self, messages: list) -> None:
        """Write a batch and wait until the socket has taken most of it. A large frame goes
        out in slices, each when the socket has taken the one before: asyncio copies whatever
        a write leaves unsent, and a copy of 64 MB costs ~65 ms on this kind of machine. One
        writer at a time: no write_nowait on this comm while this runs."""
        if self.transport.is_closing():
            raise CommClosedError(f"connection to {self.peer} closed")
        small = []
        self._slicing = True
        buffers = protocol.dumps(messages)
        running = self.mac_out.start() if self.mac_out is not None else None
        if running is not None and sum(memoryview(b).nbytes for b in buffers) >= LARGE_WRITE:
            running = protocol.BackgroundMac(running)  # hashed while the socket sends
        try:
            for buf in buffers:
                view = memoryview(buf).cast("B")
                if view.nbytes < LARGE_WRITE:
                    small.append(buf)
                    if running is not None:
                        running.update(view)
                    continue
                if small:
                    self.transport.writelines(small)
                    small = []
                for i in range(0, view.nbytes, WRITE_SLICE):
                    piece = view[i:i + WRITE_SLICE]
                    if running is not None:
                        running.update(piece)
                    self.transport.write(piece)
                    await self.drain()
            if isinstance(running, protocol.BackgroundMac):
                small.append(await asyncio.wrap_future(running.digest()))
            elif running is not None:
                small.append(running.digest())
            if small:
                self.transport.writelines(small)
        finally:
            self._slicing = False
        await self.drain()

    @property
    def paused(self) -> bool:
        """The peer is not keeping up: what we write waits in memory."""
        return self.proto.paused

    async def drain(self):
        p = self.proto
        if p.paused and not self.transport.is_closing():
            p.drain_waiter = asyncio.get_running_loop().create_future()
            await p.drain_waiter
        if self.transport.is_closing() and p.error is not None:
            raise CommClosedError(f"connection to {self.peer} closed")

    async def request(self, msg: dict) -> dict:
        """Send one message and read one reply (short-lived peer connections)."""
        await self.write([msg])
        (reply,) = await self.read()
        return reply

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()

    def abort(self) -> None:
        self.transport.abort()

    async def close(self) -> None:
        self.transport.close()

    def __repr__(self):
        return f"<Comm {self.name or ''} peer={self.peer}>"


def _hello(role: str, expect: str, address: str) -> bytes:
    hello = f"{role} {expect} {address}".encode("ascii", "replace")
    if len(hello) > 255:
        raise ValueError(f"address too long for the handshake: {address!r}")
    return bytes([len(hello)]) + hello


async def _handshake_server(comm: Comm, token: bytes, role: str, port) -> tuple:
    """Prove and check the token; returns the (to-client, from-client) MACs."""
    nonce_s = os.urandom(NONCE)
    comm.transport.write(MAGIC + nonce_s)
    first = await comm.read_exactly(NONCE + 1)
    nonce_c, hello = first[:NONCE], first[NONCE:]
    rest = await comm.read_exactly(hello[0] + NONCE)
    hello, mac_c = hello + rest[:-NONCE], rest[-NONCE:]
    if not hmac.compare_digest(mac_c, _mac(token, b"jq2 client ", nonce_s, nonce_c, hello)):
        raise AuthenticationError("peer did not present the cluster's token")
    peer_role, expect, address = (hello[1:].decode("ascii", "replace").split(" ", 2) + ["", ""])[:3]
    if expect != role or peer_role not in ROLES[role]:
        raise AuthenticationError(f"a {peer_role!r} meant to reach a {expect!r}, this is a {role}")
    if port is not None:
        try:
            meant = parse_address(address)[1]
        except ValueError:
            meant = None
        if meant != port:
            raise AuthenticationError(f"peer meant to reach {address!r}, this is port {port}")
    comm.peer_role = peer_role
    comm.transport.write(_mac(token, b"jq2 server ", nonce_s, nonce_c, hello, role.encode()))
    c2s, s2c = _session(token, nonce_s + nonce_c + hello + role.encode())
    return s2c, c2s


async def _handshake_client(comm: Comm, token: bytes, address: str, role: str,
                            expect: str) -> tuple:
    """Prove and check the token; returns the (to-server, from-server) MACs."""
    hello = await comm.read_exactly(len(MAGIC) + NONCE)
    if hello[:len(MAGIC)] != MAGIC:
        raise AuthenticationError(f"{address} is not a jobqueue server of this version "
                                  f"(bad greeting {hello[:len(MAGIC)]!r})")
    nonce_s, nonce_c = hello[len(MAGIC):], os.urandom(NONCE)
    mine = _hello(role, expect, address)
    comm.transport.write(nonce_c + mine + _mac(token, b"jq2 client ", nonce_s, nonce_c, mine))
    mac_s = await comm.read_exactly(NONCE)
    if not hmac.compare_digest(mac_s, _mac(token, b"jq2 server ", nonce_s, nonce_c, mine,
                                           expect.encode())):
        raise AuthenticationError(f"{address} does not hold the cluster's token or is not a "
                                  f"jobqueue {expect}")
    comm.peer_role = expect
    return _session(token, nonce_s + nonce_c + mine + expect.encode())


_in_process: dict = {}  # address -> the listener.Listener serving it in this process


async def connect(address: str, token, timeout: float = 10.0, name: str | None = None,
                  max_body: int = protocol.DEFAULT_MAX_BODY, role: str = "client",
                  expect: str = "scheduler", security: Security | None = None) -> Comm:
    """Open and authenticate a connection to *address*: we are a *role* (client, worker or peer)
    and mean to reach a *expect* (scheduler, or worker for its data). A ``tls://`` address is
    reached over TLS with *security*'s certificates (default: from the config)."""
    host, port = parse_address(address)
    tls = scheme_of(address) == "tls"
    token = as_token(token)
    loop = asyncio.get_running_loop()
    listener = _in_process.get(address)
    in_process = listener is not None and listener.loop is loop
    if listener is not None and in_process:
        transport, proto = listener.pipe(max_body)
    else:
        extra = {}
        if tls:
            extra = dict(ssl=_tls_context(security, server_side=False), server_hostname=host,
                         ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        try:
            transport, proto = await asyncio.wait_for(loop.create_connection(
                (lambda: _Copying(_Protocol(max_body))) if tls else (lambda: _Protocol(max_body)),
                host, port, **extra), timeout)
            if isinstance(proto, _Copying):
                proto = proto.inner
        except (OSError, asyncio.TimeoutError) as e:
            hint = ("; is it a TLS scheduler (tls://)?" if not tls and
                    isinstance(e, asyncio.TimeoutError) else "")
            raise CommClosedError(f"could not connect to {address}: "
                                  f"{type(e).__name__}: {e or 'timed out'}{hint}") from None
    comm = Comm(transport, proto, address)
    comm.name = name
    try:
        macs = await asyncio.wait_for(_handshake_client(comm, token, address, role, expect),
                                      HANDSHAKE_TIMEOUT)
    except (CommClosedError, asyncio.TimeoutError) as e:
        transport.abort()
        if isinstance(e, AuthenticationError):
            raise
        hint = "" if tls else " Or a TLS server (its address starts with tls://)?"
        raise AuthenticationError(
            f"{address} closed the connection during the handshake: wrong token, or not a "
            f"jobqueue {expect}? (its log says why it refused){hint}") from None
    comm.start_framing(*(() if in_process or tls else macs))
    return comm


class BatchedSend:
    """Coalesces messages to one peer. The first send of a loop iteration is written at once
    (a lone request or reply waits for nothing); what follows in the same iteration is written
    as one batch at its end, and while the socket is backed up everything accumulates and is
    written as one batch when it drains."""

    def __init__(self, comm: Comm):
        self.comm = comm
        self.buffer: list = []
        self._cuts: list = []  # where in buffer a new batch starts
        self._busy = False
        self.closed = False
        self.messages_sent = 0
        self.batches_sent = 0

    def send(self, *messages) -> None:
        self.send_many(messages)

    def send_many(self, messages) -> None:
        self.send_batches((messages,))

    def send_batches(self, batches) -> None:
        """Each list of messages in *batches* goes as a batch of its own: the receiver decodes
        and handles one part before the next (a client's large graph, in parts)."""
        if self.closed:
            return
        for i, messages in enumerate(batches):
            if i and self.buffer:
                self._cuts.append(len(self.buffer))
            self.buffer.extend(messages)
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._flush)
            if not self.comm.paused:
                self._write()

    def _flush(self):
        if self.closed:
            return
        if self.comm.paused:
            asyncio.get_running_loop().create_task(self._drain_then_flush())
            return
        self._busy = False
        self._write()

    def _write(self):
        buffer, self.buffer = self.buffer, []
        cuts, self._cuts = self._cuts, []
        start = 0
        for end in (*cuts, len(buffer)):
            if end == start:
                continue
            try:
                self.comm.write_nowait(buffer[start:end] if cuts else buffer)
            except (CommClosedError, OSError) as e:
                logger.debug("batched send to %s stopped: %s", self.comm.peer, e)
                self.close()
                return
            self.messages_sent += end - start
            self.batches_sent += 1
            start = end

    async def _drain_then_flush(self):
        try:
            await self.comm.drain()
        except CommClosedError:
            self.close()
            return
        self._flush()

    @property
    def pending(self) -> bool:
        return bool(self.buffer) or self._busy

    def close(self) -> None:
        self.closed = True
        self.buffer, self._cuts = [], []
        self.comm.abort()


class PeerPool:
    """Connections to workers' data servers, reused between requests (workers and clients)."""

    def __init__(self, token, security: Security | None = None):
        self.token = token
        self.security = security
        self.comms: dict = {}

    async def get_data(self, address: str, keys: list) -> dict:
        """``{key: value}`` of the results *address* holds; a key it no longer holds is absent.
        A worker on this machine hands large frames over through its memory or shared memory
        files (shm.py); it keeps what we read from its memory until our next request on this
        connection, so the connection is shared again only once we are done."""
        comm = self.comms.pop(address, None)
        if comm is None or comm.closed:
            comm = await connect(address, self.token, role="peer", expect="worker",
                                 security=self.security)
        try:
            values = await self._fetch(comm, keys, shm.cross_memory())
        except memory.CannotRead as e:  # ptrace restricted here: files from now on
            shm.refuse_cross_memory(e)
            values = await self._fetch(comm, keys, False)
        self.comms[address] = comm
        return values

    async def _fetch(self, comm, keys, cross: bool) -> dict:
        reply = await comm.request({"op": "get-data", "keys": keys, "shm": shm.namespace(),
                                    "cross": cross})
        if reply.get("errors"):
            raise UnpicklableResult("; ".join(reply["errors"].values()))
        data, source = reply["data"], reply.get("holder")

        def load():  # in a thread when it copies: process_vm_readv and read() release the GIL
            return {k: protocol.deserialize(shm.load(frames, source)) for k, frames in data.items()}

        try:
            if any(isinstance(f, dict) for frames in data.values() for f in frames):
                return await asyncio.get_running_loop().run_in_executor(None, load)
            return load()
        except ValueError as e:
            raise protocol.ProtocolError(f"{comm.peer} handed over results we cannot take: "
                                         f"{e}") from None

    def close(self) -> None:
        for comm in self.comms.values():
            comm.abort()
        self.comms.clear()

"""Framing and serialization: pure functions, no sockets.

A *batch* is a list of messages (msgpack maps with an ``op`` key) written as one unit::

    prefix   <Q body_length> <I nframes>          12 bytes
    lengths  nframes x <Q>
    frames   frame 0: msgpack of the message list; frames 1..: raw byte payloads
    tag      32 bytes, on authenticated connections only

The tag is HMAC-SHA256, keyed per connection and direction by the handshake, over the batch's
sequence number (8 bytes, little-endian, from 0), the prefix and the body (:class:`FrameMac`).
A receiver checks it before a byte of the batch reaches msgpack, so a batch that was forged,
replayed, reordered, truncated or spliced in from another connection is never decoded.

Large byte payloads are not copied into msgpack: a message carries them as :class:`Raw`, which
becomes a reference (msgpack extension type 1, the frame index) and travels as its own frame.
On decoding, the reference becomes a ``memoryview`` of that frame.

User data is cloudpickle bytes carried as :class:`Raw`; nothing here unpickles anything, so the
scheduler can decode every message without ever running user code.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import struct

import msgpack

from . import memory

PREFIX = struct.Struct("<QI")
LENGTH = struct.Struct("<Q")
EXT_FRAME = 1

MAX_FRAMES = 1 << 16
MAX_HEADER = 256 << 20          # msgpack part of one batch
DEFAULT_MAX_BODY = 8 << 30      # all frames of one batch


TAG = 32                        # bytes of the HMAC-SHA256 after each authenticated batch
MMAP_FROM = 1 << 20             # large batches at least this big are received into an mmap


class ProtocolError(Exception):
    """The peer sent bytes that are not a well-formed batch of messages (the peer's fault)."""


class FrameMac:
    """The MAC of one direction of one connection: a key from the handshake and the number of
    the next batch. Sender and receiver each hold one per direction, in step."""

    __slots__ = ("_base", "seq")

    def __init__(self, key: bytes):
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self.seq = 0

    def start(self):
        """A running MAC for the next batch: feed it the prefix and body, then ``digest()``."""
        h = self._base.copy()
        h.update(self.seq.to_bytes(8, "little"))
        self.seq += 1
        return h

    def sign(self, buffers) -> bytes:
        h = self.start()
        for buf in buffers:
            h.update(buf)
        return h.digest()


class BackgroundMac:
    """A running MAC fed from a thread: hashlib releases the GIL on large updates, so a large
    batch is hashed while the event loop goes on moving its bytes through the socket (the two
    run on different cores). Updates of one MAC are applied in order: one thread per process
    does them all, so a large transfer never waits for more than the pieces before it."""

    STEP = 1 << 20  # hash in pieces of about this much: fewer hand-overs, still overlapped

    _executor = None

    def __init__(self, running):
        self.running = running
        self.last = None

    @classmethod
    def _pool(cls):
        if cls._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            cls._executor = ThreadPoolExecutor(1, thread_name_prefix="jobqueue-mac")
        return cls._executor

    def update(self, view) -> None:
        self.last = self._pool().submit(self.running.update, view)

    def digest(self):
        """A concurrent.futures.Future of the digest, after every update so far."""
        return self._pool().submit(self.running.digest)


def _forget_pool():  # a forked child has no thread behind the parent's executor
    BackgroundMac._executor = None


os.register_at_fork(after_in_child=_forget_pool)


class ReceiveBudget:
    """Bytes that large batches being received may hold, across every connection of a process:
    a peer that announces more than is left is refused instead of making us allocate it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise ProtocolError(
                f"batch of {n} bytes refused: this process already receives {self.used} bytes "
                f"of large batches (limit {self.limit})")
        self.used += n

    def give_back(self, n: int) -> None:
        self.used -= n


def _total_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


# Large receives of all connections of this process together: half the machine's memory.
RECEIVE_BUDGET = ReceiveBudget(max(1 << 30, _total_memory() // 2))


def _receive_buffer(n: int):
    """A buffer for *n* bytes that costs memory only as bytes arrive: an mmap's pages are
    committed by the kernel when written, while bytearray(n) zero-fills all of it at once."""
    return memory.new_mapping(n) if n >= MMAP_FROM else bytearray(n)


class Raw:
    """Bytes that travel as their own frame (pickled data, large payloads)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return memoryview(self.data).nbytes

    def __repr__(self):
        return f"Raw({len(self)} bytes)"


def dumps(messages: list) -> list:
    """Encode a list of messages into buffers to write, in order."""
    frames = [b""]

    def default(obj):
        if isinstance(obj, Raw):
            frames.append(obj.data)
            return msgpack.ExtType(EXT_FRAME, LENGTH.pack(len(frames) - 1))
        if isinstance(obj, (set, frozenset)):
            return list(obj)
        raise TypeError(f"cannot send {type(obj).__name__} in a message: {obj!r:.80}")

    frames[0] = msgpack.packb(messages, default=default, use_bin_type=True)
    lengths = [memoryview(f).nbytes for f in frames]
    head = PREFIX.pack(sum(lengths), len(frames)) + b"".join(LENGTH.pack(n) for n in lengths)
    return [head, *frames]


def parse_prefix(prefix: bytes, max_body: int = DEFAULT_MAX_BODY) -> tuple[int, int]:
    """(body_length, nframes) from the 12-byte prefix; body_length includes the length table."""
    body, nframes = PREFIX.unpack(prefix)
    if not 1 <= nframes <= MAX_FRAMES:
        raise ProtocolError(f"batch announces {nframes} frames (allowed 1..{MAX_FRAMES})")
    if body > max_body:
        raise ProtocolError(f"batch announces {body} bytes, over the limit of {max_body}")
    return body + LENGTH.size * nframes, nframes


def loads(nframes: int, body) -> list:
    """Decode the bytes after the prefix (length table + frames) into a list of messages."""
    body = memoryview(body)
    table = LENGTH.size * nframes
    lengths = frame_lengths(nframes, body, body.nbytes)
    frames, offset = [], table
    for n in lengths:
        frames.append(body[offset:offset + n])
        offset += n
    return decode(frames)


def frame_lengths(nframes: int, table, size: int) -> list:
    """The frame lengths of a batch body of *size* bytes from its length *table*, checked."""
    lengths = [LENGTH.unpack_from(table, LENGTH.size * i)[0] for i in range(nframes)]
    if LENGTH.size * nframes + sum(lengths) != size:
        raise ProtocolError("frame lengths do not add up to the announced batch size")
    if lengths[0] > MAX_HEADER:
        raise ProtocolError(f"message header of {lengths[0]} bytes is over {MAX_HEADER}")
    return lengths


def decode(frames: list) -> list:
    """The messages of a batch from its frames (the msgpack header first)."""
    nframes = len(frames)

    def ext_hook(code, data):
        if code != EXT_FRAME or len(data) != LENGTH.size:
            raise ProtocolError(f"unknown msgpack extension type {code}")
        index = LENGTH.unpack(data)[0]
        if not 1 <= index < nframes:
            raise ProtocolError(f"reference to frame {index} of {nframes}")
        return frames[index]

    try:
        messages = msgpack.unpackb(frames[0], ext_hook=ext_hook, raw=False,
                                   strict_map_key=False, use_list=True)
    except ProtocolError:
        raise
    except Exception as e:  # msgpack raises several types for malformed input
        raise ProtocolError(f"malformed message header: {type(e).__name__}: {e}") from None
    if type(messages) is not list:
        raise ProtocolError(f"a batch must be a list of messages, got {type(messages).__name__}")
    for msg in messages:
        if type(msg) is not dict or type(msg.get("op")) is not str:
            raise ProtocolError(f"a message must be a map with a string 'op': {msg!r:.80}")
    return messages


class Decoder:
    """Incremental batch decoder: fed bytes, returns the complete batches (lists of messages).

    Pure: no sockets. The TCP comm lets the kernel write straight into :meth:`get_buffer` and
    then calls :meth:`buffer_updated`; tests and fuzzers call :meth:`feed`. A batch larger than
    half the scratch buffer is received into a buffer of its own, so a 64 MB payload is copied
    once, from the socket into its final place; its memory is committed as bytes arrive, not
    from the size the peer announced, and counts against the process's :data:`RECEIVE_BUDGET`.
    The scratch buffer starts small and doubles, up to *chunk*, each time a read fills it: a
    scheduler keeps one per worker connection, and a thousand idle ones of 64 KB would be 64 MB.

    With a *mac* (:class:`FrameMac`), every batch must be followed by its tag, which is checked
    before the batch is decoded: the MAC of a large batch is computed as its bytes arrive.
    """

    def __init__(self, max_body: int = DEFAULT_MAX_BODY, chunk: int = 1 << 16,
                 initial: int = 1 << 12, mac: FrameMac | None = None,
                 budget: ReceiveBudget | None = None):
        self.max_body = max_body
        self.chunk = chunk
        self.buf = bytearray(min(initial, chunk))
        self.start = 0
        self.end = 0
        self.mac = mac
        self.budget = budget if budget is not None else RECEIVE_BUDGET
        self.large: _Large | None = None  # a batch received into a buffer of its own

    def get_buffer(self) -> memoryview:
        if self.large is not None:
            return self.large.get_buffer()
        if self.end == len(self.buf):  # the last read filled it
            n = self.end - self.start
            if self.start:
                self.buf[:n] = self.buf[self.start:self.end]
                self.start, self.end = 0, n
            if n == len(self.buf) or len(self.buf) < self.chunk:
                self.buf.extend(bytes(len(self.buf)))
        return memoryview(self.buf)[self.end:]

    def buffer_updated(self, nbytes: int) -> list:
        large = self.large
        if large is not None:
            large.received(nbytes)
            if not large.complete():
                return []
            self.large = None
            self.budget.give_back(large.total)
            return [large.finish()]
        self.end += nbytes
        return self._parse()

    def _parse(self) -> list:
        out, buf = [], self.buf
        tag = TAG if self.mac is not None else 0
        while self.end - self.start >= PREFIX.size:
            prefix = bytes(buf[self.start:self.start + PREFIX.size])
            size, nframes = parse_prefix(prefix, self.max_body)
            begin = self.start + PREFIX.size
            have = self.end - begin
            if have >= size + tag:
                with memoryview(buf) as mv:
                    body = bytes(mv[begin:begin + size])
                    if self.mac is not None:
                        _verify(self.mac, prefix, body, mv[begin + size:begin + size + tag])
                self.start = begin + size + tag
                out.append(loads(nframes, body))
            elif size + tag > len(buf) // 2:
                self.budget.take(size + tag)
                self.large = _Large(nframes, size, prefix, self.mac,
                                    memoryview(buf)[begin:self.end])
                self.start = self.end = 0
                break
            else:
                if begin + size + tag > len(buf):  # make room for the rest of this batch
                    n = self.end - self.start
                    buf[:n] = buf[self.start:self.end]
                    self.start, self.end = 0, n
                break
        if self.start == self.end:
            self.start = self.end = 0
        return out

    def close(self) -> None:
        """The connection ended: give back what a half-received batch held."""
        if self.large is not None:
            self.budget.give_back(self.large.total)
            self.large = None

    def feed(self, data) -> list:
        out, data = [], memoryview(data).cast("B")
        while data.nbytes:
            target = self.get_buffer()
            n = min(target.nbytes, data.nbytes)
            target[:n] = data[:n]
            del target
            data = data[n:]
            out.extend(self.buffer_updated(n))
        return out


def _verify(mac: FrameMac, prefix, body, tag) -> None:
    h = mac.start()
    h.update(prefix)
    h.update(body)
    if not hmac.compare_digest(h.digest(), bytes(tag)):
        raise ProtocolError(f"batch {mac.seq - 1} failed authentication (forged, replayed, "
                            f"reordered or corrupted)")


class _Large:
    """A batch received into buffers of its own, in order: each frame of at least
    :data:`memory.LAZY_BYTES` into the ``bytes`` object it may become (no copy after the
    socket's), the other frames together, the tag last. Its MAC is computed as bytes arrive."""

    __slots__ = ("parts", "where", "nframes", "index", "filled", "hashed", "running", "mac",
                 "total")

    def __init__(self, nframes, size, prefix, mac, head):
        self.mac, self.nframes = mac, nframes
        self.total = size + (TAG if mac is not None else 0)
        self.where = None  # (part, offset) of each frame, when planned
        self.parts = self._plan(nframes, size, head)
        if mac is not None:
            self.parts.append(bytearray(TAG))
        self.index = self.filled = self.hashed = 0
        self.running = None
        if mac is not None:
            running = mac.start()
            running.update(prefix)
            self.running = BackgroundMac(running)
        while head.nbytes:  # what came with the prefix
            target = self.get_buffer()
            n = min(target.nbytes, head.nbytes)
            target[:n] = head[:n]
            del target
            head = head[n:]
            self.received(n)

    def _plan(self, nframes: int, size: int, head) -> list:
        """Buffers for the body. The length table is not authenticated yet: it only shapes
        the buffers (within the announced size), and one that does not add up is left for
        :func:`loads` to refuse once the batch has passed its MAC."""
        table = LENGTH.size * nframes
        if head.nbytes < table or not memory.WRITABLE_BYTES:
            return [_receive_buffer(size)]
        try:
            lengths = frame_lengths(nframes, head, size)
        except ProtocolError:
            return [_receive_buffer(size)]
        if max(lengths) < memory.LAZY_BYTES:
            return [_receive_buffer(size)]
        parts: list = []
        where, run = [], table
        for n in lengths:
            if n < memory.LAZY_BYTES:
                where.append((len(parts), run))
                run += n
                continue
            if run:
                parts.append(_receive_buffer(run))
                run = 0
            where.append((len(parts), 0))
            parts.append(memory.new_buffer(n, copy=True))
        if run:
            parts.append(_receive_buffer(run))
        self.where = [(p, o, n) for (p, o), n in zip(where, lengths)]
        return parts

    def get_buffer(self) -> memoryview:
        return memoryview(self.parts[self.index])[self.filled:]

    def received(self, nbytes: int) -> None:
        part = self.parts[self.index]
        self.filled += nbytes
        if self.running is not None and self.index < len(self.parts) - 1 and (
                self.filled - self.hashed >= BackgroundMac.STEP or self.filled == len(part)):
            self.running.update(memoryview(part)[self.hashed:self.filled])
            self.hashed = self.filled
        if self.filled == len(part):
            self.index += 1
            self.filled = self.hashed = 0

    def complete(self) -> bool:
        """Whether the batch (and its tag) has arrived."""
        return self.index == len(self.parts)

    def finish(self) -> list:
        parts = self.parts
        if self.running is not None:
            tag = bytes(parts.pop())
            if not hmac.compare_digest(self.running.digest().result(), tag):
                raise ProtocolError(f"batch {self.mac.seq - 1} failed authentication (forged, "
                                    f"replayed, reordered or corrupted)")
        if self.where is None:
            return loads(self.nframes, parts[0])
        views = [memoryview(p) for p in parts]
        return decode([views[p][o:o + n] for p, o, n in self.where])


# -- user data --------------------------------------------------------------------------------

BYTES = b"jq:bytes"  # a header that no pickle stream starts with (pickles start with 0x80)


def serialize(obj) -> list:
    """Pickle *obj* into frames: the pickle stream and its out-of-band buffers (zero copy).
    ``bytes`` travel as they are: pickle would copy them into its stream."""
    if type(obj) is bytes and len(obj) > INLINE_LIMIT:
        return [BYTES, obj]
    import cloudpickle

    buffers: list = []
    head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def deserialize(frames):
    head, *buffers = frames
    if head == BYTES:  # received straight into a bytes object (memory.new_bytes), or a copy
        made = memory.bytes_behind(buffers[0])
        return made if made is not None else bytes(buffers[0])
    return pickle.loads(head, buffers=buffers)


def nbytes_of(frames) -> int:
    return sum(memoryview(f).nbytes for f in frames)


def wrap(data):
    """Small payloads inline in msgpack, large ones as their own frame."""
    return Raw(data) if data is not None and memoryview(data).nbytes > INLINE_LIMIT else data


INLINE_LIMIT = 1 << 16


class TaskRef:
    """Stands for another task's result inside a task's arguments; the worker substitutes it."""

    __slots__ = ("key",)

    def __init__(self, key):
        self.key = key

    def __reduce__(self):
        return TaskRef, (self.key,)

    def __repr__(self):
        return f"TaskRef({self.key!r})"


def substitute(obj, values: dict):
    """Replace TaskRefs in (nested lists, tuples, dicts, sets of) *obj* by ``values[key]``."""
    t = type(obj)
    if t is TaskRef:
        return values[obj.key]
    if t is tuple or t is list or t is set or t is frozenset:
        return t(substitute(x, values) for x in obj)
    if t is dict:
        return {k: substitute(v, values) for k, v in obj.items()}
    return obj


# Types plain pickle handles exactly as cloudpickle would (TaskRef: importable by reference).
_SIMPLE = frozenset({int, float, str, bytes, bool, type(None), complex, TaskRef})


def fast_dumps(obj) -> bytes:
    """Pickle arguments: plain pickle for builtin values (fast), cloudpickle for the rest."""
    if _is_simple(obj, 3):
        return pickle.dumps(obj, protocol=5)
    import cloudpickle

    return cloudpickle.dumps(obj, protocol=5)


def _is_simple(obj, depth):
    t = type(obj)
    if t in _SIMPLE:
        return True
    if not depth:
        return False
    if t is tuple or t is list:
        if len(obj) > 64:
            return False
        for x in obj:
            if type(x) not in _SIMPLE and not _is_simple(x, depth - 1):
                return False
        return True
    if t is dict:
        if len(obj) > 64:
            return False
        for k, v in obj.items():
            if type(k) not in _SIMPLE or (type(v) not in _SIMPLE and not _is_simple(v, depth - 1)):
                return False
        return True
    return False

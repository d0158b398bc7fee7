"""Framing and serialization: pure functions, no sockets.

A *batch* is a list of messages (msgpack maps with an ``op`` key) written as one unit::

    prefix   <Q body_length> <I nframes>          12 bytes
    lengths  nframes x <Q>
    frames   frame 0: msgpack of the message list; frames 1..: raw byte payloads

Large byte payloads are not copied into msgpack: a message carries them as :class:`Raw`, which
becomes a reference (msgpack extension type 1, the frame index) and travels as its own frame.
On decoding, the reference becomes a ``memoryview`` of that frame.

User data is cloudpickle bytes carried as :class:`Raw`; nothing here unpickles anything, so the
scheduler can decode every message without ever running user code.
"""
from __future__ import annotations

import pickle
import struct

import msgpack

PREFIX = struct.Struct("<QI")
LENGTH = struct.Struct("<Q")
EXT_FRAME = 1

MAX_FRAMES = 1 << 16
MAX_HEADER = 256 << 20          # msgpack part of one batch
DEFAULT_MAX_BODY = 8 << 30      # all frames of one batch


class ProtocolError(Exception):
    """The peer sent bytes that are not a well-formed batch of messages (the peer's fault)."""


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
    lengths = [LENGTH.unpack_from(body, LENGTH.size * i)[0] for i in range(nframes)]
    if table + sum(lengths) != body.nbytes:
        raise ProtocolError("frame lengths do not add up to the announced batch size")
    if lengths[0] > MAX_HEADER:
        raise ProtocolError(f"message header of {lengths[0]} bytes is over {MAX_HEADER}")
    frames, offset = [], table
    for n in lengths:
        frames.append(body[offset:offset + n])
        offset += n

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
    once, from the socket into its final place. The scratch buffer starts small and doubles,
    up to *chunk*, each time a read fills it: a scheduler keeps one per worker connection, and
    a thousand idle ones of 64 KB would be 64 MB.
    """

    def __init__(self, max_body: int = DEFAULT_MAX_BODY, chunk: int = 1 << 16,
                 initial: int = 1 << 12):
        self.max_body = max_body
        self.chunk = chunk
        self.buf = bytearray(min(initial, chunk))
        self.start = 0
        self.end = 0
        self.large = None  # [body, nframes, filled]

    def get_buffer(self) -> memoryview:
        if self.large is not None:
            body, _, filled = self.large
            return memoryview(body)[filled:]
        if self.end == len(self.buf):  # the last read filled it
            n = self.end - self.start
            if self.start:
                self.buf[:n] = self.buf[self.start:self.end]
                self.start, self.end = 0, n
            if n == len(self.buf) or len(self.buf) < self.chunk:
                self.buf.extend(bytes(len(self.buf)))
        return memoryview(self.buf)[self.end:]

    def buffer_updated(self, nbytes: int) -> list:
        if self.large is not None:
            self.large[2] += nbytes
            body, nframes, filled = self.large
            if filled < len(body):
                return []
            self.large = None
            return [loads(nframes, body)]
        self.end += nbytes
        return self._parse()

    def _parse(self) -> list:
        out, buf = [], self.buf
        while self.end - self.start >= PREFIX.size:
            size, nframes = parse_prefix(bytes(buf[self.start:self.start + PREFIX.size]),
                                         self.max_body)
            begin = self.start + PREFIX.size
            have = self.end - begin
            if have >= size:
                with memoryview(buf) as mv:
                    body = bytes(mv[begin:begin + size])
                self.start = begin + size
                out.append(loads(nframes, body))
            elif size > len(buf) // 2:
                body = bytearray(size)
                body[:have] = buf[begin:self.end]
                self.start = self.end = 0
                self.large = [body, nframes, have]
                break
            else:
                if begin + size > len(buf):  # make room for the rest of this batch
                    n = self.end - self.start
                    buf[:n] = buf[self.start:self.end]
                    self.start, self.end = 0, n
                break
        if self.start == self.end:
            self.start = self.end = 0
        return out

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


# -- user data --------------------------------------------------------------------------------

BYTES = b"jq:bytes"  # a header that no pickle stream starts with (pickles start with 0x80)


def serialize(obj) -> list:
    """Pickle *obj* into frames: the pickle stream and its out-of-band buffers (zero copy).
    ``bytes`` travel as they are: pickle would copy them into its stream."""
    if type(obj) is bytes and len(obj) > INLINE_LIMIT:
        return [BYTES, obj]
    import cloudpickle

    buffers = []
    head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return [head, *(b.raw() for b in buffers)]


def deserialize(frames):
    head, *buffers = frames
    if head == BYTES:
        return bytes(buffers[0])
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

"""Moving large buffers with as few first touches of fresh memory as possible.

On the virtual machines our workers often run on, the first write to a fresh page costs far
more than copying into it (about 3 us per 4 KB page measured here, against 0.15 us for the
copy): a 64 MB result that lands in a new buffer and is then copied into a new ``bytes``
object pays that twice. Two helpers avoid it:

- :func:`new_bytes` makes a ``bytes`` object that can still be written while nobody else holds
  it, so a received frame goes straight into the object the task will get (one fresh buffer,
  no copy after it);
- :func:`read_process` copies from another process of ours on this machine straight into such a
  buffer (``process_vm_readv``): the holder copies nothing, and nothing goes through a file.

Both are used only where they work: CPython on Linux, checked once by a probe. Everything else
falls back to the plain way (a copy, or files in /dev/shm).
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys

_OFFSET = bytes.__basicsize__ - 1  # where a bytes object's contents start, in CPython


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _PyBuffer(ctypes.Structure):  # Py_buffer, part of the stable ABI since Python 3.11
    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int),
                ("ndim", ctypes.c_int), ("format", ctypes.c_char_p),
                ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def _probe() -> bool:
    """Whether a bytes object's contents sit where :func:`new_bytes` writes them."""
    if sys.implementation.name != "cpython":
        return False
    try:
        sample = bytes(range(256)) * 16
        return ctypes.string_at(id(sample) + _OFFSET, len(sample)) == sample
    except Exception:
        return False


WRITABLE_BYTES = _probe()
# glibc serves a calloc() this large (its highest mmap threshold) with fresh pages of an mmap:
# memory committed as it is written, never from the size asked for. Smaller ones may come from
# the heap and be zeroed at once.
LAZY_BYTES = 32 << 20

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _vm_readv = _libc.process_vm_readv
    _vm_readv.restype = ctypes.c_ssize_t
    _vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                          ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong]
except (OSError, AttributeError):
    _vm_readv = None
CAN_READ_PROCESSES = _vm_readv is not None and sys.platform.startswith("linux")


def new_bytes(n: int):
    """``(obj, view)``: a new ``bytes`` object of *n* bytes and a writable memoryview of its
    contents, to be filled before *obj* is handed to anyone (its hash is never computed before).
    ``bytes(n)`` is calloc'ed: a large one costs memory only as it is written. None where this
    interpreter keeps bytes differently."""
    if not WRITABLE_BYTES or n < 4096:  # small ones may be shared (CPython caches some)
        return None
    obj = bytes(n)
    array = (ctypes.c_char * n).from_address(id(obj) + _OFFSET)
    array.owner = obj  # the view keeps the array alive, the array the bytes object
    return obj, memoryview(array).cast("B")


def bytes_behind(view):
    """The bytes object a view from :func:`new_bytes` fills, if *view* covers all of it."""
    view = memoryview(view)
    owner = getattr(view.obj, "owner", None)
    if type(owner) is bytes and len(owner) == view.nbytes:
        return owner
    return None


def new_buffer(n: int, copy: bool):
    """A writable buffer of *n* bytes committed as it is written: the contents of a new bytes
    object when the frame will become ``bytes`` (*copy*), else an anonymous mmap (what numpy
    arrays unpickled from it will live in)."""
    made = new_bytes(n) if copy else None
    return made[1] if made is not None else memoryview(mmap.mmap(-1, n)) if n else bytearray()


ctypes.pythonapi.PyObject_GetBuffer.argtypes = [ctypes.py_object, ctypes.c_void_p, ctypes.c_int]
ctypes.pythonapi.PyBuffer_Release.argtypes = [ctypes.c_void_p]


def address(buf) -> int:
    """Address of the first byte of a contiguous buffer (read-only ones too)."""
    view = _PyBuffer()
    obj = ctypes.py_object(buf)
    ctypes.pythonapi.PyObject_GetBuffer(obj, ctypes.byref(view), 0)  # raises if not contiguous
    try:
        return view.buf
    finally:
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))


class CannotRead(OSError):
    """This process may not read the other's memory (ptrace rules, seccomp, another kernel)."""


def read_process(pid: int, remote: int, view) -> None:
    """Copy ``len(view)`` bytes at address *remote* of process *pid* into *view* (writable)."""
    if not CAN_READ_PROCESSES:
        raise CannotRead(errno.ENOSYS, "process_vm_readv is not available")
    view = memoryview(view).cast("B")
    n, done = view.nbytes, 0
    local_base = address(view) if n else 0
    while done < n:
        local = _Iovec(local_base + done, n - done)
        far = _Iovec(remote + done, n - done)
        got = _vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(far), 1, 0)
        if got <= 0:
            err = ctypes.get_errno() if got < 0 else errno.EIO
            if err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                raise CannotRead(err, f"cannot read the memory of process {pid}: "
                                      f"{os.strerror(err)}")
            raise OSError(err, f"reading {n} bytes of process {pid} at {remote:#x}: "
                               f"{os.strerror(err)}")
        done += got


def start_time(pid: int) -> int | None:
    """When process *pid* started (clock ticks since boot), or None if there is none: with the
    pid, it names one process, since a pid is reused only after its process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])

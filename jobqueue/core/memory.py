"""Moving large buffers with as few first touches of fresh memory as possible.

On the virtual machines our workers often run on, the first write to a fresh page costs far
more than copying into it (64 MB: about 60 ms of first touches in 4 KB pages measured here,
about 25 ms in 2 MB huge pages, against 10 ms for the copy): a 64 MB result that lands in a new
buffer and is then copied into a new ``bytes`` object pays that twice. So large buffers ask for
transparent huge pages (``madvise``), and two helpers avoid the second buffer:

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
from typing import Any

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

_vm_readv: Any = None
_madvise: Any = None
try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _vm_readv = _libc.process_vm_readv
    _vm_readv.restype = ctypes.c_ssize_t
    _vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                          ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong]
except (OSError, AttributeError):
    pass
CAN_READ_PROCESSES = _vm_readv is not None and sys.platform.startswith("linux")
if CAN_READ_PROCESSES:
    _madvise = _libc.madvise
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
HUGE = 2 << 20  # transparent huge pages: one first touch per 2 MB instead of 512


def new_bytes(n: int):
    """``(obj, view)``: a new ``bytes`` object of *n* bytes and a writable memoryview of its
    contents, to be filled before *obj* is handed to anyone (its hash is never computed before).
    ``bytes(n)`` is calloc'ed: a large one costs memory only as it is written. None where this
    interpreter keeps bytes differently."""
    if not WRITABLE_BYTES or n < 4096:  # small ones may be shared (CPython caches some)
        return None
    obj = bytes(n)
    start = id(obj) + _OFFSET
    array = (ctypes.c_char * n).from_address(start)
    setattr(array, "owner", obj)  # the view keeps the array alive, the array the bytes object
    if n >= LAZY_BYTES and _madvise is not None:  # its own mmap (see LAZY_BYTES): huge pages
        first, end = -(-start // HUGE) * HUGE, (start + n) // HUGE * HUGE
        if end > first:
            _madvise(first, end - first, getattr(mmap, "MADV_HUGEPAGE", 14))
    return obj, memoryview(array).cast("B")


def new_mapping(n: int) -> mmap.mmap:
    """Private anonymous memory for *n* bytes, committed as it is written, in huge pages where
    the kernel allows them for memory that asks (``transparent_hugepage=madvise``)."""
    m = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if n >= HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return m


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
    return made[1] if made is not None else memoryview(new_mapping(n)) if n else bytearray()


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


PARALLEL_FROM = 16 << 20  # a read this large is split between threads (up to MAX_THREADS)
MAX_THREADS = 4
_pool: list = []


def read_process(pid: int, remote: int, view) -> None:
    """Copy ``len(view)`` bytes at address *remote* of process *pid* into *view* (writable).
    A large read is split between a few threads: most of its cost is the first touch of the
    fresh pages it fills, which the kernel handles on every core at once."""
    if not CAN_READ_PROCESSES:
        raise CannotRead(errno.ENOSYS, "process_vm_readv is not available")
    view = memoryview(view).cast("B")
    n = view.nbytes
    if not n:
        return
    base = address(view)
    threads = min(MAX_THREADS, os.cpu_count() or 1)
    if n < PARALLEL_FROM or threads < 2:
        _read_range(pid, remote, base, n)
        return
    if not _pool:
        from concurrent.futures import ThreadPoolExecutor

        _pool.append(ThreadPoolExecutor(MAX_THREADS - 1, thread_name_prefix="jobqueue-read"))
    step = (-(-n // threads) + HUGE - 1) // HUGE * HUGE
    pieces = [(i, min(step, n - i)) for i in range(0, n, step)]
    futures = [_pool[0].submit(_read_range, pid, remote + i, base + i, k) for i, k in pieces[1:]]
    try:
        _read_range(pid, remote, base, pieces[0][1])
    finally:
        for f in futures:
            f.exception()  # every piece has finished before the buffer can go away
    for f in futures:
        f.result()


def _read_range(pid: int, remote: int, local: int, n: int) -> None:
    done = 0
    while done < n:
        mine = _Iovec(local + done, n - done)
        far = _Iovec(remote + done, n - done)
        got = _vm_readv(pid, ctypes.byref(mine), 1, ctypes.byref(far), 1, 0)
        if got <= 0:
            err = ctypes.get_errno() if got < 0 else errno.EIO
            if err in (errno.EPERM, errno.ENOSYS, errno.EACCES):
                raise CannotRead(err, f"cannot read the memory of process {pid}: "
                                      f"{os.strerror(err)}")
            raise OSError(err, f"reading {n} bytes of process {pid} at {remote:#x}: "
                               f"{os.strerror(err)}")
        done += got


def _forget_pool():  # a forked child has no thread behind the parent's executor
    _pool.clear()


os.register_at_fork(after_in_child=_forget_pool)


def start_time(pid: int) -> int | None:
    """When process *pid* started (clock ticks since boot), or None if there is none: with the
    pid, it names one process, since a pid is reused only after its process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat.rsplit(b")", 1)[1].split()[19])

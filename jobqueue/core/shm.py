"""Results between processes of one machine without a socket: read from the holder's memory,
or through files in /dev/shm.

Workers of one job (``processes=4``), a LocalCluster's workers, and a client beside them move a
64 MB chunk in one copy. The asker says in its request that it is on the same machine (an id of
its ``/dev/shm``, :func:`namespace`) and whether it can read other processes' memory; the holder
answers, for each large frame of a result, either

- where the frame is in its memory (``{"at": address, "n": size}``, with its pid and start time
  once per reply): the asker copies it straight into the buffer the value will live in
  (``process_vm_readv``, memory.py), and the holder keeps the frame until the asker's next
  request. Nothing is copied on the holder's side and no fresh memory is touched but the
  asker's own buffer: on a virtual machine a first touch of a page costs more than the copy.
  Linux allows it between processes of one user unless ptrace is restricted (Yama's
  ``ptrace_scope`` >= 1, seccomp): the asker notices the first refusal and asks for files from
  then on; or
- a new file in ``/dev/shm`` (mode 0600, created exclusively, a random name) holding it, which
  the asker opens and unlinks at once (``{"shm": name, "n": size}``). A pickle's out-of-band
  buffers (numpy, pandas) are mapped from the file without a copy; plain ``bytes`` are read
  into a new bytes object.

Only files that our own user created with mode 0600 are read, so no other user can put data in
front of us; only a process of our own user can be read, and it must still be the process that
answered (same pid and start time) after the copy. Names and addresses travel inside batches
that are authenticated like any other. The two processes must see the same ``/dev/shm`` and
pids (the same machine, boot and mount): the asker sends an id of its ``/dev/shm`` and the
holder uses it only when the id is its own.
"""
from __future__ import annotations

import logging
import mmap
import os
import re
import secrets
import stat

from . import memory

logger = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
MIN_FRAME = 1 << 20          # smaller frames travel inline: a file costs more than it saves
_NAME = re.compile(r"jobqueue-[0-9a-f]{32}\Z")
_namespace: list = []
_cross = [memory.CAN_READ_PROCESSES]  # until the kernel refuses once


def namespace() -> str | None:
    """Who sees the same /dev/shm files and processes as this process: machine boot, mount,
    user. None where there is no /dev/shm, or where ``worker.same-machine-transfers`` is off."""
    if not _namespace:
        from .. import config

        if not config.get("worker.same-machine-transfers", True):
            _namespace.append(None)
            return None
        try:
            st = os.stat(SHM_DIR)
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()
            ok = stat.S_ISDIR(st.st_mode) and os.access(SHM_DIR, os.W_OK)
            _namespace.append(f"{boot}:{st.st_dev}:{st.st_ino}:{os.getuid()}" if ok else None)
        except OSError:
            _namespace.append(None)
    return _namespace[0]


def cross_memory() -> bool:
    """Whether to ask holders for addresses in their memory rather than files."""
    return _cross[0]


def refuse_cross_memory(reason) -> None:
    if _cross[0]:
        logger.info("cannot read other processes' memory (%s): same-machine results go "
                    "through files in %s", reason, SHM_DIR)
    _cross[0] = False


def holder() -> dict:
    """What identifies this process to an asker that reads its memory."""
    return {"pid": os.getpid(), "start": memory.start_time(os.getpid())}


def export(frames: list, created: list, cross: bool = False) -> list:
    """*frames* with each large one replaced by where the asker finds it: its address in this
    process (*cross*; the frame is appended to *created*, which keeps it until the asker is
    done) or a new shared-memory file (``{"shm": name, "n": size}``; the name is appended to
    *created*, and the caller unlinks any that the reader did not take). Falls back to the
    frame itself if the file cannot be written."""
    out = []
    for frame in frames:
        view = memoryview(frame).cast("B")
        if view.nbytes < MIN_FRAME:
            out.append(frame)
            continue
        if cross:
            created.append(view)
            out.append({"at": memory.address(view), "n": view.nbytes})
            continue
        name = f"jobqueue-{secrets.token_hex(16)}"
        path = os.path.join(SHM_DIR, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError:
            out.append(frame)
            continue
        created.append(name)
        try:
            offset = 0
            while offset < view.nbytes:
                offset += os.write(fd, view[offset:])
        except OSError:  # /dev/shm is full: send this frame inline
            out.append(frame)
            discard([name])
            continue
        finally:
            os.close(fd)
        out.append({"shm": name, "n": view.nbytes})
    return out


def load(frames: list, source: dict | None = None) -> list:
    """Frames as :func:`export` made them, with every file read (or mapped) and unlinked, and
    every address read from the memory of *source* (:func:`holder` of the process that
    answered). Raises ValueError for a name, file or process that is not one of ours, and
    memory.CannotRead if this process may not read the holder's memory."""
    from .protocol import BYTES

    copy = bool(frames) and not isinstance(frames[0], dict) and bytes(frames[0]) == BYTES
    out = [(_read(f, copy, source) if "at" in f else _load(f, copy)) if isinstance(f, dict)
           else f for f in frames]
    if source is not None and any(isinstance(f, dict) and "at" in f for f in frames):
        if memory.start_time(source["pid"]) != source.get("start"):
            raise ValueError(f"process {source['pid']} ended while its results were read")
    return out


def _read(ref: dict, copy: bool, source: dict | None):
    at, n = ref.get("at"), ref.get("n")
    if type(at) is not int or type(n) is not int or n < 0 or type(source) is not dict or \
            type(source.get("pid")) is not int:
        raise ValueError(f"not a frame in another process's memory: {ref!r:.100}")
    buf = memory.new_buffer(n, copy)
    memory.read_process(source["pid"], at, buf)
    return memory.bytes_behind(buf) if copy and memory.bytes_behind(buf) is not None else buf


def _load(ref: dict, copy: bool):
    name, n = ref.get("shm"), ref.get("n")
    if not isinstance(name, str) or not _NAME.match(name) or type(n) is not int:
        raise ValueError(f"not a shared-memory frame: {ref!r:.100}")
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        os.unlink(path)
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or st.st_mode & 0o077 or st.st_size != n:
            raise ValueError(f"{path} is not a file of ours of {n} bytes (owner {st.st_uid}, "
                             f"mode {oct(st.st_mode & 0o777)}, {st.st_size} bytes)")
        if copy:
            parts, got = [], 0
            while got < n:
                part = os.read(fd, n - got)
                if not part:
                    raise ValueError(f"{path} ended after {got} of {n} bytes")
                parts.append(part)
                got += len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        return mmap.mmap(fd, n, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def discard(created: list) -> None:
    """Unlink files a reader never took (it died, or the connection did) and let go of the
    frames it was reading from our memory."""
    for name in created:
        if type(name) is not str:
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            pass
    created.clear()

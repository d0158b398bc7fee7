"""Results between processes of one machine through shared memory instead of a socket.

Workers of one job (``processes=4``), a LocalCluster's workers, and a client beside them move a
64 MB chunk in one copy this way: the holder writes each large frame of the result into a new
file in ``/dev/shm`` (mode 0600, created exclusively, a random name), and the asker, told the
names in its authenticated reply, opens and unlinks them at once. A pickle's out-of-band
buffers (numpy, pandas) are mapped from the file without a copy; plain ``bytes`` are read into
a new bytes object (one copy). Over TCP the same result costs a copy into the kernel, one out,
one into the final object, and a MAC of every byte on each side.

Only files that our own user created with mode 0600 are read, so no other user can put data in
front of us; the names travel inside batches that are authenticated like any other. The two
processes must see the same ``/dev/shm`` (the same machine, boot and mount): the asker sends an
id of its ``/dev/shm`` and the holder uses it only when the id is its own.
"""
from __future__ import annotations

import mmap
import os
import re
import secrets
import stat

SHM_DIR = "/dev/shm"
MIN_FRAME = 1 << 20          # smaller frames travel inline: a file costs more than it saves
_NAME = re.compile(r"jobqueue-[0-9a-f]{32}\Z")
_namespace: list = []


def namespace() -> str | None:
    """Who sees the same /dev/shm files as this process: machine boot, mount, user. None where
    there is no /dev/shm."""
    if not _namespace:
        try:
            st = os.stat(SHM_DIR)
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()
            ok = stat.S_ISDIR(st.st_mode) and os.access(SHM_DIR, os.W_OK)
            _namespace.append(f"{boot}:{st.st_dev}:{st.st_ino}:{os.getuid()}" if ok else None)
        except OSError:
            _namespace.append(None)
    return _namespace[0]


def export(frames: list, created: list) -> list:
    """*frames* with each large one written to a new shared-memory file and replaced by
    ``{"shm": name, "n": size}``; the names are appended to *created* (the caller unlinks any
    that the reader did not). Falls back to the frame itself if the file cannot be written."""
    out = []
    for frame in frames:
        view = memoryview(frame).cast("B")
        if view.nbytes < MIN_FRAME:
            out.append(frame)
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


def load(frames: list) -> list:
    """Frames as :func:`export` made them, with every file read (or mapped) and unlinked.
    Raises ValueError for a name or file that is not one of ours."""
    from .protocol import BYTES

    copy = bool(frames) and not isinstance(frames[0], dict) and bytes(frames[0]) == BYTES
    return [_load(f, copy) if isinstance(f, dict) else f for f in frames]


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


def discard(names: list) -> None:
    """Unlink files a reader never took (it died, or the connection did)."""
    for name in names:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
        except OSError:
            pass
    names.clear()

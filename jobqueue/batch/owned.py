"""Files in ~/.jobqueue that name the process that owns them, and the sweep of dead owners' files.

A cluster's token file and a driver's scheduler file are removed when it closes. A process
killed with SIGKILL (or by the out-of-memory killer, or a node reboot) cannot remove them, so
each is named ``STEM.HOST.PID.SUFFIX`` and the next cluster started on the same host removes
those whose process is gone (or whose pid now belongs to a process started after the file was
written). Files of other hosts are left alone: their owners cannot be checked from here.
"""
from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger("jobqueue.batch")

SUFFIXES = (".token", ".json")


def directory() -> str:
    """~/.jobqueue (made safe: see :func:`jobqueue.node.private_directory`)."""
    from ..node import private_directory

    return private_directory()


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def owned_name(stem: str, suffix: str) -> str:
    """``STEM.HOST.PID.SUFFIX``: the file's owner is this process on this host."""
    return f"{stem}.{_host()}.{os.getpid()}{suffix}"


def _owner_gone(path: str, pid: int) -> bool:
    import psutil

    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    try:
        return started > os.stat(path).st_mtime + 1    # the pid was reused since
    except OSError:
        return False


def remove_stale(where: str | None = None) -> list:
    """Remove the owned files of dead processes of this host; returns their paths."""
    where = where or directory()
    try:
        names = os.listdir(where)
    except OSError:
        return []
    removed, host = [], _host()
    for name in names:
        suffix = next((s for s in SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            continue
        prefix, _, pid = name[:-len(suffix)].rpartition(".")
        if not pid.isdigit() or not prefix.endswith(f".{host}") or int(pid) == os.getpid():
            continue
        path = os.path.join(where, name)
        if _owner_gone(path, int(pid)):
            try:
                if os.lstat(path).st_uid != os.getuid():
                    continue
                os.unlink(path)
            except OSError:
                continue
            removed.append(path)
    if removed:
        logger.info("removed %d file(s) of jobqueue processes that ended without cleaning up: "
                    "%s", len(removed), ", ".join(removed))
    return removed

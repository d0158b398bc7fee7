"""Warnings a user must see even when they never configured logging.

jobqueue logs with the standard ``logging`` module. Python prints a warning on stderr when no
handler at all would take it; the handler each scheduler adds to the ``jobqueue`` logger (the
log behind ``get_logs()``) would silence that, so a job that can never start, or a dashboard
that moved to another port, would go unsaid in a plain script. :func:`warn` logs the message
and, when no handler but those log buffers would show it, also issues a :class:`JobqueueWarning`
(printed once per message by Python's default warning filter).
"""
from __future__ import annotations

import logging
import warnings


class JobqueueWarning(UserWarning):
    """Something the user should act on (a job that cannot start, a port that moved)."""


def _shown(logger: logging.Logger, level: int) -> bool:
    """Would a handler other than a scheduler's log buffer take a record of level?"""
    from .scheduler import LogBuffer

    current: logging.Logger | None = logger
    while current is not None:
        if any(not isinstance(h, LogBuffer) and h.level <= level for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def warn(logger: logging.Logger, message: str, *args, level: int = logging.WARNING) -> None:
    """logger.log(level, message, *args), and a JobqueueWarning if nobody would see it."""
    logger.log(level, message, *args)
    if not _shown(logger, level):
        # attributed to the logger, not to a line of ours (Python would print that line too)
        warnings.warn_explicit(message % args if args else message, JobqueueWarning,
                               filename=logger.name, lineno=0, module=logger.name,
                               registry=_registry)


_registry: dict = {}       # what warnings.warn_explicit has shown (once per message)

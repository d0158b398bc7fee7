"""The poll loop of clusters that watch their jobs (batch jobs, Kubernetes pods): one call per
interval for all of a cluster's jobs, and longer pauses while those calls fail.

A cluster mixes :class:`Polling` in and implements ``_poll_once() -> bool`` (False: the call
failed, the jobs' last known states are kept and marked stale). ``_poll_failures`` counts the
polls that failed in a row, so that a cluster says so once, and again when it recovers.
"""
from __future__ import annotations

import asyncio
import logging

MAX_BACKOFF = 60.0       # longest pause between polls while they fail


def poll_delay(interval: float, failures: int) -> float:
    """Seconds until the next poll: the interval, doubled for each poll that failed in a row,
    at most MAX_BACKOFF (or the interval, if that is longer)."""
    delay = interval * 2 ** min(failures, 10)
    return min(delay, max(MAX_BACKOFF, interval))


class Polling:
    """Mixin: ``_start_poller()`` runs ``_poll_once()`` every ``poll_interval`` seconds on the
    cluster's event loop until ``_stop_poller()``."""

    _logger = logging.getLogger("jobqueue.polling")    # the cluster's own logger
    name: str
    poll_interval: float
    _poller: asyncio.Task | None = None
    _poll_failures = 0

    async def _poll_once(self) -> bool:
        raise NotImplementedError

    async def _start_poller(self):
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    def _stop_poller(self):
        if self._poller is not None:
            self._poller.cancel()

    async def _poll_loop(self):
        while True:
            await asyncio.sleep(await self._poll_step())

    async def _poll_step(self) -> float:
        """One poll; returns how long to wait before the next (longer while polls fail)."""
        try:
            ok = await self._poll_once()
        except asyncio.CancelledError:
            raise
        except Exception:
            self._logger.exception("%s: polling the states of its jobs failed", self.name)
            ok = False
        self._poll_failures = 0 if ok else self._poll_failures + 1
        return poll_delay(self.poll_interval, self._poll_failures)

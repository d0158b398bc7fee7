"""Clusters whose jobs end by themselves: batch jobs (batch/job.py) and Kubernetes pods
(kubernetes.py). They ask about all their jobs with one call per poll (:class:`Polling`) and
keep ``scale(n)`` true after every poll with the pure policy of keep.py: jobs that end are
replaced, jobs that keep failing before a worker connects are given up on (``failure`` says
why), a job removed from outside lowers the target.

A cluster mixes :class:`Watched` in before :class:`~jobqueue.deploy.cluster.Cluster`, calls
``_init_watched()`` in its constructor, names its jobs in messages (``noun``, ``submitted``,
``submitting``, ``submit_what``, ``removed``) and implements ``_submit(count) -> [new jobs]``,
``_removal_order(jobs)`` and ``_poll_once()``; its jobs have ``view() -> keep.JobView``.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from ..core import notice
from . import keep as keep_mod
from .cluster import Cluster
from .polling import Polling


class Watched(Polling):
    """Mixin: scale(n) as a target kept by keep.py's policy, adaptive submissions, give-up."""

    noun = "job"                          # "pod"
    submitted = "submitted"               # "created": what happens to a new one
    submitting = "submitting"             # "creating"
    submit_what = "the submit command"    # what may fail when making one
    removed = "cancelled"                 # "deleted": what someone else did to one
    submit_errors: tuple = ()             # errors of _submit a replacement may meet and retry
    max_jobs_key = "max-jobs"             # the setting behind max_jobs, for messages

    # set by the Cluster and the subclass
    name: str
    scheduler: Any
    _sync: Any
    retire_jobs: Any                      # the Cluster's (graceful), or the subclass's
    jobs: dict
    max_jobs: int | None

    def _init_watched(self):
        self.start_retries = keep_mod.RETRIES
        self.replacements = 0                # jobs made to replace ended ones
        self.failure = ""                    # why no more jobs are made ('': none)
        self._target: int | None = None      # scale(jobs=N): N jobs kept queued or running
        self._keeping = asyncio.Lock()       # one decision and its submissions at a time
        self._submissions = 0                # submissions (submit commands, create calls) made
        self._epoch = 0                      # submissions before it are not the target's
        self._outside = 0                    # jobs removed from outside when N was set
        self._submit_errors = 0              # replacements that could not be made, in a row

    async def _submit(self, count: int) -> list:
        raise NotImplementedError

    def _removal_order(self, jobs) -> list:
        raise NotImplementedError

    async def _gave_up(self) -> None:
        """Called once the cluster has given up (``failure`` is set)."""

    def live_jobs(self) -> list:
        """Jobs queued or running that the cluster has not asked to stop."""
        return [j for j in list(self.jobs.values()) if not j.done and not j.cancel_requested]

    async def _scale_to(self, target: int, wait=False):
        if self.max_jobs is not None and target > self.max_jobs:
            self._logger.info("%s: %d %ss asked for, %s is %d", self.name, target, self.noun,
                        self.max_jobs_key, self.max_jobs)
            target = self.max_jobs
        async with self._keeping:
            self._target, self._epoch, self.failure = target, self._submissions, ""
            self._outside = sum(j.view().cancelled_outside for j in list(self.jobs.values()))
            live = self.live_jobs()
            if len(live) > target:
                await self.retire_jobs(self._removal_order(live)[:len(live) - target])
            else:
                await self._keep(replacing=False)

    @functools.wraps(Cluster.adapt)
    def adapt(self, *args, **kwargs):
        self._target, self._epoch, self.failure = None, self._submissions, ""
        return super().adapt(*args, **kwargs)

    async def _add_jobs(self, count: int):
        """Adaptive scaling's submissions (none once the cluster has given up)."""
        async with self._keeping:
            if not self.failure:
                await self._submit(count)

    async def _keep(self, replacing=True):
        """Submit what the target needs (see keep.py), or give up on jobs that keep failing.
        The caller holds ``_keeping``."""
        if self.failure:                     # given up: only scale() or adapt() start again
            return
        jobs = [j.view() for j in list(self.jobs.values())]
        target = self._target if self._adaptive is None else None
        decision = keep_mod.decide(target, jobs, time.time(), retries=self.start_retries,
                                   max_jobs=self.max_jobs, cancelled_before=self._outside,
                                   since=self._epoch)
        if decision.give_up:
            self._give_up(decision.give_up)
            await self._gave_up()
            return
        if target is not None and decision.target != target:
            notice.warn(self._logger, "%s: a %s was %s outside jobqueue; keeping %d %ss, not %d",
                        self.name, self.noun, self.removed, decision.target, self.noun, target)
            self._target = decision.target
            self._outside = sum(j.cancelled_outside for j in jobs)
        if not decision.submit:
            return
        if not replacing:                    # scale(): a failed submit raises to the caller
            await self._submit(decision.submit)
            return
        self._logger.info("%s: %s %d: %s", self.name, self.submitting, decision.submit,
                          decision.reason)
        try:
            self.replacements += len(await self._submit(decision.submit))
            self._submit_errors = 0
        except self.submit_errors as e:
            self._submit_errors += 1
            if self._submit_errors >= self.start_retries:
                self._give_up(f"{self.submit_what} failed {self._submit_errors} times in a "
                              f"row: {e}")
            else:
                notice.warn(self._logger, "%s: could not make a replacement %s (will try again): %s",
                            self.name, self.noun, e)

    # -- waiting ------------------------------------------------------------------------------

    def _observe_jobs(self) -> None:
        """Note which workers of each job are connected now."""

    def _cannot_bring(self, n: int, have: int) -> str:
        """Why the jobs cannot bring n workers ('': they may)."""
        raise NotImplementedError

    def _job_counts(self) -> str:
        raise NotImplementedError

    def wait_for_workers(self, n: int, timeout: float | None = None):
        """Wait until n workers are connected.

        Raises RuntimeError (with each ended or stuck job's id, state, reason and log tail) as
        soon as the jobs left cannot bring n workers, and TimeoutError after ``timeout``
        (``asynchronous=True``: await it).

        Parameters
        ----------
        n : int
            Number of workers.
        timeout : float, optional
            Seconds to wait (None: no limit: a job may pend for hours).
        """
        return self._sync(self._wait_for_workers(n, timeout))

    async def _wait_for_workers(self, n, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.scheduler.workers()) < n:
            self._observe_jobs()
            have = len(self.scheduler.workers())
            problem = self._cannot_bring(n, have)
            if problem:
                raise RuntimeError(f"{self.name}: waiting for {n} workers, {have} connected, "
                                   f"{problem}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {have} of {n} workers connected within "
                                   f"{timeout:g} s; {self.noun}s: {self._job_counts()}")
            # a worker that joins wakes this at once; job states change with each poll
            await self.scheduler.wait_for_worker_change(0.25)
        self._observe_jobs()

    def _give_up(self, why: str):
        self.failure = f"no more {self.noun}s are {self.submitted}: {why}"
        notice.warn(self._logger, "%s: %s", self.name, self.failure, level=logging.ERROR)

"""The cluster base: owns a scheduler and a set of jobs, scales them, reports on them.

A *job* is the unit a cluster starts and stops: a local process, an ssh session, a batch job.
Subclasses say how to make one (:meth:`Cluster.new_job`) and how many workers one holds.
"""
from __future__ import annotations

import asyncio
import atexit
import html
import logging
import secrets
import time
import weakref

from ..core import loop as loop_mod
from ..core.scheduler import Scheduler

logger = logging.getLogger("jobqueue.cluster")


class Job:
    """One unit of workers. Subclasses implement start/close/logs."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.state = "new"

    async def start(self):
        raise NotImplementedError

    async def close(self):
        raise NotImplementedError

    def worker_names(self) -> list:
        return [self.name]

    def logs(self) -> str:
        return ""

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.state}>"


class Cluster:
    """Base of LocalCluster, SSHCluster and the batch clusters."""

    workers_per_job = 1
    kind = "cluster"

    def __init__(self, *, host="127.0.0.1", scheduler_port=0, token=None, name=None,
                 allowed_failures=None, worker_ttl=None, scheduler_file=None):
        from .. import config

        self.token = token or secrets.token_urlsafe(32)
        self.name = name or f"{self.kind}-{secrets.token_hex(3)}"
        self.jobs: dict[str, Job] = {}
        self._job_counter = 0
        self.status = "starting"
        self.scheduler = Scheduler(
            self.token, host=host, port=scheduler_port,
            allowed_failures=allowed_failures if allowed_failures is not None
            else config.get("scheduler.allowed-failures", 3),
            worker_ttl=worker_ttl if worker_ttl is not None
            else config.get("scheduler.worker-ttl", 300.0),
            scheduler_file=scheduler_file)
        self._sync(self.scheduler.start())
        self.status = "running"
        _clusters.add(self)

    def _sync(self, coro, timeout=None):
        return loop_mod.sync(coro, timeout)

    # -- properties ---------------------------------------------------------------------------

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address

    @property
    def dashboard_link(self):
        return None

    @property
    def workers(self) -> dict:
        """``{address: {name, nthreads, memory_limit, ...}}`` of connected workers."""
        return self.scheduler.info()["workers"]

    def scheduler_info(self) -> dict:
        return self.scheduler.info()

    # -- scaling ------------------------------------------------------------------------------

    def new_job(self, name) -> Job:
        raise NotImplementedError

    def _jobs_for(self, n=None, jobs=None, cores=None, memory=None) -> int:
        if jobs is not None:
            return int(jobs)
        if n is not None:
            return -(-int(n) // self.workers_per_job)
        raise TypeError("scale() needs n (workers) or jobs=")

    def scale(self, n=None, jobs=None, cores=None, memory=None, wait=True):
        """Ask for *n* workers (or *jobs* jobs, or enough for *cores*/*memory*)."""
        target = self._jobs_for(n, jobs, cores, memory)
        self._sync(self._scale_to(target, wait=wait))

    async def _scale_to(self, target: int, wait=True):
        live = [j for j in self.jobs.values() if j.state not in ("closed", "closing")]
        if len(live) < target:
            new = []
            for _ in range(target - len(live)):
                self._job_counter += 1
                job = self.new_job(f"{self.name}-{self._job_counter - 1}")
                self.jobs[job.name] = job
                new.append(job)
            await asyncio.gather(*(j.start() for j in new))
            if wait:
                await self._wait_for_jobs(new)
        elif len(live) > target:
            extra = live[target:]  # the newest jobs go first
            await self.retire_jobs(extra)

    async def retire_jobs(self, jobs):
        """Scale down gracefully: results held only by these jobs' workers move to other
        workers, then the jobs close."""
        names = [n for j in jobs for n in j.worker_names()]
        connected = [n for n in names if n in self.scheduler.state.names]
        if connected:
            await self.scheduler.retire_workers(connected)
        await asyncio.gather(*(self._close_job(j) for j in jobs))

    async def _wait_for_jobs(self, jobs, timeout=60.0):
        names = {n for j in jobs for n in j.worker_names()}
        deadline = time.monotonic() + timeout
        while True:
            arrived = {ws.name for ws in self.scheduler.state.workers.values()}
            missing = names - arrived
            if not missing:
                return
            for j in jobs:
                problem = j.problem() if hasattr(j, "problem") else None
                if problem:
                    raise RuntimeError(f"{j.name} failed to start: {problem}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {sorted(missing)} did not connect to "
                                   f"{self.scheduler_address} within {timeout:g} s")
            await asyncio.sleep(0.02)

    async def _close_job(self, job):
        job.state = "closing"
        try:
            await job.close()
        finally:
            job.state = "closed"
            self.jobs.pop(job.name, None)

    def wait_for_workers(self, n: int, timeout: float = 60.0):
        async def wait():
            deadline = time.monotonic() + timeout
            while len(self.scheduler.state.workers) < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{n} workers did not arrive within {timeout:g} s")
                await asyncio.sleep(0.02)

        self._sync(wait())

    # -- logs, repr, close --------------------------------------------------------------------

    def get_logs(self) -> dict:
        """``{name: text}`` for the scheduler and every job."""
        logs = {"scheduler": self.scheduler.log.text()}
        for job in list(self.jobs.values()) + list(getattr(self, "_closed_jobs", [])):
            logs[job.name] = job.logs()
        return logs

    def close(self, timeout=10.0):
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"

        async def close():
            await asyncio.gather(*(self._close_job(j) for j in list(self.jobs.values())),
                                 return_exceptions=True)
            await self.scheduler.close()

        try:
            self._sync(close(), timeout + 10)
        finally:
            self.status = "closed"
            _clusters.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _summary(self):
        workers = self.scheduler.state.workers.values()
        threads = sum(w.nthreads for w in workers)
        memory = sum(w.memory_limit for w in workers)
        return len(self.scheduler.state.workers), threads, memory

    def __repr__(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        return (f"{type(self).__name__}({self.name!r}, {self.scheduler_address!r}, "
                f"workers={n}, threads={threads}, memory={format_bytes(memory)})")

    def _repr_html_(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in [("scheduler", self.scheduler_address), ("workers", n),
                                    ("threads", threads), ("memory", format_bytes(memory)),
                                    ("status", self.status)])
        return f"<div><b>{type(self).__name__}</b> {html.escape(self.name)}<table>{rows}</table></div>"


_clusters: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_clusters():
    for cluster in list(_clusters):
        try:
            cluster.close(timeout=5)
        except Exception:
            pass

"""The cluster base: owns a scheduler and a set of jobs, scales them, reports on them.

A *job* is the unit a cluster starts and stops: a local process, an ssh session, a batch job.
A new kind of cluster implements:

- :meth:`Cluster.new_job` (``name -> Job``) and a :class:`Job` subclass with ``start()``,
  ``close()``, ``logs()`` and, if a job holds several workers, ``worker_names()``;
- ``workers_per_job`` and ``threads_per_job`` (what one job brings, for scale() and adapt());
- optionally ``_new_scheduler()`` (a scheduler elsewhere: return a
  :class:`~jobqueue.core.scheduler_api.SchedulerAPI`), ``_jobs_for()`` (scale(cores=,
  memory=)), and ``close()`` for jobs that must be cancelled with one command.

The cluster talks to its scheduler only through :class:`~jobqueue.core.scheduler_api.SchedulerAPI`
(``self.scheduler``), the same whether the scheduler runs in this process or on another host.
"""
from __future__ import annotations

import asyncio
import atexit
import html
import logging
import os
import secrets
import signal
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .. import params
from ..core import loop as loop_mod
from ..core.scheduler_api import InProcess, SchedulerAPI, in_scope, log_scope, wait_for_workers
from . import scheduler_options as scheduler_options_mod

if TYPE_CHECKING:
    from .adaptive import Adaptive

logger = logging.getLogger("jobqueue.cluster")


class Job:
    """One unit of workers. Subclasses implement start/close/logs."""

    def __init__(self, cluster: Cluster, name: str):
        self.cluster = cluster
        self.name = name
        self.state: Any = "new"

    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def worker_names(self) -> list[str]:
        return [self.name]

    def logs(self) -> str:
        return ""

    def problem(self) -> str | None:
        """Why this job cannot bring its workers (it failed to start), or None."""
        return None

    def info(self, connected: dict | None = None) -> dict:
        """This job as one row of the dashboard's jobs page (``connected``: the scheduler's
        workers by name, if the caller has them)."""
        names = self.worker_names()
        if connected is None:
            connected = self.cluster.scheduler.workers()
        workers = [n for n in names if n in connected]
        state = _JOB_STATE_WORDS.get(str(self.state), str(self.state))
        reason = str(getattr(self, "reason", "") or "")
        if state == "running" and not reason and len(workers) < len(names):
            reason = "workers starting"
        return {"name": self.name, "id": str(getattr(self, "job_id", "") or ""), "state": state,
                "reason": reason, "workers": workers, "expected_workers": len(names),
                "stale": bool(getattr(self, "stale", False))}

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.state}>"


_JOB_STATE_WORDS = {"new": "pending", "closed": "finished"}  # to the one JobState vocabulary
_FROM_CONFIG = "from config"  # dashboard_address default: config key scheduler.dashboard-address


@params.document("scheduler")
class Cluster:
    """Base of LocalCluster, SSHCluster, KubeCluster and the batch clusters: owns a scheduler
    and the jobs that bring its workers.
    """

    workers_per_job = 1
    threads_per_job = 1
    memory_per_job: int | None = None      # bytes, where a cluster knows it (batch clusters)
    worker_resources: dict = {}            # what each worker declares (--resources): for adapt()
    kind = "cluster"
    _adaptive = None

    def __init__(self, *, host: str | None = "127.0.0.1", scheduler_port: int = 0,
                 token: str | None = None, name: str | None = None,
                 allowed_failures: int | None = None, worker_ttl: float | None = None,
                 scheduler_file: str | None = None, dashboard_address=_FROM_CONFIG,
                 idle_timeout: float | None = None, scheduler_options: dict | None = None,
                 interface: str | None = None, asynchronous: bool = False,
                 temp_directory: str | None = None):
        """Subclasses set their own attributes first and call this last: it starts the
        cluster (:meth:`_start`), unless ``asynchronous`` (then ``await cluster`` does)."""
        from .. import config
        from ..core.security import Security
        from ..node import interface_address, public_address

        self.token = token or secrets.token_urlsafe(32)
        self.name = name or f"{self.kind}-{secrets.token_hex(3)}"
        self.jobs: dict[str, Job] = {}
        self._job_counter = 0
        self.status = "created"
        self.asynchronous = bool(asynchronous)
        self._starting: Any = None
        what = f"{type(self).__name__}"
        options = scheduler_options_mod.check(scheduler_options, f"{what} scheduler_options")
        self.scheduler_options = options
        if "dashboard_address" in options.given:
            dashboard_address = options.dashboard_address
        elif dashboard_address is _FROM_CONFIG:
            dashboard_address = config.get("scheduler.dashboard-address", None)
        self.scheduler: SchedulerAPI = self._new_scheduler(
            host=scheduler_options_mod.listen_host(options, interface, host or public_address(),
                                                   what, interface_address),
            port=options.port if options.port is not None else scheduler_port,
            allowed_failures=allowed_failures if allowed_failures is not None
            else config.get("scheduler.allowed-failures", 3),
            worker_ttl=worker_ttl if worker_ttl is not None
            else config.get("scheduler.worker-ttl", 300.0),
            idle_timeout=idle_timeout if idle_timeout is not None
            else config.get("scheduler.idle-timeout", None),
            scheduler_file=scheduler_file, dashboard_address=dashboard_address,
            security=scheduler_options_mod.security(options, Security.from_config),
            temp_directory=temp_directory)
        self.scheduler.serve_cluster(self._dashboard_jobs, self._dashboard_log)
        self.scheduler.on_close(self._scheduler_closed)
        _clusters.add(self)
        _handle_stop_signals()
        if not self.asynchronous:
            self._block(self._start_cluster())

    def _new_scheduler(self, **options) -> SchedulerAPI:
        """The scheduler this cluster owns, in this process (SSHCluster may start it elsewhere)."""
        return InProcess(self.token, **options)

    async def _start(self) -> None:
        """Start the scheduler; subclasses then start what the cluster begins with (its first
        jobs), on the event loop."""
        await self.scheduler.start()

    async def _start_cluster(self) -> Cluster:
        """:meth:`_start`, once; a cluster that fails to start is closed again."""
        if self.status == "created":
            self.status = "starting"
            try:
                await self._start()
            except BaseException:
                await self._close_cluster()
                raise
            self.status = "running"
            self.scheduler.start_idle_clock()
        return self

    def __await__(self):
        """``await cluster``: start it (``asynchronous=True``); the cluster itself."""
        if not self.asynchronous:
            return _ready(self).__await__()
        if self._starting is None:
            self._starting = self._sync(self._start_cluster())
        return self._starting.__await__()

    async def __aenter__(self) -> Cluster:
        return await self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _sync(self, coro, timeout=None):
        """Run ``coro`` on the event loop, its log lines in this cluster's log: wait for it, or,
        with ``asynchronous=True``, return an awaitable (the work starts at once either way)."""
        if self.asynchronous:
            loop_mod.caller_loop(coro)
            return loop_mod.run_async(in_scope(self.name, coro), timeout)
        return self._block(coro, timeout)

    def _block(self, coro, timeout=None):
        """Run ``coro`` on the event loop and wait for it, whatever ``asynchronous`` says."""
        return loop_mod.sync(in_scope(self.name, coro), timeout)

    def _scheduler_closed(self):
        """The scheduler closed by itself (scheduler.idle-timeout) or was lost: close the
        cluster too, so that no job is left running for nothing."""
        if self.status in ("starting", "running"):
            with log_scope(self.name):
                logger.warning("%s: its scheduler at %s closed; closing the cluster", self.name,
                               self.scheduler_address)
            asyncio.get_running_loop().create_task(in_scope(self.name, self._close_cluster()))

    # -- properties ---------------------------------------------------------------------------

    @property
    def scheduler_address(self) -> str:
        """Where workers and clients connect (known once the scheduler has started)."""
        return self.scheduler.address or ""

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL (with the token when it needs one), or None without a dashboard."""
        return self.scheduler.dashboard_link

    @property
    def workers(self) -> dict:
        """``{address: {name, nthreads, memory_limit, ...}}`` of connected workers."""
        if self.asynchronous:          # a property cannot be awaited: the latest known view
            return {w.address: {"name": w.name, "nthreads": w.nthreads,
                                "memory_limit": w.memory_limit, "status": w.status}
                    for w in self.scheduler.workers().values()}
        return self.scheduler_info()["workers"]

    def scheduler_info(self) -> dict:
        """What ``Client.scheduler_info()`` returns."""
        return self._sync(self.scheduler.scheduler_info(), 30.0)

    # -- scaling ------------------------------------------------------------------------------

    def new_job(self, name: str) -> Job:
        """A new, not yet started Job of this cluster (each kind of cluster defines it).

        Parameters
        ----------
        name : str
            The job's name, unique in the cluster.
        """
        raise NotImplementedError

    def _jobs_for(self, n: int | None = None, jobs: int | None = None,
                  cores: int | None = None, memory: int | str | None = None) -> int:
        if jobs is not None:
            return int(jobs)
        if n is not None:
            return -(-int(n) // self.workers_per_job)
        raise TypeError("scale() needs n (workers) or jobs=")

    def scale(self, n: int | None = None, jobs: int | None = None, cores: int | None = None,
              memory: int | str | None = None, wait: bool = True):
        """Ask for *n* workers (or *jobs* jobs, or enough for *cores*/*memory*).

        A manual scale() turns adaptive scaling off: the size you ask for is the size you get.
        """
        self._stop_adaptive("scale() was called")
        target = self._jobs_for(n, jobs, cores, memory)
        return self._sync(self._scale_to(target, wait=wait))

    def live_jobs(self) -> list[Job]:
        """Jobs starting or running that the cluster has not asked to stop."""
        return [j for j in self.jobs.values() if j.state not in ("closed", "closing")]

    async def _add_jobs(self, count: int):
        await self._scale_to(len(self.live_jobs()) + count, wait=False)

    def _bound(self, workers, jobs, cores, memory, upper: bool):
        """One adaptive bound in jobs from bounds in workers, jobs, cores or memory (None: no
        bound); several are combined as dask's are: the tightest wins. Workers round up to
        whole jobs; cores and memory (per job: threads_per_job, memory_per_job) round up for
        a minimum and down for a maximum, as dask-jobqueue's do."""
        from .. import config

        bounds = []
        if jobs is not None:
            bounds.append(int(jobs))
        if workers is not None:
            bounds.append(-(-int(workers) // self.workers_per_job))
        for amount, per_job, what in ((cores, self.threads_per_job, "cores"),
                                      (memory, self.memory_per_job, "memory")):
            if amount is None:
                continue
            if not per_job:
                raise TypeError(f"adapt(): {self.name} does not know the {what} of a job; "
                                "give bounds in workers or jobs")
            if what == "memory":
                amount = config.parse_bytes(amount)
            bounds.append(amount // per_job if upper else -(-amount // per_job))
        if not bounds:
            return None
        return min(bounds) if upper else max(bounds)

    def adapt(self, minimum: int | None = None, maximum: int | None = None,
              minimum_jobs: int | None = None, maximum_jobs: int | None = None,
              target_duration: float | str | None = None, wait_count: int | None = None,
              interval: float | str | None = None, *, minimum_cores: int | None = None,
              maximum_cores: int | None = None, minimum_memory: int | str | None = None,
              maximum_memory: int | str | None = None) -> Adaptive:
        """Follow the load between bounds given in workers (minimum/maximum), jobs, cores or
        memory (as dask-jobqueue's ``minimum_cores=``, ``maximum_memory="1TB"``).

        Every ``interval`` the adaptive policy sizes the cluster so that the queued and running
        work would take about ``target_duration``; jobs still pending in the batch queue count
        as capacity; scaling down needs ``wait_count`` agreeing rounds and moves results off
        the workers before their jobs end. ``scale()`` turns it off again.
        """
        from .. import config
        from .adaptive import Adaptive, Policy

        lo = self._bound(minimum, minimum_jobs, minimum_cores, minimum_memory, upper=False)
        hi = self._bound(maximum, maximum_jobs, maximum_cores, maximum_memory, upper=True)
        policy = Policy(
            minimum_jobs=int(lo or 0),
            maximum_jobs=hi if hi is not None else float("inf"),
            target_duration=config.parse_timedelta(
                target_duration or config.get("adaptive.target-duration", "5s")),
            wait_count=int(wait_count or config.get("adaptive.wait-count", 3)),
            max_jobs=getattr(self, "max_jobs", None))
        interval = config.parse_timedelta(interval or config.get("adaptive.interval", "1s"))
        self._stop_adaptive("adapt() was called again")
        self._adaptive = adaptive = Adaptive(self, policy, interval)

        async def start():
            adaptive.start()

        self._sync(start())
        return adaptive

    def _stop_adaptive(self, why):
        adaptive, self._adaptive = self._adaptive, None
        if adaptive is not None:
            with log_scope(self.name):
                logger.info("%s: adaptive scaling off: %s", self.name, why)
            loop_mod.get_loop().call_soon_threadsafe(adaptive.stop)

    async def _scale_to(self, target: int, wait=True):
        live = self.live_jobs()
        if len(live) < target:
            new = self._new_jobs(target - len(live))
            await asyncio.gather(*(j.start() for j in new))
            if wait:
                await self._wait_for_jobs(new)
        elif len(live) > target:
            extra = live[target:]  # the newest jobs go first
            await self.retire_jobs(extra)

    def _new_jobs(self, count: int) -> list:
        """count new jobs named NAME-0, NAME-1, ... in the order made, in ``jobs``, not started."""
        new = []
        for _ in range(count):
            self._job_counter += 1
            job = self.new_job(f"{self.name}-{self._job_counter - 1}")
            self.jobs[job.name] = job
            new.append(job)
        return new

    async def retire_jobs(self, jobs):
        """Scale down gracefully: results held only by these jobs' workers move to other
        workers, then the jobs close.

        Parameters
        ----------
        jobs : list of Job
            Jobs of this cluster (values of ``cluster.jobs``).
        """
        connected = self.scheduler.workers()
        names = [n for j in jobs for n in j.worker_names() if n in connected]
        if names:
            await self.scheduler.retire_workers(names)
        await asyncio.gather(*(self._close_job(j) for j in jobs))

    async def _wait_for_jobs(self, jobs, timeout=60.0):
        def problem():
            if self.status in ("closing", "closed"):
                return f"{self.name} closed while waiting for the workers of its jobs"
            for j in jobs:
                why = j.problem()
                if why:
                    return f"{j.name} failed to start: {why}"
            return None

        await wait_for_workers(self.scheduler, [n for j in jobs for n in j.worker_names()],
                               timeout, problem)

    async def _close_job(self, job):
        job.state = "closing"
        try:
            await job.close()
        finally:
            job.state = "closed"
            self.jobs.pop(job.name, None)

    def wait_for_workers(self, n: int, timeout: float = 60.0):
        """Wait until ``n`` workers are connected (``asynchronous=True``: await it).

        Parameters
        ----------
        n : int
            Number of workers.
        timeout : float, default 60.0
            Seconds to wait before raising TimeoutError.
        """
        async def wait():
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(self.scheduler.workers()) < n:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"{n} workers did not arrive within {timeout:g} s")
                await self.scheduler.wait_for_worker_change(left)

        return self._sync(wait())

    # -- logs, repr, close --------------------------------------------------------------------

    def _all_jobs(self) -> list:
        return list(self.jobs.values()) + list(getattr(self, "_closed_jobs", []))[-100:]

    def _dashboard_jobs(self) -> list:
        """The dashboard's jobs page (registered as the scheduler's jobs_provider)."""
        connected = self.scheduler.workers()
        return [job.info(connected) for job in self._all_jobs()]

    def _dashboard_log(self, name):
        """One job's log for the dashboard (the scheduler's logs_provider); None: no such job."""
        for job in self._all_jobs():
            if job.name == name:
                return job.logs()
        return None

    def get_logs(self) -> dict[str, str]:
        """``{name: text}`` for the scheduler and every job."""
        logs = {"scheduler": self.scheduler.log_text()}
        for job in list(self.jobs.values()) + list(getattr(self, "_closed_jobs", [])):
            logs[job.name] = job.logs()
        return logs

    def close(self, timeout: float = 10.0):
        """Close every job, then the scheduler (``asynchronous=True``: await it).

        Parameters
        ----------
        timeout : float, default 10.0
            Seconds to give the jobs to close.
        """
        return self._sync(self._close_cluster(timeout), timeout + self._close_margin)

    _close_margin = 10.0      # seconds close() allows beyond ``timeout`` (cancel commands)

    async def _close_cluster(self, timeout: float = 10.0) -> None:
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        self._stop_adaptive("the cluster is closing")
        try:
            await self._stop(timeout)
        finally:
            self.status = "closed"
            _clusters.discard(self)
            self._remove_temporary()

    async def _stop(self, timeout: float) -> None:
        """Close the jobs, then the scheduler (subclasses: one cancel command for all jobs)."""
        await asyncio.gather(*(self._close_job(j) for j in list(self.jobs.values())),
                             return_exceptions=True)
        await self.scheduler.close()

    def _remove_temporary(self) -> None:
        """Remove what the cluster made for itself alone (temporary directories)."""

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self._block(self._close_cluster(), 10.0 + self._close_margin)

    def _summary(self):
        workers = self.scheduler.workers().values()
        return (len(workers), sum(w.nthreads for w in workers),
                sum(w.memory_limit for w in workers))

    def __repr__(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        return (f"{type(self).__name__}({self.name!r}, {self.scheduler_address!r}, "
                f"workers={n}, threads={threads}, memory={format_bytes(memory)})")

    def _repr_html_(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        th = "<th style='text-align:left'>"
        rows = "".join(f"<tr>{th}{k}</th><td>{html.escape(str(v))}</td></tr>"
                       for k, v in [("scheduler", self.scheduler_address), ("workers", n),
                                    ("threads", threads), ("memory", format_bytes(memory)),
                                    ("status", self.status)])
        link = html.escape(self.dashboard_link or "")
        if link:
            rows += (f"<tr>{th}dashboard</th>"
                     f"<td><a href='{link}' target='_blank'>{link}</a></td></tr>")
        return (f"<div><b>{type(self).__name__}</b> {html.escape(self.name)}"
                f"<table>{rows}</table></div>")


_clusters: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _close_clusters():
    for cluster in list(_clusters):
        try:
            cluster._block(cluster._close_cluster(5), 5 + cluster._close_margin)
        except Exception:
            pass


# SIGTERM (a batch system or an admin stopping the process) and SIGHUP (the ssh session to the
# login node dropped) clean up like Ctrl-C: the process exits through atexit, which closes every
# cluster (jobs cancelled, token and scheduler files removed). Only signals whose handler is
# still the default are taken over: a program (or `jobqueue submit`) with its own keeps it.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_stopping: list = []


def _on_stop_signal(signum, frame):
    if _stopping:
        return                      # already on the way out: let the cleanup finish
    _stopping.append(signum)
    logger.warning("got %s: closing %d cluster(s), then exiting", signal.Signals(signum).name,
                   len(_clusters))
    raise SystemExit(128 + signum)


def _handle_stop_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, _on_stop_signal)


async def _ready(value):
    return value


def remove_tree(path: str | None) -> None:
    """Remove a directory the cluster made (its temporary logs and scratch space)."""
    import shutil

    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)

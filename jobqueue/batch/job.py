"""BatchJob and JobQueueCluster: render a job script, submit it, poll every job, cancel.

A cluster submits identical jobs as ONE array where its batch system has arrays, asks about ALL
its jobs with ONE status command per poll interval, and cancels with ONE command. Each array task
is a :class:`BatchJob` of its own, with a state, a reason, its workers and its output file.

Scaling never waits for workers (a job may pend for hours): ``scale(jobs=N)`` submits and returns,
``wait_for_workers(n)`` waits, and fails early, with each job's state, reason and log tail, once
the jobs that are left cannot bring n workers.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import tempfile
import time

from .. import config
from ..deploy.cluster import Cluster, Job, _clusters
from . import script as script_mod
from .network import interface_address, public_address
from .runner import BatchCommandError, CommandRunner
from .status import JobState, JobStatus
from .system import BatchSystem

logger = logging.getLogger("jobqueue.batch")

LOG_TAIL_LINES = 20
GONE_GRACE = 30.0        # seconds to wait for an accounting record of a job that left the queue
MAX_BACKOFF = 60.0       # longest pause between status polls while they fail


class BatchJob(Job):
    """One batch job, or one task of an array job, as the cluster last saw it.

    ``job_id`` (``43``, ``43_2``, ``9.3``), ``state`` (a :class:`JobState`), ``reason`` (the batch
    system's, e.g. ``Resources``), ``stale`` (the last status poll failed, so this may be old),
    ``workers`` (names of its workers connected now).
    """

    def __init__(self, cluster, job_id: str):
        self.job_id = job_id
        super().__init__(cluster, f"{cluster.job_name}-{cluster.system.worker_id(job_id)}")
        self.state = JobState.PENDING
        self.reason = "submitted"
        self.native = ""
        self.stale = False
        self.raw_id = ""
        self.submitted = time.time()
        self.started = None          # when it was first seen running (time.time())
        self.workers: set = set()
        self.ever_connected: set = set()
        self.cancel_requested = False
        self.gone = False
        self.stuck = False           # failed but still in the queue (Grid Engine's Eqw)
        self.missing_since = None
        self.reported = False

    @property
    def done(self) -> bool:
        """The job has ended (or left the queue): it will bring no more workers."""
        return self.state.terminal or self.gone

    @property
    def ends_at(self):
        """When the batch system will end it (start + walltime), if known: adaptive scaling
        replaces jobs before that."""
        walltime = self.cluster.settings.get("walltime")
        return self.started + walltime if self.started and walltime else None

    def worker_names(self) -> list:
        n = self.cluster.processes
        return [self.name] if n == 1 else [f"{self.name}-{i}" for i in range(n)]

    def update(self, status: JobStatus):
        self.stale = False
        self.missing_since = None
        self.state, self.reason, self.native = status.state, status.reason, status.native
        self.stuck = status.cancel
        if self.state is JobState.RUNNING and self.started is None:
            self.started = time.time()
        if status.raw_id and status.state is not JobState.PENDING:
            self.raw_id = status.raw_id

    def log_paths(self) -> list:
        c = self.cluster
        return c.system.log_paths(c.log_directory, c.job_name, self.job_id, self.raw_id)

    def logs(self) -> str:
        parts = []
        for path in self.log_paths():
            try:
                with open(path, errors="replace") as f:
                    parts.append(f.read())
            except OSError:
                continue
        return "\n".join(parts)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the job's output file(s), each under its path."""
        out, empty = [], []
        for path in self.log_paths():
            try:
                with open(path, errors="replace") as f:
                    tail = f.read().rstrip("\n").splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                out.append(f"last {len(tail)} lines of {path}:\n    " + "\n    ".join(tail))
            else:
                empty.append(path)
        if out:
            return "\n".join(out)
        if empty:
            return f"its output file {', '.join(empty)} is empty"
        return f"it has no output file ({', '.join(self.log_paths())})"

    def summary(self) -> str:
        """'job 43_2 failed (NonZeroExitCode)'."""
        return f"job {self.job_id} {self.state}" + (f" ({self.reason})" if self.reason else "")

    def describe(self) -> str:
        """The summary and the log tail."""
        return f"{self.summary()}; {self.log_tail()}"

    async def start(self):
        raise NotImplementedError("batch jobs are submitted by their cluster (scale)")

    async def close(self):
        await self.cluster._cancel([self])

    def __repr__(self):
        stale = " (stale)" if self.stale else ""
        reason = f" {self.reason!r}" if self.reason else ""
        return (f"<BatchJob {self.job_id} {self.state}{stale}{reason} "
                f"workers={len(self.workers)}/{self.cluster.processes}>")


def _write_token_file(name: str, token: str) -> str:
    """~/.jobqueue/NAME.token, mode 0600 in a 0700 directory.

    Why a file: the token must reach the job without appearing on a command line (ps shows those
    to every user) or in the job script (batch systems keep scripts and show them, e.g. scontrol
    write batch_script), and not in the job's environment given at submission, which qstat -f
    (PBS Variable_List) and qstat -j (Grid Engine env_list) show to other users. The home
    directory is shared with the compute nodes on HPC systems; the script reads the file.
    """
    directory = os.path.join(os.path.expanduser("~"), ".jobqueue")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{name}.token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    os.chmod(path, 0o600)
    return path


class JobQueueCluster(Cluster):
    """A cluster whose workers run in batch jobs. Use SLURMCluster, PBSCluster or SGECluster.

    Settings come from the config section of the batch system (see ``jobqueue.yaml``) and are
    overridden by keyword arguments: cores, memory, processes, queue, account (alias project),
    walltime, job_name, job_extra_directives, job_directives_skip, job_script_prologue,
    worker_extra_args, interface, local_directory, log_directory, python, shebang,
    death_timeout, submit_command_extra, cancel_command_extra, template, job_array,
    poll_interval, max_jobs. ``profile="name"`` (or ``config_name="name"``) applies a named
    set of overrides first.
    Everything is checked here: a wrong name or value raises ConfigError saying where it came
    from and what is allowed.
    """

    system: BatchSystem = None
    command_timeout = 60.0

    def __init__(self, *, profile=None, name=None, config_name=None, **settings):
        if self.system is None:
            raise TypeError("JobQueueCluster is a base class: use SLURMCluster, PBSCluster or "
                            "SGECluster")
        if config_name is not None:                  # dask-jobqueue's name for a profile
            if profile not in (None, config_name):
                raise TypeError("give profile or config_name (two names for one thing), "
                                "not both")
            profile = config_name
        self.kind = self.system.name
        self.settings = script_mod.settings(self.system.name, settings, profile)
        s = self.settings
        self.processes, self.threads = script_mod.split_cores(s["cores"], s.get("processes"))
        self.workers_per_job = self.processes
        self.threads_per_job = self.processes * self.threads
        self.max_jobs = s.get("max_jobs")
        self.job_name = s["job_name"]
        self.log_directory = os.path.abspath(s.get("log_directory") or os.getcwd())
        self.python = s.get("python") or sys.executable
        self.death_timeout = s.get("death_timeout") or config.get("worker.death-timeout")
        self.poll_interval = s["poll_interval"]
        self.runner = CommandRunner(timeout=self.command_timeout)
        self.token_file = None
        self._poller = None
        self._poll_failures = 0
        self._unknown_codes: set = set()
        super().__init__(host=self._scheduler_host(), name=name,
                         scheduler_port=config.get("scheduler.port", 0))
        try:
            self.token_file = _write_token_file(self.name, self.token)
            os.makedirs(self.log_directory, exist_ok=True)
            self._sync(self._start_poller())
        except BaseException:
            self.close()
            raise

    # -- settings -------------------------------------------------------------------------------

    def _scheduler_host(self) -> str:
        # The scheduler listens on the address the compute nodes reach this host by: the
        # interface's (interface=ib0) or that of the default route. It is also what it tells
        # workers and clients to connect to.
        interface = self.settings.get("interface")
        if not interface:
            return public_address()
        try:
            return interface_address(interface)
        except ValueError as e:
            raise config.ConfigError(f"{self.system.name}.interface: {e}") from None

    # -- the job script -------------------------------------------------------------------------

    def _worker_environment(self) -> dict:
        security = getattr(self.scheduler, "security", None)
        return security.env() if security is not None else {}

    def job_script(self) -> str:
        """The script every job of this cluster is submitted with, exactly."""
        ctx = script_mod.context(
            self.settings, scheduler_address=self.scheduler_address,
            token_file=self.token_file or os.path.join("~", ".jobqueue", f"{self.name}.token"),
            python=self.python, log_directory=self.log_directory,
            death_timeout=self.death_timeout, environment=self._worker_environment())
        return script_mod.render(self.settings.get("template") or self.system.template, ctx)

    # -- scaling --------------------------------------------------------------------------------

    def _jobs_for(self, n=None, jobs=None, cores=None, memory=None) -> int:
        if cores is not None:
            return math.ceil(cores / self.settings["cores"])
        if memory is not None:
            return math.ceil(config.parse_bytes(memory) / self.settings["memory"])
        return super()._jobs_for(n, jobs)

    def scale(self, n=None, jobs=None, cores=None, memory=None, wait=False):
        """Have *jobs* jobs queued or running (or enough for *n* workers, *cores*, *memory*).

        Returns once the jobs are submitted or cancelled; ``wait=True`` then waits for their
        workers (see wait_for_workers). It turns adaptive scaling off."""
        self._stop_adaptive("scale() was called")
        target = self._jobs_for(n, jobs, cores, memory)
        self._sync(self._scale_to(target))
        if wait:
            self.wait_for_workers(target * self.processes)

    def live_jobs(self) -> list:
        """Jobs queued or running that the cluster has not cancelled."""
        return [j for j in list(self.jobs.values()) if not j.done and not j.cancel_requested]

    async def _scale_to(self, target: int, wait=False):
        max_jobs = self.settings.get("max_jobs")
        if max_jobs is not None and target > max_jobs:
            logger.info("%s: %d jobs asked for, %s.max-jobs is %d", self.name, target,
                        self.system.name, max_jobs)
            target = max_jobs
        live = self.live_jobs()
        if len(live) < target:
            await self._submit(target - len(live))
        elif len(live) > target:
            await self.retire_jobs(self._removal_order(live)[:len(live) - target])

    async def retire_jobs(self, jobs):
        """Scale down gracefully: results that only these jobs' workers hold move to other
        workers, then the jobs are cancelled with one command (they stay in ``jobs``)."""
        connected = self.scheduler.state.names
        names = [n for j in jobs for n in j.worker_names() if n in connected]
        if names:
            await self.scheduler.retire_workers(names)
        await self._cancel(jobs)

    @staticmethod
    def _removal_order(jobs) -> list:
        """Jobs without workers first (pending before running), newest first."""
        return sorted(jobs, key=lambda j: (len(j.workers), j.state is not JobState.PENDING,
                                           -j.submitted))

    async def _submit(self, count: int) -> list:
        """Submit count jobs: one array, or one job at a time. Returns the new BatchJobs."""
        text = self.job_script()
        array = count > 1 and self.settings["job_array"] and self.system.supports_arrays
        sizes = [count] if array else [None] * count
        extra = self.settings.get("submit_command_extra") or []
        new = []
        with tempfile.TemporaryDirectory(prefix="jobqueue-submit-") as directory:
            path = os.path.join(directory, self.system.script_name(self.job_name))
            with open(path, "w") as f:
                f.write(text)
            for size in sizes:
                argv = self.system.submit_argv(path, size, extra)
                result = await self.runner.run(argv,
                                               cwd=self.system.submit_cwd(self.log_directory))
                try:
                    base = self.system.parse_submit(result.stdout)
                except ValueError as e:
                    raise BatchCommandError(argv, result.returncode, result.stdout, result.stderr,
                                            problem=f"gave no job id: {e}") from None
                ids = self.system.array_ids(base, size) if size else [base]
                for job_id in ids:
                    self.jobs[job_id] = BatchJob(self, job_id)
                    new.append(self.jobs[job_id])
                logger.info("%s: submitted %s", self.name,
                            f"array job {base} ({size} tasks)" if size else f"job {base}")
        return new

    async def _cancel(self, jobs, ended_too=False) -> None:
        """Cancel jobs with one command; ids that had already ended are not an error."""
        jobs = [j for j in jobs if ended_too or not j.done]
        if not jobs:
            return
        for job in jobs:
            job.cancel_requested = True
        argv = self.system.cancel_argv([j.job_id for j in jobs],
                                       self.settings.get("cancel_command_extra") or [])
        result = await self.runner.run(argv, check=False)
        if not self.system.cancel_ok(result.returncode, result.stdout, result.stderr):
            raise BatchCommandError(argv, result.returncode, result.stdout, result.stderr)
        for job in jobs:
            job.stuck = False
        logger.info("%s: cancelled %s", self.name, " ".join(j.job_id for j in jobs))

    # -- polling --------------------------------------------------------------------------------

    async def _start_poller(self):
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    async def _poll_loop(self):
        while True:
            try:
                ok = await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: polling the job states failed", self.name)
                ok = False
            self._poll_failures = 0 if ok else self._poll_failures + 1
            delay = self.poll_interval * 2 ** min(self._poll_failures, 10)
            await asyncio.sleep(min(delay, max(MAX_BACKOFF, self.poll_interval)))

    async def _poll_once(self) -> bool:
        """One status command for all live jobs; False if it failed (states kept, marked stale)."""
        self._track_workers()
        live = [j for j in list(self.jobs.values()) if not j.done]
        if live:
            argv = self.system.status_argv([j.job_id for j in live])
            try:
                result = await self.runner.run(argv, check=False)
                if not self.system.status_ok(result.returncode, result.stderr):
                    raise BatchCommandError(argv, result.returncode, result.stdout, result.stderr)
                statuses = self.system.parse_status(result.stdout)
            except (BatchCommandError, ValueError) as e:
                self._mark_stale(live, e)
                return False
            if self._poll_failures:
                logger.info("%s: job states are current again", self.name)
            await self._apply(live, statuses)
        self._track_workers()
        await self._after_poll()
        return True

    def _mark_stale(self, live, error):
        for job in live:
            job.stale = True
        if self._poll_failures == 0:
            logger.warning("%s: could not get the states of its jobs; keeping the last known "
                           "ones, marked stale, and retrying: %s", self.name, error)

    async def _apply(self, live, statuses: dict):
        now = time.monotonic()
        gone = []
        for job in live:
            status = statuses.get(self.system.status_key(job.job_id))
            if status is not None:
                job.update(status)
                if status.state is JobState.UNKNOWN and status.native not in self._unknown_codes:
                    self._unknown_codes.add(status.native)
                    logger.warning("%s: job %s: %s", self.name, job.job_id, status.reason)
            elif job.missing_since is None:
                job.stale = False
                job.missing_since = now       # not listed: once may be a race with submission
            else:
                gone.append(job)
        if gone:
            await self._resolve_gone(gone, now)

    async def _resolve_gone(self, gone, now):
        """Jobs that left the status output: ask accounting how they ended, if it can say."""
        records = {}
        queries = {tuple(argv) for argv in (self.system.accounting_argv(j.job_id) for j in gone)
                   if argv}
        for argv in sorted(queries):
            try:
                result = await self.runner.run(argv, check=False)
                records.update(self.system.parse_accounting(result.stdout))
            except BatchCommandError as e:
                logger.debug("%s: %s", self.name, e)
        for job in gone:
            record = records.get(job.job_id)
            if record is not None:
                job.update(record)
            elif job.cancel_requested:
                job.update(JobStatus(JobState.CANCELLED, "cancelled by this cluster"))
            elif (not self.system.accounting_argv(job.job_id)
                  or now - job.missing_since > GONE_GRACE):
                job.update(JobStatus(JobState.UNKNOWN, f"left the queue (no longer listed by "
                                     f"{self.system.status_command})"))
                job.gone = True
            else:
                continue                      # the accounting record may not be written yet
            job.missing_since = None

    def _track_workers(self):
        """Which of each job's workers are connected; a connected worker means a running job."""
        names = self.scheduler.state.names
        for job in list(self.jobs.values()):
            if job.done and not job.workers:
                continue
            job.workers = {n for n in job.worker_names() if n in names}
            job.ever_connected |= job.workers
            if job.workers and job.state is JobState.PENDING:
                job.state, job.reason = JobState.RUNNING, ""
                job.started = job.started or time.time()

    async def _after_poll(self):
        """Cancel jobs stuck in an error state; report ended jobs; close their workers."""
        stuck = [j for j in list(self.jobs.values()) if j.stuck and not j.cancel_requested]
        if stuck:
            await self._remove_stuck(stuck)
        for job in list(self.jobs.values()):
            if job.done and not job.reported:
                self._report(job)
            if job.done and job.workers:
                self._close_workers(job)

    async def _remove_stuck(self, stuck):
        """Jobs that failed but stay in the queue (Grid Engine's Eqw): say why, then cancel."""
        argv = self.system.explain_argv([j.job_id for j in stuck])
        if argv:
            try:
                result = await self.runner.run(argv, check=False)
                why = self.system.parse_explain(result.stdout)
            except BatchCommandError:
                why = {}
            for job in stuck:
                reason = why.get(job.job_id) or why.get(job.job_id.split(".")[0])
                if reason:
                    job.reason = reason
        for job in stuck:
            logger.warning("%s: %s; cancelling it, or it would stay in the queue", self.name,
                           job.summary())
        try:
            await self._cancel(stuck, ended_too=True)
        except BatchCommandError as e:
            logger.warning("%s: could not remove failed jobs: %s", self.name, e)
        for job in stuck:
            job.reported = True

    def _report(self, job: BatchJob):
        job.reported = True
        if job.state is JobState.CANCELLED and not job.cancel_requested and not job.reason:
            job.reason = f"not by this cluster (e.g. {self.system.cancel_command})"
        if job.cancel_requested:
            logger.info("%s: job %s %s", self.name, job.job_id, job.state)
        elif not job.ever_connected:
            logger.warning("%s: %s, before any of its workers connected to %s; %s", self.name,
                           job.summary(), self.scheduler_address, job.log_tail())
        elif job.state is JobState.FINISHED:
            logger.info("%s: job %s finished (%s)", self.name, job.job_id, job.reason)
        else:
            logger.warning("%s: %s; its workers are gone", self.name, job.summary())

    def _close_workers(self, job: BatchJob):
        """Ask the workers of a job that has ended to leave (their processes should be gone)."""
        for name in job.workers:
            ws = self.scheduler.state.names.get(name)
            stream = self.scheduler.worker_streams.get(ws.address) if ws else None
            if stream is not None:
                stream.send({"op": "close", "reason": f"its job {job.job_id} has ended"})

    # -- waiting, reporting ---------------------------------------------------------------------

    def wait_for_workers(self, n: int, timeout: float | None = None):
        """Wait until n workers are connected. Raises RuntimeError (with each ended job's id,
        state, reason and log tail) as soon as the jobs left cannot bring n workers, and
        TimeoutError after timeout seconds (None: no limit)."""
        self._sync(self._wait_for_workers(n, timeout))

    async def _wait_for_workers(self, n, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.scheduler.state.workers) < n:
            self._track_workers()
            have = len(self.scheduler.state.workers)
            live = self.live_jobs()
            possible = have + sum(self.processes - len(j.workers) for j in live)
            ended = [j for j in list(self.jobs.values()) if j.done and not j.ever_connected
                     and not (j.cancel_requested and j.state is JobState.CANCELLED)]
            if possible < n and all(j.reported for j in ended):
                details = "\n".join(j.describe() for j in ended[-5:])
                raise RuntimeError(f"{self.name}: waiting for {n} workers, {have} connected, and "
                                   f"the jobs left can bring at most {possible}: "
                                   f"{len(ended)} jobs ended without workers.\n{details}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {have} of {n} workers connected within "
                                   f"{timeout:g} s; jobs: {self._job_counts()}")
            await asyncio.sleep(0.05)
        self._track_workers()

    def _job_counts(self) -> str:
        counts = {}
        for job in list(self.jobs.values()):
            counts[str(job.state)] = counts.get(str(job.state), 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"

    def __repr__(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        live = self.live_jobs()
        pending = sum(j.state is JobState.PENDING for j in live)
        running = sum(j.state is JobState.RUNNING for j in live)
        return (f"{type(self).__name__}({self.name!r}, {self.scheduler_address!r}, "
                f"workers={n}, threads={threads}, memory={format_bytes(memory)}, "
                f"jobs: {pending} pending, {running} running)")

    # -- closing --------------------------------------------------------------------------------

    def close(self, timeout=10.0):
        """Cancel every job of the cluster (one command), then stop the scheduler."""
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        self._stop_adaptive("the cluster is closing")

        async def close():
            if self._poller is not None:
                self._poller.cancel()
            # again for jobs cancelled before, in case that was interrupted: cancelling twice
            # is harmless, a job left in the queue is not
            ours = [j for j in list(self.jobs.values()) if not j.done or j.stuck]
            try:
                await self._cancel(ours, ended_too=True)
            except BatchCommandError as e:
                logger.error("%s: could not cancel its jobs %s; cancel them yourself: %s",
                             self.name, " ".join(j.job_id for j in ours), e)
            await self.scheduler.close()
            for job in ours:
                job.workers = set()
                if job.cancel_requested:
                    job.state, job.reason = JobState.CANCELLED, "cancelled by close()"

        try:
            self._sync(close(), timeout + self.command_timeout)
        finally:
            if self.token_file:
                try:
                    os.unlink(self.token_file)
                except OSError:
                    pass
            self.status = "closed"
            _clusters.discard(self)


"""JobQueueCluster: render a job script, submit it, poll every job, cancel.

A cluster submits identical jobs as ONE array where its batch system has arrays, asks about ALL
its jobs with ONE status command per poll interval, and cancels with ONE command. Each array task
is a :class:`~jobqueue.batch.batchjob.BatchJob` of its own, with a state, a reason, its workers
and its output file.

Scaling never waits for workers (a job may pend for hours): ``scale(jobs=N)`` submits and returns,
``wait_for_workers(n)`` waits, and fails early, with each job's state, reason and log tail, once
the jobs that are left cannot bring n workers.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
import tempfile
import time

from .. import config, node, params
from ..core import notice
from ..deploy.cluster import Cluster, remove_tree
from ..deploy.watched import Watched
from . import owned
from . import script as script_mod
from .batchjob import BatchJob
from .runner import BatchCommandError, CommandRunner
from .status import JobState, JobStatus, Pending, Verdict
from .system import BatchSystem

logger = logging.getLogger("jobqueue.batch")

GONE_GRACE = 30.0        # seconds to wait for an accounting record of a job that left the queue


def scheduler_host(system_name: str, settings: dict) -> str:
    """The address the scheduler listens on and tells workers and clients to connect to: the one
    the compute nodes reach this host by, i.e. scheduler_options' host or interface, else the
    cluster's interface's (interface=ib0), else that of the default route."""
    from ..deploy import scheduler_options as options_mod

    what = f"{system_name}.scheduler-options"
    try:
        options = options_mod.check(settings.get("scheduler_options"), what)
        return options_mod.listen_host(options, settings.get("interface"), node.public_address(),
                                       system_name, node.interface_address) or ""
    except ValueError as e:
        raise config.ConfigError(str(e)) from None


async def submit_script(runner, system: BatchSystem, text: str, settings: dict,
                        log_directory: str, sizes) -> list:
    """Submit the job script text once per size in sizes (None: one job; N: an array of N
    tasks); returns ``[(job id, [task ids])]``. A submit command that prints no job id raises
    BatchCommandError with what it printed."""
    extra = settings.get("submit_command_extra") or []
    out = []
    with tempfile.TemporaryDirectory(prefix="jobqueue-submit-") as directory:
        path = os.path.join(directory, system.script_name(settings["job_name"]))
        with open(path, "w") as f:
            f.write(text)
        for size in sizes:
            argv = system.submit_argv(path, size, extra, log_directory)
            result = await runner.run(argv, cwd=system.submit_cwd(log_directory))
            try:
                base = system.parse_submit(result.stdout)
            except ValueError as e:
                raise BatchCommandError(argv, result.returncode, result.stdout, result.stderr,
                                        problem=f"gave no job id: {e}") from None
            out.append((base, system.array_ids(base, size) if size else [base]))
    return out


def _write_token_file(name: str, token: str, temp_directory=None) -> str:
    """~/.jobqueue/NAME.HOST.PID.token, a private file (:func:`jobqueue.node.write_private`)
    named after its owner, so that the next cluster removes it if this process dies without
    cleaning up (see owned.py); with a shared_temp_directory, in a private directory there.

    Why a file: the token must reach the job without appearing on a command line (ps shows those
    to every user) or in the job script (batch systems keep scripts and show them, e.g. scontrol
    write batch_script), and not in the job's environment given at submission, which qstat -f
    (PBS Variable_List) and qstat -j (Grid Engine env_list) show to other users. The home
    directory is shared with the compute nodes on HPC systems; the script reads the file.
    """
    owned.remove_stale()
    file_name = owned.owned_name(name, ".token")
    if temp_directory:
        return node.write_private(os.path.join(temp_directory, file_name), token)
    return node.write_private(node.private_path(file_name), token)


@params.document()
class JobQueueCluster(Watched, Cluster):
    """A cluster whose workers run in batch jobs: the base of SLURMCluster, PBSCluster and
    SGECluster, which list its settings (the keys of their config section).

    Each job runs ``processes`` worker processes on one node, ``cores / processes`` threads
    each, and shares ``memory`` among them. ``profile="name"`` (or ``config_name="name"``)
    applies a named set of overrides first, and dask-jobqueue's old setting names are read with
    a FutureWarning. Everything is checked here: a wrong name or value raises ConfigError
    saying where it came from and what is allowed.

    Parameters
    ----------
    scheduler_file : str, optional
        The file (JSON with address and token, mode 0600) of a scheduler that runs elsewhere
        (``jobqueue scheduler --scheduler-file``, ``jobqueue submit --detach``): the cluster
        starts no scheduler of its own, its jobs' workers connect to that one, and ``scale``,
        ``adapt`` and ``close`` act through it (close leaves it running). Note that a
        LocalCluster's ``scheduler_file`` is where it writes its own.
    **settings
        Keys of the batch system's config section, with underscores (``cores=8``): see
        SLURMCluster, PBSCluster and SGECluster.
    """

    system: BatchSystem = None
    command_timeout = 60.0
    submit_errors = (BatchCommandError,)
    _logger = logger

    def __init__(self, *, profile=None, name=None, config_name=None, n_workers=None,
                 scheduler_file=None, asynchronous=False, **settings):
        if self.system is None:
            raise TypeError("JobQueueCluster is a base class: use SLURMCluster, PBSCluster or "
                            "SGECluster")
        if config_name is not None:                  # dask-jobqueue's name for a profile
            if profile not in (None, config_name):
                raise TypeError("give profile or config_name (two names for one thing), "
                                "not both")
            profile = config_name
        self.kind = self.system.name
        if name is not None and settings.get("job_name") is None and \
                script_mod.is_job_name(name):
            settings = {**settings, "job_name": name}    # as dask-jobqueue's name= does
        for key in ("host", "dashboard_address"):     # as dask-jobqueue says
            if settings.get(key) is not None:
                raise ValueError(f"{type(self).__name__}: pass {key!r} through "
                                 f"'scheduler_options': scheduler_options={{{key!r}: "
                                 f"{settings[key]!r}}}")
        self.settings = script_mod.settings(self.system.name, settings, profile)
        s = self.settings
        if settings.get("scheduler_options") is not None:   # replaces the config's, as in
            s["scheduler_options"] = dict(settings["scheduler_options"])   # dask-jobqueue
        self.processes, self.threads = script_mod.split_job(s)
        # what each worker declares (worker_extra_args --resources): adapt() adds jobs for
        # tasks that request resources only if these cover them
        self.worker_resources = node.parse_worker_options(
            s.get("worker_extra_args") or ()).get("resources") or {}
        self.workers_per_job = self.processes
        self.threads_per_job = self.processes * self.threads
        self.memory_per_job = s["memory"]
        self.max_jobs = s.get("max_jobs")
        self.job_name = s["job_name"]
        self.poll_interval = s["poll_interval"]
        self.runner = CommandRunner(timeout=self.command_timeout)
        self.token_file = None
        self._scheduler_closed = False
        self._clock = time.monotonic         # tests put a clock of their own here
        self._unknown_codes: set = set()
        self._verified: set = set()          # submissions asked whether they can ever run
        self.max_jobs_key = f"{self.system.name}.max-jobs"
        self._init_watched()
        lifetime = script_mod.worker_lifetime(s.get("walltime"))
        self._retire_after = (float(lifetime["lifetime"]) - float(lifetime["lifetime_stagger"])
                              if lifetime["lifetime"] else None)
        self._said: set = set()              # pending reasons already reported
        self._n_workers = n_workers
        name = name or f"{self.kind}-{secrets.token_hex(3)}"
        defaults = script_mod.job_defaults(s, name)
        self.log_directory = defaults["log_directory"]
        self.python = defaults["python"]
        self.death_timeout = defaults["death_timeout"]
        self._make_log_directory(settings, profile)
        self.scheduler_file, token = _scheduler_file(scheduler_file, self.system.name)
        shared = s.get("shared_temp_directory")
        self.temp_directory = node.private_temp_directory(shared) if shared else None
        try:
            super().__init__(host=None, name=name, scheduler_port=config.get("scheduler.port", 0),
                             token=token, scheduler_options=s.get("scheduler_options"),
                             interface=s.get("interface"), asynchronous=asynchronous,
                             temp_directory=self.temp_directory)
        except BaseException:
            remove_tree(self.temp_directory)
            raise

    def _new_scheduler(self, **options):
        """The cluster's own scheduler, or (``scheduler_file=``) one that runs elsewhere, reached
        through the scheduler API as a client: this cluster only submits jobs for it."""
        if self.scheduler_file is None:
            return super()._new_scheduler(**options)
        from ..core.scheduler_api import Remote

        address, _ = node.read_scheduler_file(self.scheduler_file)
        return Remote(self.token, address, name=self.name, expecting=self._expecting_workers,
                      security=node.scheduler_file_security(self.scheduler_file))

    def _expecting_workers(self) -> bool:
        return any(len(j.workers) < self.processes for j in self.live_jobs())

    async def _start(self):
        await super()._start()
        self.token_file = _write_token_file(self.name, self.token, self.temp_directory)
        await self._start_poller()
        if self._n_workers:                        # dask-jobqueue's: workers to start with
            await self._scale_to(self._jobs_for(self._n_workers))

    # -- settings -------------------------------------------------------------------------------

    def _make_log_directory(self, arguments, profile):
        """Create log_directory; if that fails, say which setting and where its value came
        from (the default directory is the user's cache)."""
        path = self.log_directory
        try:
            os.makedirs(path, exist_ok=True)
            if not os.access(path, os.W_OK | os.X_OK):
                raise PermissionError(f"{path} is not writable")
        except OSError as e:
            key = f"{self.system.name}.log-directory"
            where = script_mod.source(self.system.name, "log_directory", arguments, profile)
            if where == "default":
                what = f"the default log directory {path} (under the user's cache directory)"
            else:
                what = f"{where}: {key} {path}"
            raise config.ConfigError(
                f"{what}: cannot create or write it ({e.strerror or e}); the job output files "
                f"go there, so give a writable directory that the compute nodes share, "
                f"e.g. log_directory='~/jobqueue-logs' (or {key} in the config)") from None

    # -- the job script -------------------------------------------------------------------------

    def _worker_environment(self) -> dict:
        security = getattr(self.scheduler, "security", None)
        return security.env() if security is not None else {}

    def job_script(self) -> str:
        """The script every job of this cluster is submitted with, exactly."""
        return script_mod.job_script(
            self.settings, self.system.template, scheduler_address=self.scheduler_address,
            token_file=self.token_file or os.path.join("~", ".jobqueue", f"{self.name}.token"),
            python=self.python, log_directory=self.log_directory,
            death_timeout=self.death_timeout, environment=self._worker_environment())

    @property
    def job_header(self) -> str:
        """The batch-system directives of :meth:`job_script`: its lines after the shebang up
        to the first blank line (dask-jobqueue's ``job_header``)."""
        lines = self.job_script().splitlines()[1:]
        end = lines.index("") if "" in lines else len(lines)
        return "\n".join(lines[:end])

    # -- scaling --------------------------------------------------------------------------------

    def _jobs_for(self, n=None, jobs=None, cores=None, memory=None) -> int:
        if cores is not None:
            return math.ceil(cores / self.settings["cores"])
        if memory is not None:
            return math.ceil(config.parse_bytes(memory) / self.settings["memory"])
        return super()._jobs_for(n, jobs)

    def scale(self, n=None, jobs=None, cores=None, memory=None, wait=False):
        """Keep *jobs* jobs queued or running (or enough for *n* workers, *cores*, *memory*).

        Returns once the jobs are submitted or cancelled; ``wait=True`` then waits for their
        workers (see wait_for_workers). It turns adaptive scaling off. The number is a target:
        jobs that end (their workers retire before the walltime, a node fails) are replaced,
        before they end when their walltime is known; submissions whose jobs all fail before
        a worker connects are retried ``start_retries`` times in a row, then the cluster gives
        up (``failure`` says why, and wait_for_workers raises it). A job cancelled from outside
        (scancel, qdel) is not replaced: the target goes down by one."""
        self._stop_adaptive("scale() was called")
        target = self._jobs_for(n, jobs, cores, memory)
        return self._sync(self._scale_and_wait(target, wait))

    async def _scale_and_wait(self, target: int, wait: bool):
        await self._scale_to(target)
        if wait:
            await self._wait_for_workers(target * self.processes, None)

    async def retire_jobs(self, jobs):
        """Scale down gracefully: results that only these jobs' workers hold move to other
        workers, then the jobs are cancelled with one command (they stay in ``jobs``)."""
        connected = self.scheduler.workers()
        names = [n for j in jobs for n in j.worker_names() if n in connected]
        if names:
            await self.scheduler.retire_workers(names)
        await self._cancel(jobs)

    def _removal_order(self, jobs) -> list:
        """Jobs without workers first (pending before running), newest first."""
        return sorted(jobs, key=lambda j: (len(j.workers), j.state is not JobState.PENDING,
                                           -j.submitted))

    async def _submit(self, count: int) -> list:
        """Submit count jobs: one array, or one job at a time. Returns the new BatchJobs."""
        array = count > 1 and self.settings["job_array"] and self.system.supports_arrays
        sizes = [count] if array else [None] * count
        new = []
        for base, ids in await submit_script(self.runner, self.system, self.job_script(),
                                             self.settings, self.log_directory, sizes):
            self._submissions += 1
            for job_id in ids:
                self.jobs[job_id] = BatchJob(self, job_id, base, self._submissions - 1)
                new.append(self.jobs[job_id])
            logger.info("%s: submitted %s", self.name,
                        f"array job {base} ({len(ids)} tasks)" if ids != [base] else f"job {base}")
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

    async def _poll_once(self) -> bool:
        """One status command for all live jobs; False if it failed (states kept, marked stale)."""
        self._observe_jobs()
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
            await self._check_pending()
        self._observe_jobs()
        await self._after_poll()
        return True

    def _mark_stale(self, live, error):
        for job in live:
            job.stale = True
        if self._poll_failures == 0:
            notice.warn(logger, "%s: could not get the states of its jobs; keeping the last known "
                        "ones, marked stale, and retrying: %s", self.name, error)

    async def _apply(self, live, statuses: dict):
        now = self._clock()
        gone = []
        for job in live:
            status = statuses.get(self.system.status_key(job.job_id))
            if status is not None:
                job.update(status)
                if status.state is JobState.UNKNOWN and status.native not in self._unknown_codes:
                    self._unknown_codes.add(status.native)
                    notice.warn(logger, "%s: job %s: %s", self.name, job.job_id, status.reason)
            elif job.missing_since is None:
                job.stale = False
                job.missing_since = now       # not listed: once may be a race with submission
            else:
                gone.append(job)
        if gone:
            await self._resolve_gone(gone, now)

    async def _resolve_gone(self, gone, now):
        """Jobs that left the status output: ask accounting how they ended, if it can say."""
        records: dict = {}
        unavailable = ""
        queries = {tuple(argv) for argv in (self.system.accounting_argv(j.job_id) for j in gone)
                   if argv}
        for argv in sorted(queries):
            try:
                result = await self.runner.run(argv, check=False)
                records.update(self.system.parse_accounting(result.stdout))
                unavailable = self.system.accounting_unavailable(
                    result.returncode, result.stderr) or unavailable
            except BatchCommandError as e:
                logger.debug("%s: %s", self.name, e)
        for job in gone:
            record = records.get(job.job_id)
            if record is not None and record.state.terminal:   # else: not written yet
                job.update(record)
            elif job.cancel_requested:
                job.update(JobStatus(JobState.CANCELLED, "cancelled by this cluster"))
            elif (unavailable or not self.system.accounting_argv(job.job_id)
                  or now - job.missing_since > GONE_GRACE):
                job.update(JobStatus(JobState.UNKNOWN, f"left the queue (no longer listed by "
                                     f"{self.system.status_command}"
                                     + (f"; {unavailable})" if unavailable else ")")))
                job.gone = True
            else:
                continue                      # the accounting record may not be written yet
            job.missing_since = None

    async def _check_pending(self):
        """Report a pending job whose reason means it can never start as submitted (and cancel
        it), or that it waits for something that may not come (once per reason)."""
        pending = [j for j in self.live_jobs() if j.state is JobState.PENDING and not j.stale]
        verdicts: dict = {}
        for job in pending:
            verdict = self.system.pending(job.reason)
            verdicts.setdefault(verdict, []).append(job)
        waiting = [j for v, jobs in verdicts.items() if v.kind is Pending.WAIT for j in jobs]
        for submission, verdict in (await self._verify(waiting)).items():
            verdicts[verdict] = [j for j in waiting
                                 if self.system.submission_id(j.job_id) == submission]
        for verdict, jobs in verdicts.items():
            ids = " ".join(j.job_id for j in jobs)
            if verdict.kind is Pending.NEVER:
                await self._refuse(jobs, verdict)
            elif verdict.kind is Pending.BLOCKED and verdict.why not in self._said:
                self._said.add(verdict.why)
                notice.warn(logger, "%s: job %s is pending: %s; %s", self.name, ids, verdict.why,
                            verdict.remedy)

    async def _verify(self, jobs) -> dict:
        """``{submission: NEVER Verdict}`` from asking the batch system, once per submission,
        whether its pending jobs could ever run (Grid Engine: qalter -w v)."""
        out = {}
        for submission in sorted({self.system.submission_id(j.job_id) for j in jobs}
                                 - self._verified):
            self._verified.add(submission)
            argv = self.system.verify_argv(submission)
            if argv is None:
                continue
            try:
                result = await self.runner.run(argv, check=False)
            except BatchCommandError as e:
                logger.debug("%s: %s", self.name, e)
                continue
            verdict = self.system.parse_verify(result.returncode, result.stdout, result.stderr)
            if verdict is not None:
                out[submission] = verdict
        return out

    async def _refuse(self, jobs, verdict: Verdict):
        """Jobs that can never start as submitted: failed, said at once, cancelled."""
        for job in jobs:
            job.state, job.reason = JobState.FAILED, f"cannot start as submitted: {verdict.why}"
            job.never, job.reported = verdict, True
        ids = " ".join(j.job_id for j in jobs)
        notice.warn(logger, "%s: job %s can never start as submitted: %s; cancelling it. "
                    "To fix: %s", self.name, ids, verdict.why, verdict.remedy)
        try:
            await self._cancel(jobs, ended_too=True)
        except BatchCommandError as e:
            notice.warn(logger, "%s: could not cancel job %s: %s", self.name, ids, e)

    def _connected_names(self):
        """Names of the workers connected to the scheduler now (none once it has closed)."""
        if self._scheduler_closed:
            return ()
        return self.scheduler.workers()

    def _observe_jobs(self):
        """Note which workers of each job are connected (a job whose worker connected is
        running, and has run); reading a job's state or workers does the same for one job."""
        for job in list(self.jobs.values()):
            job._observe()

    async def _after_poll(self):
        """Cancel jobs stuck in an error state; report ended jobs; close their workers."""
        stuck = [j for j in list(self.jobs.values()) if j.stuck and not j.cancel_requested]
        if stuck:
            await self._remove_stuck(stuck)
        for job in list(self.jobs.values()):
            if job.done and not job.reported:
                self._report(job)
            if job.done and job.workers:
                await self._close_workers(job)
        async with self._keeping:
            await self._keep()

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
            notice.warn(logger, "%s: %s; cancelling it, or it would stay in the queue", self.name,
                        job.summary())
        try:
            await self._cancel(stuck, ended_too=True)
        except BatchCommandError as e:
            notice.warn(logger, "%s: could not remove failed jobs: %s", self.name, e)
        for job in stuck:
            job.reported = True

    def _report(self, job: BatchJob):
        job.reported = True
        if job.state is JobState.CANCELLED and not job.cancel_requested and not job.reason:
            job.reason = f"not by this cluster (e.g. {self.system.cancel_command})"
        if job.cancel_requested:
            logger.info("%s: job %s %s", self.name, job.job_id, job.state)
        elif not job.ever_connected:
            notice.warn(logger, "%s: %s, before any of its workers connected to %s; %s", self.name,
                        job.summary(), self.scheduler_address, job.log_tail())
        elif job.state is JobState.FINISHED:
            logger.info("%s: %s", self.name, job.summary())
        else:
            notice.warn(logger, "%s: %s; its workers are gone", self.name, job.summary())

    async def _close_workers(self, job: BatchJob):
        """Ask the workers of a job that has ended to leave (their processes should be gone)."""
        await self.scheduler.close_workers(sorted(job.workers),
                                           f"its job {job.job_id} has ended")

    # -- waiting, reporting ---------------------------------------------------------------------

    def _cannot_bring(self, n: int, have: int) -> str:
        """Why the jobs cannot bring n workers ('': they may)."""
        ended = [j for j in list(self.jobs.values()) if j.done and not j.ever_connected
                 and not (j.cancel_requested and j.state is JobState.CANCELLED)]
        details = "\n".join(j.describe() for j in ended[-5:])
        if self.failure:
            return f"but {self.failure}\n{details}"
        if self._target is not None and self._adaptive is None:
            most = self._target * self.processes
            if n > most:
                return (f"but the cluster keeps {self._target} jobs of {self.processes} "
                        f"workers, {most} at most: scale(jobs=...) up first")
            return ""
        live = self.live_jobs()
        possible = have + sum(self.processes - len(j.workers) for j in live)
        if self._adaptive is not None:       # it may still submit up to its maximum
            room = self._adaptive.policy.maximum_jobs - len(live)
            possible += max(room, 0) * self.processes
        if possible < n and all(j.reported for j in ended):
            return (f"and the jobs left can bring at most {possible}: {len(ended)} jobs ended "
                    f"without workers.\n{details}")
        return ""

    def _job_counts(self) -> str:
        counts = {}
        for job in list(self.jobs.values()):
            counts[str(job.state)] = counts.get(str(job.state), 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"

    def __repr__(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        return (f"{type(self).__name__}({self.name!r}, {self.scheduler_address!r}, "
                f"workers={n}, threads={threads}, memory={format_bytes(memory)}, "
                f"jobs: {self._jobs_text()})")

    def _jobs_text(self) -> str:
        live = self.live_jobs()
        pending = sum(j.state is JobState.PENDING for j in live)
        running = sum(j.state is JobState.RUNNING for j in live)
        return f"{pending} pending, {running} running"

    def _repr_html_(self):
        """The base table, with the jobs and where their output goes."""
        import html

        rows = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in [("jobs", self._jobs_text()),
                                    ("job output", self.log_directory)])
        return super()._repr_html_().replace("</table>", rows + "</table>", 1)

    # -- closing --------------------------------------------------------------------------------

    @property
    def _close_margin(self) -> float:          # type: ignore[override]
        return self.command_timeout

    async def _stop(self, timeout):
        """Cancel every job of the cluster (one command), then stop the scheduler (or, for a
        scheduler elsewhere, leave it)."""
        self._stop_poller()
        # again for jobs cancelled before, in case that was interrupted: cancelling twice
        # is harmless, a job left in the queue is not
        ours = [j for j in list(self.jobs.values()) if not j.done or j.stuck]
        try:
            await self._cancel(ours, ended_too=True)
        except BatchCommandError as e:
            notice.warn(logger, "%s: could not cancel its jobs %s; cancel them yourself: %s",
                        self.name, " ".join(j.job_id for j in ours), e, level=logging.ERROR)
        if self.scheduler_file is not None:      # not ours: its workers from our jobs leave
            await self._close_workers_of(ours)
        await self.scheduler.close()
        self._scheduler_closed = True
        for job in ours:
            if job.cancel_requested:
                job.state, job.reason = JobState.CANCELLED, "cancelled by close()"

    async def _close_workers_of(self, jobs):
        names = [n for j in jobs for n in j.worker_names() if n in self.scheduler.workers()]
        if names:
            try:
                await self.scheduler.close_workers(names, f"{self.name} closed")
            except (OSError, RuntimeError) as e:
                logger.info("%s: could not ask the scheduler to close %s: %s", self.name,
                            names, e)

    def _remove_temporary(self) -> None:
        node.remove_private(self.token_file)
        remove_tree(self.temp_directory)


def _scheduler_file(path, system_name: str) -> tuple:
    """(path, token) of the scheduler file of a scheduler that runs elsewhere (``jobqueue
    scheduler --scheduler-file``, ``jobqueue submit --detach``), or (None, None)."""
    if path is None:
        return None, None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        _, token = node.read_scheduler_file(path)
    except (OSError, ValueError, KeyError) as e:
        raise config.ConfigError(
            f"argument: {system_name} scheduler_file={path!r}: cannot read a scheduler's "
            f"address and token from it ({type(e).__name__}: {e}); give the file a running "
            f"scheduler wrote (jobqueue scheduler --scheduler-file PATH)") from None
    return path, token

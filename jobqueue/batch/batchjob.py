"""BatchJob: one batch job (or one task of an array job) as its cluster last saw it.

Its state comes from the cluster's polls, except that a job with a connected worker is running
whatever the last poll said; its workers are read from the scheduler when asked.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..deploy.cluster import Job
from ..deploy import keep as keep_mod
from .status import JobState, JobStatus

if TYPE_CHECKING:
    from .job import JobQueueCluster

LOG_TAIL_LINES = 20


class BatchJob(Job):
    """One batch job, or one task of an array job, as the cluster last saw it.

    ``job_id`` (``43``, ``43_2``, ``9.3``), ``state`` (a :class:`JobState`), ``reason`` (the batch
    system's, e.g. ``Resources``), ``stale`` (the last status poll failed, so this may be old),
    ``workers`` (names of its workers connected now).
    """

    cluster: JobQueueCluster

    def __init__(self, cluster, job_id: str, submission: str = "", order: int = 0):
        self.job_id = job_id
        self.submission = submission or job_id    # the submit command's id (an array's)
        self.order = order                        # the cluster's submissions, numbered
        super().__init__(cluster, f"{cluster.job_name}-{cluster.system.worker_id(job_id)}")
        self._state = JobState.PENDING
        self.reason = "submitted"
        self.native = ""
        self.stale = False
        self.submitted = time.time()
        self.started: float | None = None    # when it was first seen running (time.time())
        self.ever_connected: set = set()
        self.cancel_requested = False
        self.gone = False
        self.stuck = False           # failed but still in the queue (Grid Engine's Eqw)
        self.missing_since = None
        self.reported = False
        self.never = None            # a Verdict: it can never start as submitted

    @property
    def workers(self) -> set:
        """Names of its workers connected now."""
        self._observe()
        return self._workers

    @property
    def state(self) -> JobState:
        """As the batch system last said, except that a job with a connected worker is running
        whatever the last poll said (the worker may have connected since)."""
        self._observe()
        return self._state

    @state.setter
    def state(self, value: JobState):
        self._state = value

    def _observe(self):
        connected = self.cluster._connected_names()
        self._workers = {n for n in self.worker_names() if n in connected}
        if self._workers:
            self.ever_connected |= self._workers
            if self._state is JobState.PENDING:
                self._state, self.reason = JobState.RUNNING, ""
            self.started = self.started or time.time()

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

    @property
    def replace_at(self):
        """When a replacement should be submitted: shortly (a tenth of the time, at most a
        minute) before its workers begin to retire ahead of the walltime, if they will."""
        retire = self.cluster._retire_after
        if not self.started or not retire:
            return None
        return self.started + retire - min(60.0, retire / 10)

    def view(self) -> keep_mod.JobView:
        """This job as the keep policy sees it."""
        outside = (self.state is JobState.CANCELLED and not self.cancel_requested
                   and "preempt" not in self.reason)
        return keep_mod.JobView(
            self.job_id, self.submission, self.order,
            live=not self.done and not self.cancel_requested,
            ever_connected=bool(self.ever_connected),
            failed_to_start=(self.done and not self.ever_connected
                             and self.state is not JobState.CANCELLED),
            cancelled_outside=outside, never=self.never is not None,
            replace_at=self.replace_at, why=self.summary())

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

    def log_paths(self) -> list:
        c = self.cluster
        return c.system.log_paths(c.log_directory, c.job_name, self.job_id)

    def info(self, connected: dict | None = None) -> dict:
        """The dashboard's row, with the output file's path."""
        return {**super().info(connected), "output": self.log_paths()[0]}

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
        """The summary and the log tail (or, for a job that could never start, the remedy)."""
        if self.never is not None:
            return f"{self.summary()}; {self.never.remedy}"
        return f"{self.summary()}; {self.log_tail()}"

    async def start(self):
        raise NotImplementedError("batch jobs are submitted by their cluster (scale)")

    async def close(self):
        await self.cluster._cancel([self])

    def __repr__(self):
        stale = " (stale)" if self.stale else ""
        reason = f" {self.reason!r}" if self.reason else ""
        return (f"<BatchJob {self.job_id} {self.state}{stale}{reason} "
                f"workers={len(self.workers)}/{self.cluster.processes} "
                f"output={self.log_paths()[0]}>")

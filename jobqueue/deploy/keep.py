"""Keeping ``scale(jobs=N)`` true: a pure policy (the cluster's jobs in, a decision out).

Used by every cluster whose jobs end without being asked to: batch jobs (batch/job.py) and
Kubernetes pods (kubernetes.py, where one create call is a submission).

``scale(jobs=N)`` is a target, not a one-off submission. Jobs end: their workers retire before
the walltime, a node fails, a job is killed, a pod is evicted. After every poll the cluster asks
:func:`decide` how many jobs to submit so that N stay queued or running, counting a job whose
workers will soon retire as gone already (its replacement queues meanwhile, as adaptive scaling
does).

Jobs that keep failing are not resubmitted forever: a *failed submission* is one whose jobs all
ended before any of their workers connected (a bad python path, a module that does not load, a
request the batch system refuses); after ``retries`` of them in a row (a worker connecting from
a later submission starts the count again), or at once for a job that can never start as
submitted (a pod whose image cannot be pulled), the policy gives up and says why. A job
cancelled from outside (``scancel``, ``qdel``, ``kubectl delete pod``) is the user's decision:
it is not replaced, and the target goes down by one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

RETRIES = 3          # failed submissions in a row before giving up


@dataclass(frozen=True)
class JobView:
    """One job as the policy sees it."""

    job_id: str
    submission: str              # the submit command it came from (an array's id)
    order: int                   # submissions are numbered in the order they were made
    live: bool                   # queued or running, and not being cancelled by the cluster
    ever_connected: bool         # a worker of it has connected
    failed_to_start: bool = False  # ended before any worker connected, not cancelled by us
    cancelled_outside: bool = False  # cancelled by someone else (scancel, qdel), not preempted
    never: bool = False          # it can never start as submitted
    replace_at: float | None = None  # when its workers begin to retire (walltime ahead)
    why: str = ""                # its summary ('job 43 failed (NonZeroExitCode)'), for messages


@dataclass(frozen=True)
class Decision:
    submit: int = 0
    target: int = 0              # the target after jobs cancelled from outside
    give_up: str = ""            # why no more jobs will be submitted ('' : keep going)
    reason: str = ""


def failed_submissions(jobs, since: int = 0) -> list:
    """Submissions, oldest first, numbered since or later and made after the last one a worker
    connected from, whose jobs all failed to start."""
    jobs = list(jobs)
    connected = [j.order for j in jobs if j.ever_connected]
    since = max([since - 1, *connected])
    by_submission: dict = {}
    for job in jobs:
        if job.order > since:
            by_submission.setdefault((job.order, job.submission), []).append(job)
    return [submission for (_, submission), group in sorted(by_submission.items())
            if all(j.failed_to_start for j in group)]


def decide(target, jobs, now: float, *, retries: int = RETRIES, max_jobs=None,
           cancelled_before: int = 0, since: int = 0) -> Decision:
    """How many jobs to submit to keep ``target`` queued or running (None: no target, only
    check for failures). ``cancelled_before`` jobs cancelled from outside were already taken
    off the target; failures of submissions numbered below ``since`` (made before the target
    was set) do not count. Pure: no clock (``now`` is given), no I/O."""
    jobs = list(jobs)
    failed = failed_submissions(jobs, since)
    never = [j for j in jobs if j.never and j.submission in failed]
    if never or len(failed) >= retries:
        last = [j for j in jobs if j.submission == failed[-1]]
        why = ("its jobs can never start as submitted" if never else
               f"{len(failed)} submissions in a row ({', '.join(failed)}) failed before any "
               f"worker connected")
        details = "; ".join(j.why for j in (never or last)[-3:] if j.why)
        return Decision(target=target or 0, give_up=f"{why}: {details}" if details else why)
    if target is None:
        return Decision()
    target = max(0, target - (sum(j.cancelled_outside for j in jobs) - cancelled_before))
    live = [j for j in jobs if j.live]
    capacity = [j for j in live if j.replace_at is None or now < j.replace_at]
    room = math.inf if max_jobs is None else max(0, max_jobs - len(live))
    submit = int(max(0, min(target - len(capacity), room)))
    reason = ""
    if submit:
        reason = (f"{target} jobs wanted, {len(capacity)} queued or running"
                  + (f" ({len(live) - len(capacity)} near their walltime not counted)"
                     if len(live) > len(capacity) else ""))
    return Decision(submit=submit, target=target, reason=reason)

"""Adaptive scaling: a pure policy (load in, decision out) and the loop that applies it.

The policy never submits and cancels in loops (dask-jobqueue #498, #190): jobs still pending in
the batch queue count as capacity, scaling down needs ``wait_count`` agreeing rounds, and it
cancels jobs that have not started before it retires working ones, whole jobs at a time. Jobs
close to their walltime do not count as capacity, so their replacements are submitted early.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field, replace

from ..core.scheduler_api import Load

logger = logging.getLogger("jobqueue.adaptive")

UNKNOWN_TASK_DURATION = 0.5   # seconds, for task kinds that never finished yet


@dataclass(frozen=True)
class JobLoad:
    name: str
    state: str                  # pending, running (anything else is gone)
    workers: tuple = ()         # names of its connected workers
    busy: int = 0               # tasks processing on its workers
    ends_at: float | None = None  # when the batch system will kill it (start + walltime)


@dataclass(frozen=True)
class Snapshot:
    now: float
    tasks: dict                 # {task group: number of tasks queued, waiting or processing}
    durations: dict             # {task group: average duration in seconds}
    jobs: tuple                 # JobLoad, oldest first
    threads_per_job: int
    workers_per_job: int = 1
    # (task group, {resource: amount}, number) of tasks that request resources (not in tasks)
    resources: tuple = ()
    worker_resources: dict = field(default_factory=dict)  # what each new worker declares


@dataclass(frozen=True)
class Policy:
    minimum_jobs: int = 0
    maximum_jobs: float = math.inf    # a whole number, or no limit
    target_duration: float = 5.0
    wait_count: int = 3
    max_jobs: int | None = None     # the site's cap on queued + running jobs
    replace_before: float = 60.0    # a job this close to its walltime is not capacity

    def __post_init__(self):
        if self.minimum_jobs < 0 or self.maximum_jobs < self.minimum_jobs:
            raise ValueError(f"adapt: need 0 <= minimum ({self.minimum_jobs}) <= maximum "
                             f"({self.maximum_jobs})")
        if self.target_duration <= 0 or self.wait_count < 1:
            raise ValueError("adapt: target_duration must be > 0 and wait_count >= 1")


@dataclass(frozen=True)
class Decision:
    submit: int = 0
    cancel: tuple = ()          # names of jobs to cancel (not started yet: nothing to move)
    retire: tuple = ()          # names of jobs whose workers retire, then the job ends
    target: int = 0
    reason: str = ""
    unserved: tuple = ()        # why tasks that request resources get no jobs (for the log)

    @property
    def nothing(self) -> bool:
        return not (self.submit or self.cancel or self.retire)


@dataclass(frozen=True)
class AdaptState:
    """What the policy remembers between rounds."""
    down_rounds: int = 0
    history: tuple = field(default=())


def _slots(have: dict, need: dict) -> float:
    """How many tasks requesting *need* one worker declaring *have* runs at once (0: none)."""
    return min((math.floor(have.get(k, 0) / v + 1e-9) if v else math.inf
                for k, v in need.items()), default=math.inf)


def resource_jobs(snap: Snapshot, policy: Policy) -> tuple:
    """(jobs needed for the tasks that request resources, notes on those new jobs cannot
    serve): a task counts only if the cluster's workers would declare what it requests."""
    jobs, unserved = 0.0, []
    for group, need, n in snap.resources:
        per_worker = _slots(snap.worker_resources, need)
        if not per_worker:
            declared = ", ".join(f"{k}={v:g}" for k, v in sorted(snap.worker_resources.items()))
            wanted = ",".join(f"{k}={v:g}" for k, v in sorted(need.items()))
            unserved.append(f"{n} {group} tasks request resources {wanted}, which this "
                            f"cluster's workers do not declare "
                            f"({'they declare ' + declared if declared else 'they declare none'}"
                            f"): no jobs are added for them; give the workers e.g. "
                            f"worker_extra_args=['--resources', '{wanted}']")
            continue
        seconds = n * snap.durations.get(group, UNKNOWN_TASK_DURATION)
        parallel = min(n, math.ceil(seconds / policy.target_duration))
        per_job = min(per_worker * snap.workers_per_job, max(snap.threads_per_job, 1))
        jobs += parallel / per_job
    return math.ceil(jobs), tuple(unserved)


def target_jobs(snap: Snapshot, policy: Policy) -> int:
    """Jobs needed to finish the current work in about ``target_duration``."""
    work = sum(n * snap.durations.get(group, UNKNOWN_TASK_DURATION)
               for group, n in snap.tasks.items())
    ntasks = sum(snap.tasks.values())
    threads = math.ceil(work / policy.target_duration) if work else 0
    threads = min(threads, ntasks)  # never more threads than tasks
    jobs = math.ceil(threads / max(snap.threads_per_job, 1))
    if snap.resources:
        jobs = max(jobs, resource_jobs(snap, policy)[0])
    cap = policy.maximum_jobs
    if policy.max_jobs is not None:
        cap = min(cap, policy.max_jobs)
    return int(max(policy.minimum_jobs, min(jobs, cap)))


def decide(snap: Snapshot, policy: Policy, state: AdaptState = AdaptState()):
    """One round: (Decision, new AdaptState). Pure: no clock, no I/O."""
    decision, state = _decide(snap, policy, state)
    if snap.resources:
        decision = replace(decision, unserved=resource_jobs(snap, policy)[1])
    return decision, state


def _decide(snap: Snapshot, policy: Policy, state: AdaptState):
    target = target_jobs(snap, policy)
    live = [j for j in snap.jobs if j.state in ("pending", "running")]
    expiring = {j.name for j in live if j.ends_at is not None
                and j.ends_at - snap.now < policy.replace_before}
    capacity = [j for j in live if j.name not in expiring]
    cap = policy.max_jobs if policy.max_jobs is not None else math.inf
    if target > len(capacity):
        room = int(max(0, min(cap - len(live), target - len(capacity))))
        if not room:
            return Decision(target=target, reason=f"need {target} jobs but the site cap "
                            f"({policy.max_jobs}) is reached"), replace(state, down_rounds=0)
        why = f"{target} jobs needed for the load, {len(capacity)} pending or running"
        if expiring:
            why += f" ({len(expiring)} near their walltime not counted)"
        return Decision(submit=room, target=target, reason=why), replace(state, down_rounds=0)
    if target == len(capacity):
        return Decision(target=target, reason="at target"), replace(state, down_rounds=0)
    rounds = state.down_rounds + 1
    if rounds < policy.wait_count:
        return (Decision(target=target, reason=f"scale down to {target} agreed {rounds} of "
                         f"{policy.wait_count} rounds"), replace(state, down_rounds=rounds))
    excess = len(capacity) - target
    pending = [j for j in reversed(capacity) if j.state == "pending" or not j.workers]
    cancel = tuple(j.name for j in pending[:excess])
    excess -= len(cancel)
    idle = [j for j in reversed(capacity) if j.state == "running" and j.workers and not j.busy]
    retire = tuple(j.name for j in idle[:excess])
    if not cancel and not retire:
        return Decision(target=target, reason="above target, but every job is busy"), \
            replace(state, down_rounds=rounds)
    return (Decision(cancel=cancel, retire=retire, target=target,
                     reason=f"{len(capacity)} jobs, {target} needed for {policy.wait_count} "
                            f"rounds"), replace(state, down_rounds=0))


def snapshot(cluster, load: Load, now: float) -> Snapshot:
    """The scheduler's load (from its :class:`~jobqueue.core.scheduler_api.SchedulerAPI`) and
    the cluster's jobs, as the policy reads them."""
    by_name = load.workers
    jobs = []
    for key, job in list(cluster.jobs.items()):
        jstate = str(job.state)
        if jstate not in ("pending", "running") or getattr(job, "cancel_requested", False):
            continue
        names = tuple(n for n in job.worker_names() if n in by_name)
        busy = sum(by_name[n].processing for n in names)
        jobs.append(JobLoad(key, jstate, names, busy, getattr(job, "ends_at", None)))
    return Snapshot(now, dict(load.tasks), dict(load.durations), tuple(jobs),
                    cluster.threads_per_job, cluster.workers_per_job, tuple(load.resources),
                    dict(getattr(cluster, "worker_resources", None) or {}))


class Adaptive:
    """Applies the policy every ``interval`` seconds on the cluster's event loop."""

    def __init__(self, cluster, policy: Policy, interval: float = 1.0):
        self.cluster = cluster
        self.policy = policy
        self.interval = interval
        self.state = AdaptState()
        self.log: list = []           # (time, decision) of every change, for people
        self.submitted = 0
        self._task = None
        self._said: set = set()       # notes already logged
        self.rounds = 0               # steps taken

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self):
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self):
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("adaptive step failed; trying again in %g s", self.interval)
            await asyncio.sleep(self.interval)

    async def step(self):
        snap = snapshot(self.cluster, await self.cluster.scheduler.load(), time.time())
        decision, self.state = decide(snap, self.policy, self.state)
        self.rounds += 1
        for note in decision.unserved:
            key = note.split(" ", 1)[1]          # once per kind, whatever the number
            if key not in self._said:
                self._said.add(key)
                logger.warning("adaptive: %s", note)
        if decision.nothing:
            return decision
        self.log.append((time.time(), decision))
        logger.info("adaptive: %s: submit %d, cancel %s, retire %s", decision.reason,
                    decision.submit, list(decision.cancel), list(decision.retire))
        if decision.submit:
            self.submitted += decision.submit
            await self.cluster._add_jobs(decision.submit)
        gone = [self.cluster.jobs[n] for n in decision.cancel + decision.retire
                if n in self.cluster.jobs]
        if gone:
            await self.cluster.retire_jobs(gone)
        return decision

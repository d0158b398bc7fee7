"""Where a ready task runs: the choice of worker, and abstract resources. Pure: no I/O.

Resources mean what they mean in dask.distributed: a worker declares amounts of named things
(``jobqueue worker --resources "GPU=2,MEMORY=100e9"``), a task requests some
(``submit(f, resources={"GPU": 1})``). A task runs only on a worker that declares at least what
it requests, and a worker runs at most as many such tasks at once as its amounts allow: a
task's request is held on its worker while it is processing there and given back when it
finishes, errs, is cancelled or moved, or the worker leaves.

A task that some running worker could serve but none has free now waits on the scheduler
(state ``queued``, in a :class:`ResourceQueue`); one that no running worker declares enough for
waits in ``no-worker`` until a worker that does joins.
"""
from __future__ import annotations

import heapq
import itertools
import math
from typing import Any, Callable, Iterable, Iterator

from .protocol import wrap
from .scheduler_types import TaskState, WorkerState


def check_resources(value: Any, what: str = "resources") -> dict:
    """``{name: amount}`` with str names and non-negative finite amounts; ValueError naming
    what was wrong otherwise."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict of {{name: amount}}, e.g. {{'GPU': 1}}, not "
                         f"{value!r}")
    out = {}
    for name, amount in value.items():
        if not isinstance(name, str) or not name or "=" in name or "," in name:
            raise ValueError(f"{what}: {name!r} is not a resource name (a non-empty string "
                             "without '=' or ',')")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) \
                or not math.isfinite(amount) or amount < 0:
            raise ValueError(f"{what}: the amount of {name!r} must be a number >= 0, not "
                             f"{amount!r}")
        out[name] = amount
    return out


def parse_resources(text: str) -> dict:
    """``"GPU=2,FOO=1"`` (dask-worker's ``--resources`` syntax; spaces also separate) as
    ``{"GPU": 2, "FOO": 1}``."""
    out: dict = {}
    for item in text.replace(",", " ").split():
        name, sep, amount = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{item!r} is not NAME=AMOUNT (as in --resources 'GPU=2,FOO=1')")
        try:
            value = float(amount)
        except ValueError:
            raise ValueError(f"{item!r}: the amount {amount!r} is not a number") from None
        out[name] = int(value) if value.is_integer() else value
    return check_resources(out, "--resources")


def format_resources(resources: dict) -> str:
    """``{"GPU": 2, "FOO": 1}`` as ``"FOO=1,GPU=2"`` (sorted, what --resources reads)."""
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(resources.items()))


def can_ever(ws: WorkerState, need: dict) -> bool:
    """Whether *ws* declares at least *need*."""
    have = ws.resources
    for name, amount in need.items():
        if have.get(name, 0) < amount:
            return False
    return True


def can_now(ws: WorkerState, need: dict) -> bool:
    """Whether *ws* has *need* free: declared less what its processing tasks hold."""
    have, used = ws.resources, ws.used
    for name, amount in need.items():
        if used.get(name, 0) + amount > have.get(name, 0):
            return False
    return True


def consume(ws: WorkerState, need: dict) -> None:
    used = ws.used
    for name, amount in need.items():
        used[name] = used.get(name, 0) + amount


def give_back(ws: WorkerState, need: dict) -> None:
    used = ws.used
    for name, amount in need.items():
        left = used.get(name, 0) - amount
        if left > 1e-9:
            used[name] = left
        else:
            used.pop(name, None)


def missing(workers: Iterable[WorkerState], need: dict) -> dict:
    """What a task needing *need* lacks: ``{name: most any one of *workers* declares}`` for
    each resource that none of them declares enough of ({} if one does)."""
    workers = list(workers)
    if any(can_ever(ws, need) for ws in workers):
        return {}
    return {name: max((ws.resources.get(name, 0) for ws in workers), default=0)
            for name, amount in need.items()
            if all(ws.resources.get(name, 0) < amount for ws in workers)}


def best_worker(ts: TaskState, allowed: list | None,
                workers: Iterable[WorkerState]) -> WorkerState | None:
    """The running worker (of *allowed*, if not None) holding most of the task's input bytes;
    ties, and tasks without inputs: the least occupied."""
    if ts.dependencies:
        score: dict = {}
        for d in ts.dependencies:
            nb = d.nbytes + 1
            for ws in d.who_has:
                score[ws] = score.get(ws, 0) + nb
        best, best_score, best_occ = None, -1, 0.0
        for ws, sc in score.items():
            if ws.status != "running" or (allowed is not None and ws not in allowed):
                continue
            occ = len(ws.processing) / ws.nthreads
            if sc > best_score or (sc == best_score and occ < best_occ):
                best, best_score, best_occ = ws, sc, occ
        if best is not None:
            return best
    if allowed is None:
        allowed = [ws for ws in workers if ws.status == "running"]
    if not allowed:
        return None
    return min(allowed, key=lambda ws: len(ws.processing) / ws.nthreads)


class ResourceQueue:
    """Ready tasks waiting on the scheduler for resources that a running worker declares but
    has in use: one heap per distinct request, each in priority order. Entries of tasks that
    left the ``queued`` state are dropped when met (as in the root-task queue)."""

    def __init__(self) -> None:
        self.heaps: dict[tuple, list] = {}
        self._seq = itertools.count()

    def push(self, ts: TaskState) -> None:
        need = ts.resources or {}
        heap = self.heaps.setdefault(tuple(sorted(need.items())), [])
        heapq.heappush(heap, (ts.priority, next(self._seq), ts))

    def __bool__(self) -> bool:
        return bool(self.heaps)

    def tasks(self) -> Iterator[TaskState]:
        """The tasks still queued here (any order)."""
        for heap in self.heaps.values():
            for entry in heap:
                if entry[2].state == "queued":
                    yield entry[2]

    def take_for(self, ws: WorkerState, allowed_on) -> list:
        """Pop, in priority order per request, the queued tasks that fit in what *ws* has
        free (each consumed as it is taken, by the caller's compute); ``allowed_on(ts, ws)``
        says whether a task's worker restrictions let it run there (others stay queued).
        Returns them; the caller assigns each before asking again."""
        out = []
        for key in list(self.heaps):
            heap = self.heaps[key]
            need = dict(key)
            if not can_ever(ws, need):
                continue
            kept = []
            used = dict(ws.used)
            while heap:
                ts = heap[0][2]
                if ts.state != "queued":
                    heapq.heappop(heap)
                    continue
                if not _fits(ws.resources, used, need):
                    break
                entry = heapq.heappop(heap)
                if allowed_on(ts, ws):
                    for name, amount in need.items():
                        used[name] = used.get(name, 0) + amount
                    out.append(ts)
                else:
                    kept.append(entry)
            for entry in kept:
                heapq.heappush(heap, entry)
            if not heap:
                del self.heaps[key]
        return out

    def drop(self, servable: Callable[[TaskState], bool]) -> list:
        """Pop the queued tasks that ``servable(ts)`` says no running worker can ever run
        (they go to ``no-worker``)."""
        out = []
        for key in list(self.heaps):
            kept = []
            for entry in self.heaps[key]:
                ts = entry[2]
                if ts.state != "queued":
                    continue
                if servable(ts):
                    kept.append(entry)
                else:
                    out.append(ts)
            if kept:
                heapq.heapify(kept)
                self.heaps[key] = kept
            else:
                del self.heaps[key]
        return out


def _fits(have: dict, used: dict, need: dict) -> bool:
    for name, amount in need.items():
        if used.get(name, 0) + amount > have.get(name, 0):
            return False
    return True


class Placement:
    """The part of :class:`~jobqueue.core.scheduler_state.SchedulerState` that places ready
    tasks on workers: root tasks queued for free slots, tasks with inputs on the worker that
    holds most of them, restrictions, and resources held while tasks run."""

    # the scheduler's state this part reads and changes (SchedulerState sets them)
    workers: dict[str, WorkerState]
    names: dict[str, WorkerState]
    functions: dict[str, bytes]
    queue: list
    constrained: ResourceQueue
    unrunnable: set
    idle: dict
    worker_out: dict
    counter: int
    duration_avg: float | None
    pipeline_seconds: float

    def _set(self, ts: TaskState, new: str) -> None:
        raise NotImplementedError

    def _free(self, ws: WorkerState, keys: list) -> None:
        raise NotImplementedError

    def _ready(self, ts):
        if not ts.dependencies and ts.restrictions is None and ts.resources is None:
            self._set(ts, "queued")
            self.counter += 1
            heapq.heappush(self.queue, (ts.priority, self.counter, ts))
            return
        if ts.resources is not None:
            self._ready_constrained(ts)
            return
        ws = self._decide_worker(ts)
        if ws is None:
            self._set(ts, "no-worker")
            self.unrunnable.add(ts)
        else:
            self._assign(ts, ws)

    def _ready_constrained(self, ts):
        """A ready task that requests resources: to the best worker that has them free, else
        queued until one has (a worker declares them), else no-worker."""
        capable = self._candidates(ts)
        if not capable:
            if ts.state != "no-worker":
                self._set(ts, "no-worker")
                self.unrunnable.add(ts)
            return
        need = ts.resources
        ws = best_worker(ts, [w for w in capable if can_now(w, need)],
                                   self.workers.values())
        if ws is not None:
            self.unrunnable.discard(ts)
            self._assign(ts, ws)
        elif ts.state != "queued":
            self.unrunnable.discard(ts)
            self._set(ts, "queued")
            self.constrained.push(ts)

    def _candidates(self, ts) -> list | None:
        """The running workers *ts* may run on: those its restrictions name (any, if it has
        none or they are a preference that no running worker meets) that declare the
        resources it requests. None: any running worker."""
        allowed = None
        if ts.restrictions is not None:
            allowed = [ws for ws in (self.workers.get(a) or self.names.get(a)
                                     for a in ts.restrictions)
                       if ws is not None and ws.status == "running"]
        if ts.resources is not None:
            need = ts.resources
            capable = [ws for ws in self.workers.values()
                       if ws.status == "running" and can_ever(ws, need)]
            preferred = capable if allowed is None else [ws for ws in allowed if ws in capable]
            return capable if not preferred and ts.loose else preferred
        if allowed is not None and not allowed and ts.loose:
            return None  # a preference only: any running worker will do
        return allowed

    def _allowed_on(self, ts, ws) -> bool:
        """Whether *ts*'s worker restrictions (not a mere preference) let it run on *ws*."""
        return (ts.restrictions is None or ts.loose or ws.address in ts.restrictions
                or ws.name in ts.restrictions)

    def _decide_worker(self, ts):
        """The running worker holding most of the task's input bytes; ties: least occupied."""
        allowed = self._candidates(ts) if ts.restrictions is not None else None
        if allowed is not None and not allowed:
            return None
        return best_worker(ts, allowed, self.workers.values())

    def _capacity(self, ws):
        if ws.status != "running":
            return 0
        avg = self.duration_avg
        if avg is None:
            extra = ws.nthreads
        else:
            extra = max(1, min(32 * ws.nthreads, int(self.pipeline_seconds / max(avg, 1e-6))))
        return ws.nthreads + extra

    def _compute(self, ts, ws):
        self._set(ts, "processing")
        ts.processing_on = ws
        ws.processing[ts] = None
        if ts.resources is not None:
            consume(ws, ts.resources)
        msg = {"op": "compute", "key": ts.key, "fid": ts.fid, "args": ts.args,
               "priority": ts.priority}
        if ts.fid is not None and ts.fid not in ws.functions:
            msg["func"] = wrap(self.functions[ts.fid])
            ws.functions.add(ts.fid)
        if ts.dependencies:
            msg["deps"] = {d.key: [w.address for w in d.who_has] for d in ts.dependencies}
        if ts.who_wants:
            msg["want"] = True
        self.worker_out[ws.address].append(msg)

    def _assign(self, ts, ws):
        """_compute, for a task placed on *ws* by its inputs or restrictions (not by _fill)."""
        self._compute(ts, ws)
        if ws in self.idle and len(ws.processing) >= self._capacity(ws):
            del self.idle[ws]

    def _fill(self, ws, threads_only=False):
        """Give queued root tasks to *ws* until its slots are full (or, with *threads_only*,
        until each of its threads has one: the pipeline's extra slots come second)."""
        cap = self._capacity(ws)
        upto = min(cap, ws.nthreads) if threads_only else cap
        queue = self.queue
        while queue and len(ws.processing) < upto:
            ts = heapq.heappop(queue)[2]
            if ts.state == "queued":
                self._compute(ts, ws)
        if len(ws.processing) < cap:
            self.idle[ws] = None
        else:
            self.idle.pop(ws, None)

    def _fill_all(self):
        """Every idle thread gets a task before any worker gets its pipeline's extra ones:
        two long tasks and two idle one-thread workers run side by side, not one after the
        other on the first."""
        for threads_only in (True, False):
            for ws in list(self.idle):
                if not self.queue:
                    return
                self._fill(ws, threads_only)

    def _retry_unrunnable(self):
        for ts in list(self.unrunnable):
            if ts.resources is not None:
                self._ready_constrained(ts)
                continue
            ws = self._decide_worker(ts)
            if ws is not None:
                self.unrunnable.discard(ts)
                self._assign(ts, ws)

    def _give_back(self, ts, ws):
        """*ts* (which requests resources) no longer runs on *ws*: its resources are free for
        the tasks queued for them."""
        give_back(ws, ts.resources)
        if ws.status == "running" and self.constrained and ws.address in self.workers:
            for t in self.constrained.take_for(ws, self._allowed_on):
                self._assign(t, ws)

    def _resources_changed(self):
        """A worker that declares resources joined, left, paused or resumed: tasks that wait
        for resources may run now, or may have no worker left that could ever run them."""
        running = [ws for ws in self.workers.values() if ws.status == "running"]
        for ts in self.constrained.drop(lambda t: bool(self._candidates(t))):
            self._set(ts, "no-worker")
            self.unrunnable.add(ts)
        for ws in running:
            if ws.resources and self.constrained:
                for t in self.constrained.take_for(ws, self._allowed_on):
                    self._assign(t, ws)
        self._retry_unrunnable()

    def _unassign(self, ts, cancel=True):
        ws = ts.processing_on
        if ws is None:
            return
        ts.processing_on = None
        del ws.processing[ts]
        if cancel:
            self._free(ws, [ts.key])
        if ts.resources is not None:
            self._give_back(ts, ws)
        if ws.address in self.workers and ws.status == "running":
            self.idle[ws] = None

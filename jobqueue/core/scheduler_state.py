"""The scheduler as a pure state machine: stimuli in, messages out. No I/O, no awaits.

Each public method is a stimulus (a worker arrived, a task finished, a client released keys...).
It updates the state and appends messages to ``worker_out[address]`` and ``client_out[client]``;
the I/O shell (scheduler.py) sends them with :meth:`SchedulerState.take`.

Task states::

    released   known, not wanted by anything running now (kept while dependents exist, for lineage)
    waiting    wanted, some dependencies not in memory yet
    queued     ready root task, waiting on the scheduler for a free worker slot
    no-worker  ready, but no running worker satisfies its restrictions
    processing sent to a worker
    memory     result held by one or more workers
    erred      the task (or a dependency) raised, or killed too many workers
    forgotten  dropped from the scheduler

The scheduler never unpickles user data: functions, arguments, results and exceptions are opaque
bytes here.
"""
from __future__ import annotations

import heapq
import pickle
from collections import defaultdict, deque

from .errors import KilledWorker
from .protocol import wrap

WANTED, LOOSE = 1, 2            # flags of a graph's task row (graph.py)
USER_PRIORITY = 1 << 40         # a graph task's priority: position - user priority * this

LEGAL = {
    ("released", "waiting"), ("released", "queued"), ("released", "no-worker"),
    ("released", "processing"), ("released", "erred"), ("released", "forgotten"),
    ("waiting", "queued"), ("waiting", "no-worker"), ("waiting", "processing"),
    ("waiting", "released"), ("waiting", "erred"), ("waiting", "forgotten"),
    ("queued", "processing"), ("queued", "released"), ("queued", "forgotten"),
    ("no-worker", "processing"), ("no-worker", "waiting"), ("no-worker", "released"),
    ("no-worker", "forgotten"), ("no-worker", "erred"),
    ("processing", "memory"), ("processing", "erred"), ("processing", "released"),
    ("processing", "waiting"), ("processing", "forgotten"),
    ("memory", "released"), ("memory", "forgotten"),
    ("erred", "released"), ("erred", "forgotten"),
}
STATES = ("released", "waiting", "queued", "no-worker", "processing", "memory", "erred")
DONE = ("memory", "erred")


class InvalidTransition(AssertionError):
    pass


class _EmptySet(frozenset):
    """The shared empty set of tasks without dependencies, dependents, waiters or holders:
    most tasks of a big map have none until they finish, and not allocating 5 sets each keeps
    memory per queued task small and the garbage collector idle.
    Code that adds to one of these sets first replaces EMPTY by a set of its own."""

    __slots__ = ()

    def discard(self, item):
        pass


EMPTY = _EmptySet()


class TaskState:
    __slots__ = ("key", "group", "fid", "args", "priority", "state", "dependencies", "dependents",
                 "waiting_on", "waiters", "who_has", "processing_on", "nbytes", "type", "retries",
                 "suspicious", "killed_on", "restrictions", "who_wants", "exception", "traceback",
                 "duration", "loose")

    def __init__(self, key, group, fid, args, priority, retries=0, restrictions=None):
        self.key = key
        self.group = group
        self.fid = fid
        self.args = args
        self.priority = priority
        self.state = "released"
        self.dependencies = EMPTY
        self.dependents = EMPTY
        self.waiting_on = EMPTY
        self.waiters = EMPTY
        self.who_has = EMPTY  # becomes a set with the first worker that holds the result
        self.processing_on = None
        self.nbytes = 0
        self.type = None
        self.retries = retries
        self.suspicious = 0
        self.killed_on = None
        self.restrictions = restrictions
        self.who_wants: set = set()
        self.exception = None
        self.traceback = None
        self.duration = None
        self.loose = False  # restrictions are a preference (allow_other_workers)

    def __repr__(self):
        return f"<Task {self.key!r} {self.state}>"


class TaskGroup:
    """Tasks of one kind (the key's prefix): counts per state and timing, for progress and adapt."""

    __slots__ = ("name", "states", "duration", "done", "nbytes", "types")

    def __init__(self, name):
        self.name = name
        self.states = dict.fromkeys(STATES + ("forgotten",), 0)
        self.duration = 0.0
        self.done = 0
        self.nbytes = 0
        self.types: set = set()

    @property
    def average_duration(self):
        return self.duration / self.done if self.done else None


class WorkerState:
    __slots__ = ("address", "name", "nthreads", "memory_limit", "status", "processing", "has_what",
                 "nbytes", "functions", "last_seen", "metrics", "extra")

    def __init__(self, address, name, nthreads, memory_limit, now=0.0, extra=None):
        self.address = address
        self.name = name
        self.nthreads = nthreads
        self.memory_limit = memory_limit
        self.status = "running"
        self.processing: dict = {}  # TaskState -> None, in the order they were sent
        self.has_what: set = set()
        self.nbytes = 0
        self.functions: set = set()
        self.last_seen = now
        self.metrics: dict = {}
        self.extra = extra or {}

    def __repr__(self):
        return f"<Worker {self.address} {self.name} {self.status} processing={len(self.processing)}>"


class ClientState:
    __slots__ = ("id", "wants", "base", "failed")

    def __init__(self, cid):
        self.id = cid
        self.wants: set = set()
        self.base = 0  # priority of position 0 of the client's latest ordered graph
        self.failed: dict = {}  # key -> pickled error: tasks of its latest graph that cannot run


class SchedulerState:
    def __init__(self, allowed_failures: int = 3, transition_log: int = 100_000,
                 pipeline_seconds: float = 0.01):
        self.allowed_failures = allowed_failures
        self.pipeline_seconds = pipeline_seconds
        self.tasks: dict[str, TaskState] = {}
        self.groups: dict[str, TaskGroup] = {}
        self.workers: dict[str, WorkerState] = {}
        self.names: dict[str, WorkerState] = {}
        self.clients: dict[str, ClientState] = {}
        self.functions: dict[str, bytes] = {}
        self.queue: list = []              # heap of (priority, seq, TaskState)
        self.unrunnable: set = set()
        self.idle: dict = {}               # running workers with a free slot (ordered set)
        self.worker_out: dict = defaultdict(list)
        self.client_out: dict = defaultdict(list)
        self.log = deque(maxlen=transition_log)
        self.stimulus = ""
        self.duration_avg = None
        self.counter = 0
        self.counts = defaultdict(int)     # monotonic counters for /metrics
        # (worker, key, group, start, stop, erred) of recent tasks, for the dashboard's task stream
        self.task_stream = deque(maxlen=10_000)

    # -- output -----------------------------------------------------------------------------

    def take(self):
        """Messages produced since the last call: ({worker: [msg]}, {client: [msg]})."""
        w, c = self.worker_out, self.client_out
        self.worker_out, self.client_out = defaultdict(list), defaultdict(list)
        return w, c

    def _to_clients(self, ts, msg):
        for cs in ts.who_wants:
            self.client_out[cs.id].append(msg)

    def _hold(self, ts, ws):
        """Worker *ws* holds the result of *ts* (not yet recorded)."""
        if ts.who_has is EMPTY:
            ts.who_has = {ws}
        else:
            ts.who_has.add(ws)
        ws.has_what.add(ts)
        ws.nbytes += ts.nbytes

    def _free(self, ws, keys):
        out = self.worker_out[ws.address]
        if out and out[-1]["op"] == "free-keys":  # coalesce runs, keep the order of messages
            out[-1]["keys"].extend(keys)
        else:
            out.append({"op": "free-keys", "keys": list(keys)})

    # -- transitions ------------------------------------------------------------------------

    def _set(self, ts, new):
        old = ts.state
        if (old, new) not in LEGAL:
            raise InvalidTransition(f"{ts.key!r}: {old} -> {new} ({self.stimulus})")
        ts.state = new
        states = self.groups[ts.group].states
        states[old] -= 1
        states[new] += 1
        self.log.append((ts.key, old, new, self.stimulus))

    def _needed(self, ts):
        return bool(ts.who_wants or ts.waiters)

    def _request(self, ts):
        """Drive a released task (and its released dependencies) towards memory."""
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state != "released":
                continue
            erred = None
            waiting_on = None
            for d in t.dependencies:
                if d.waiters is EMPTY:
                    d.waiters = {t}
                else:
                    d.waiters.add(t)
                if d.state != "memory":
                    if waiting_on is None:
                        waiting_on = {d}
                    else:
                        waiting_on.add(d)
                    if d.state == "released":
                        stack.append(d)
                    elif d.state == "erred":
                        erred = d
            t.waiting_on = waiting_on or EMPTY
            if erred is not None:
                self._err(t, erred.exception, erred.traceback)
            elif t.waiting_on:
                self._set(t, "waiting")
            else:
                self._ready(t)

    def _ready(self, ts):
        if not ts.dependencies and ts.restrictions is None:
            self._set(ts, "queued")
            self.counter += 1
            heapq.heappush(self.queue, (ts.priority, self.counter, ts))
            return
        ws = self._decide_worker(ts)
        if ws is None:
            self._set(ts, "no-worker")
            self.unrunnable.add(ts)
        else:
            self._assign(ts, ws)

    def _decide_worker(self, ts):
        """The running worker holding most of the task's input bytes; ties: least occupied."""
        allowed = None
        if ts.restrictions is not None:
            allowed = [ws for ws in (self.workers.get(a) or self.names.get(a)
                                     for a in ts.restrictions)
                       if ws is not None and ws.status == "running"]
            if not allowed:
                if not ts.loose:
                    return None
                allowed = None  # a preference only: any running worker will do
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
            allowed = [ws for ws in self.workers.values() if ws.status == "running"]
        if not allowed:
            return None
        return min(allowed, key=lambda ws: len(ws.processing) / ws.nthreads)

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
            ws = self._decide_worker(ts)
            if ws is not None:
                self.unrunnable.discard(ts)
                self._assign(ts, ws)

    def _unassign(self, ts, cancel=True):
        ws = ts.processing_on
        if ws is None:
            return
        ts.processing_on = None
        del ws.processing[ts]
        if cancel:
            self._free(ws, [ts.key])
        if ws.address in self.workers and ws.status == "running":
            self.idle[ws] = None

    def _release(self, ts):
        """*ts* is no longer needed: drop its data or work, keep it only for lineage."""
        stack = [ts]
        while stack:
            t = stack.pop()
            if self._needed(t) or t.state == "forgotten":
                continue
            state = t.state
            if state == "memory":
                for ws in t.who_has:
                    ws.has_what.discard(t)
                    ws.nbytes -= t.nbytes
                    self._free(ws, [t.key])
                t.who_has = EMPTY
            elif state == "processing":
                self._unassign(t)
            elif state == "no-worker":
                self.unrunnable.discard(t)
            if state not in DONE:
                for d in t.dependencies:
                    if t in d.waiters:
                        d.waiters.discard(t)
                        if not self._needed(d):
                            stack.append(d)
                t.waiting_on = EMPTY
            if not t.dependents:
                self._forget(t)
            elif state != "released":
                self._set(t, "released")

    def _forget(self, ts):
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state == "forgotten":
                continue
            if t.state == "memory":
                for ws in t.who_has:
                    ws.has_what.discard(t)
                    ws.nbytes -= t.nbytes
                    self._free(ws, [t.key])
                t.who_has = EMPTY
            self._unassign(t)
            self.unrunnable.discard(t)
            self._set(t, "forgotten")
            del self.tasks[t.key]
            for d in t.dependencies:
                d.dependents.discard(t)
                d.waiters.discard(t)
                if not d.dependents and not self._needed(d) and d.state in ("released", "erred"):
                    stack.append(d)
                elif not self._needed(d) and d.state not in ("released", "forgotten"):
                    self._release(d)

    def _err(self, ts, exception, traceback):
        stack = [ts]
        while stack:
            t = stack.pop()
            if t.state in ("erred", "forgotten", "memory"):
                continue
            self._unassign(t, cancel=False)
            self.unrunnable.discard(t)
            self._set(t, "erred")
            self.counts["tasks-erred"] += 1
            t.exception, t.traceback = exception, traceback
            self._to_clients(t, {"op": "task-erred", "key": t.key, "exception": exception,
                                 "traceback": traceback})
            for d in t.dependencies:
                d.waiters.discard(t)
                if not self._needed(d):
                    self._release(d)
            t.waiting_on = EMPTY
            stack.extend(dt for dt in t.dependents if dt.state not in DONE + ("released",))
            if not self._needed(t):
                self._release(t)

    def _lose(self, ts):
        """No worker holds *ts*'s result any more."""
        if not self._needed(ts):
            self._release(ts)
            return
        self._set(ts, "released")
        for dt in ts.waiters:
            if dt.state == "processing":
                self._unassign(dt)
                self._set(dt, "waiting")
            elif dt.state == "no-worker":
                self.unrunnable.discard(dt)
                self._set(dt, "waiting")
            if dt.waiting_on is EMPTY:
                dt.waiting_on = {ts}
            else:
                dt.waiting_on.add(ts)
        self._request(ts)

    # -- stimuli: workers -------------------------------------------------------------------

    def add_worker(self, address, name, nthreads, memory_limit, now=0.0, **extra):
        self.stimulus = f"add-worker {address}"
        if address in self.workers:
            self.remove_worker(address, now, reason="re-registered")
        if name in self.names:
            return f"a worker named {name!r} is already connected"
        ws = WorkerState(address, name, max(1, int(nthreads)), memory_limit, now, extra)
        self.workers[address] = ws
        self.names[name] = ws
        self.counts["workers-added"] += 1
        self._fill(ws)
        self._retry_unrunnable()
        return None

    def remove_worker(self, address, now=0.0, reason=""):
        ws = self.workers.pop(address, None)
        if ws is None:
            return
        self.stimulus = f"remove-worker {address} {reason}"
        self.counts["workers-removed"] += 1
        self.names.pop(ws.name, None)
        self.idle.pop(ws, None)
        ws.status = "closed"
        rerun = []
        # The worker runs tasks in the order they were sent: the oldest nthreads were running;
        # the rest were only queued there and are not suspects.
        running = set(list(ws.processing)[:ws.nthreads])
        for ts in list(ws.processing):
            self._unassign(ts, cancel=False)
            if ts in running:
                ts.suspicious += 1
                ts.killed_on = (ts.killed_on or []) + [address]
            if ts.suspicious > self.allowed_failures:
                exc = pickle.dumps(KilledWorker(ts.key, ts.killed_on, self.allowed_failures))
                self._err(ts, exc, "")
            else:
                self._set(ts, "released")
                rerun.append(ts)
        lost = []
        for ts in ws.has_what:
            ts.who_has.discard(ws)
            if not ts.who_has and ts.state == "memory":
                lost.append(ts)
        ws.has_what = set()
        for ts in lost:
            if ts.state == "memory":
                self._lose(ts)
        for ts in rerun:
            if ts.state != "released":
                continue
            if self._needed(ts):
                self._request(ts)
            else:
                self._release(ts)
        self._fill_all()

    def worker_status(self, address, status):
        ws = self.workers.get(address)
        if ws is None or ws.status == status or ws.status == "closing":
            return
        self.stimulus = f"worker-status {address} {status}"
        ws.status = status
        if status == "running":
            self._fill(ws)
            self._retry_unrunnable()
        else:
            self.idle.pop(ws, None)

    def heartbeat(self, address, now, metrics=None):
        ws = self.workers.get(address)
        if ws is not None:
            ws.last_seen = now
            if metrics:
                ws.metrics = metrics

    def stale_workers(self, now, ttl):
        return [ws.address for ws in self.workers.values() if now - ws.last_seen > ttl]

    def task_finished(self, address, key, nbytes=0, type=None, start=None, stop=None, data=None):
        ts = self.tasks.get(key)
        ws = self.workers.get(address)
        if ws is None:
            return
        self.stimulus = "task-finished"
        if ts is None or ts.state != "processing" or ts.processing_on is not ws:
            if ts is not None and ts.state == "memory":
                if ws not in ts.who_has:
                    self._hold(ts, ws)
            else:
                self._free(ws, [key])
            return
        ts.processing_on = None
        del ws.processing[ts]
        ts.nbytes = nbytes
        ts.type = type
        self._hold(ts, ws)
        self._set(ts, "memory")
        self.counts["tasks-finished"] += 1
        group = self.groups[ts.group]
        if start is not None and stop is not None:
            d = max(stop - start, 0.0)
            ts.duration = d
            group.duration += d
            avg = self.duration_avg
            self.duration_avg = d if avg is None else 0.9 * avg + 0.1 * d
            self.task_stream.append((address, key, ts.group, start, stop, False))
        group.done += 1
        group.nbytes += nbytes
        if type is not None and len(group.types) < 8:
            group.types.add(type)
        if ts.who_wants:
            msg = {"op": "key-in-memory", "key": key, "nbytes": nbytes, "type": type}
            if data is not None:
                msg["data"] = data
            self._to_clients(ts, msg)
        for dt in ts.dependents:
            dt.waiting_on.discard(ts)
            if not dt.waiting_on and dt.state == "waiting":
                self._ready(dt)
        for d in ts.dependencies:
            d.waiters.discard(ts)
            if not d.waiters and not d.who_wants:
                self._release(d)
        if not self._needed(ts):
            self._release(ts)
        if ws.address in self.workers:
            self._fill(ws)

    def task_erred(self, address, key, exception=None, traceback=None, start=None, stop=None):
        ts = self.tasks.get(key)
        ws = self.workers.get(address)
        if ts is None or ws is None or ts.state != "processing" or ts.processing_on is not ws:
            return
        self.stimulus = "task-erred"
        if start is not None and stop is not None:
            self.task_stream.append((address, key, ts.group, start, stop, True))
        if ts.retries > 0:
            ts.retries -= 1
            self._unassign(ts, cancel=False)
            self._set(ts, "released")
            self._request(ts)
        else:
            self._err(ts, exception, traceback)
        if ws.address in self.workers:
            self._fill(ws)

    def add_keys(self, address, keys, nbytes=None):
        """A worker holds replicas of *keys* (it fetched them as inputs)."""
        ws = self.workers.get(address)
        if ws is None:
            return
        unknown = []
        for key in keys:
            ts = self.tasks.get(key)
            if ts is not None and ts.state == "memory":
                if ws not in ts.who_has:
                    self._hold(ts, ws)
            else:
                unknown.append(key)
        if unknown:
            self._free(ws, unknown)

    def missing_data(self, address, key, dep, holders):
        """Worker *address* could not fetch *dep* (input of *key*) from *holders*."""
        self.stimulus = f"missing-data {dep}"
        d = self.tasks.get(dep)
        if d is not None:
            for h in holders:
                ws = self.workers.get(h)
                if ws is not None and ws in d.who_has:
                    d.who_has.discard(ws)
                    ws.has_what.discard(d)
                    ws.nbytes -= d.nbytes
            if d.state == "memory" and not d.who_has:
                self._lose(d)
        ts = self.tasks.get(key)
        if ts is not None and ts.state == "processing" and ts.processing_on.address == address:
            self._unassign(ts, cancel=True)
            self._set(ts, "waiting")
            ts.waiting_on = {x for x in ts.dependencies if x.state != "memory"} or EMPTY
            if not ts.waiting_on:
                self._ready(ts)
            else:
                for x in ts.waiting_on:
                    if x.state == "released":
                        self._request(x)

    def retire(self, addresses):
        """Stop giving work to these workers; they finish what they have."""
        for address in addresses:
            ws = self.workers.get(address)
            if ws is not None:
                self.stimulus = f"retire {address}"
                ws.status = "closing"
                self.idle.pop(ws, None)

    def replicate_plan(self, address) -> dict:
        """{target address: {key: [holders]}}: results needed later that only *address* holds,
        each to be copied to the least loaded running worker."""
        ws = self.workers.get(address)
        targets = [w for w in self.workers.values() if w.status == "running"]
        plan: dict = {}
        if ws is None or not targets:
            return plan
        load = {w: w.nbytes for w in targets}
        for ts in ws.has_what:
            if len(ts.who_has) > 1 or not self._needed(ts):
                continue
            target = min(targets, key=load.__getitem__)
            load[target] += ts.nbytes
            plan.setdefault(target.address, {})[ts.key] = [address]
        return plan

    # -- stimuli: clients -------------------------------------------------------------------

    def add_client(self, cid):
        self.clients.setdefault(cid, ClientState(cid))

    def remove_client(self, cid):
        cs = self.clients.pop(cid, None)
        if cs is None:
            return
        self.stimulus = f"remove-client {cid}"
        for ts in list(cs.wants):
            ts.who_wants.discard(cs)
            if not self._needed(ts):
                self._release(ts)

    def update_graph(self, cid, tasks, functions=None, graph=None):
        """New tasks from a client: [key, group, fid, args, dependency keys, restrictions,
        retries] and, for a graph's tasks, [..., priority, flags] (graph.py).

        Dependencies come before their dependents (a client only refers to submitted keys).
        *graph* (the first part of an ordered graph): reserve that many priorities; a task's
        priority is then the graph's base plus its own. A task without flags is wanted by the
        client (a Future holds it); a graph's task only when its WANTED flag is set, and the
        rest run because a wanted task needs them.
        """
        self.stimulus = f"update-graph {cid}"
        cs = self.clients.get(cid) or self.clients.setdefault(cid, ClientState(cid))
        if functions:
            self.functions.update(functions)
        if graph is not None:
            cs.base = self.counter + 1
            self.counter += graph
            cs.failed = {}
        groups, all_tasks, counter = self.groups, self.tasks, self.counter
        for row in tasks:
            key, group, fid, args, deps, restrictions, retries = row[:7]
            if len(row) == 7:
                counter += 1
                priority, wanted, loose = counter, True, False
            else:
                priority, wanted, loose = cs.base + row[7], row[8] & WANTED, row[8] & LOOSE
            ts = all_tasks.get(key)
            if ts is not None:
                if wanted:
                    self._want_existing(cs, ts)
                continue
            error = self._cannot_run(cs, key, fid, deps)
            if error is not None:
                self._fail_row(cs, key, error, wanted)
                continue
            ts = self._new_task(key, group, fid, args, priority, retries,
                                set(restrictions) if restrictions else None, groups)
            ts.loose = bool(loose)
            if wanted:
                ts.who_wants.add(cs)
                cs.wants.add(ts)
            self._link(ts, deps)
            if wanted:
                self._request(ts)
        self.counter = counter
        self._fill_all()

    def _cannot_run(self, cs, key, fid, deps):
        """Why a new task cannot run (pickled exception), or None. A dependency the scheduler
        does not know (the client sent the graph before it learnt that the key was released,
        cancelled or lost) is named; so is the root cause when a dependency of the same graph
        failed the same way, not that dependency, which never became a task."""
        if fid is not None and fid not in self.functions:
            return pickle.dumps(RuntimeError(f"function {fid} of task {key!r} was never sent "
                                             "to the scheduler"))
        for dk in deps:
            if dk not in self.tasks:
                error = cs.failed.get(dk)
                if error is None:
                    error = pickle.dumps(RuntimeError(
                        f"task {key!r} depends on {dk!r}, which the scheduler does not know "
                        "(released, cancelled or lost)"))
                return error
        return None

    def _fail_row(self, cs, key, error, wanted):
        """A task that cannot run never becomes one: tasks of the graph that depend on it fail
        with its error, and the client hears of it if it wants the key."""
        cs.failed[key] = error
        self.counts["tasks-erred"] += 1
        if wanted:
            self.client_out[cs.id].append({"op": "task-erred", "key": key, "exception": error,
                                           "traceback": ""})

    def _link(self, ts, deps):
        """Connect *ts* to its dependencies (all known: _cannot_run checked)."""
        if not deps:
            return
        all_tasks = self.tasks
        ts.dependencies = set()
        for dk in deps:
            d = all_tasks[dk]
            ts.dependencies.add(d)
            if d.dependents is EMPTY:
                d.dependents = {ts}
            else:
                d.dependents.add(ts)

    def _new_task(self, key, group, fid, args, priority, retries, restrictions, groups):
        ts = TaskState(key, group, fid, args, priority, retries, restrictions)
        self.tasks[key] = ts
        g = groups.get(group)
        if g is None:
            g = groups[group] = TaskGroup(group)
        g.states["released"] += 1
        return ts

    def _want_existing(self, cs, ts):
        ts.who_wants.add(cs)
        cs.wants.add(ts)
        if ts.state == "memory":
            self.client_out[cs.id].append({"op": "key-in-memory", "key": ts.key,
                                           "nbytes": ts.nbytes, "type": ts.type})
        elif ts.state == "erred":
            self.client_out[cs.id].append({"op": "task-erred", "key": ts.key,
                                           "exception": ts.exception,
                                           "traceback": ts.traceback})
        elif ts.state == "released":
            self._request(ts)

    def retry(self, cid, keys):
        """Failed tasks run again: the erred ones among *keys* and the erred tasks that they
        depend on, then whatever a client still wants of them."""
        self.stimulus = f"retry {cid}"
        cs = self.clients.get(cid)
        for k in keys:
            if k not in self.tasks and cs is not None:  # failed before it became a task
                error = cs.failed.get(k) or pickle.dumps(RuntimeError(
                    f"cannot retry {k!r}: the scheduler does not know it (released, cancelled "
                    "or lost)"))
                self.client_out[cid].append({"op": "task-erred", "key": k, "exception": error,
                                             "traceback": ""})
        stack = [self.tasks[k] for k in keys if k in self.tasks]
        erred: dict = {}
        while stack:
            t = stack.pop()
            if t.state == "erred" and t not in erred:
                erred[t] = None
                stack.extend(t.dependencies)
        for t in erred:
            t.exception = t.traceback = t.killed_on = None
            t.suspicious = 0
            self._set(t, "released")
        for t in erred:
            if t.state == "released" and self._needed(t):
                self._request(t)
        self._fill_all()

    def release_keys(self, cid, keys):
        cs = self.clients.get(cid)
        if cs is None:
            return
        self.stimulus = f"release-keys {cid}"
        for key in keys:
            ts = self.tasks.get(key)
            if ts is None or cs not in ts.who_wants:
                continue
            ts.who_wants.discard(cs)
            cs.wants.discard(ts)
            if not ts.who_wants and not ts.waiters:
                self._release(ts)
        self._fill_all()

    def cancel(self, cid, keys):
        """Cancel *keys* and everything that depends on them, for every client."""
        self.stimulus = f"cancel {cid}"
        closure, stack = {}, [self.tasks[k] for k in keys if k in self.tasks]
        while stack:
            t = stack.pop()
            if t.key not in closure:
                closure[t.key] = t
                stack.extend(t.dependents)
        for t in sorted(closure.values(), key=lambda t: -t.priority):
            if t.state == "forgotten":
                continue
            self._to_clients(t, {"op": "cancelled", "key": t.key})
            for cs in t.who_wants:
                cs.wants.discard(t)
            t.who_wants = set()
            if not t.waiters:
                self._release(t)
        self._fill_all()

    # -- queries ----------------------------------------------------------------------------

    def who_has(self, keys):
        out = {}
        for key in keys:
            ts = self.tasks.get(key)
            out[key] = [ws.address for ws in ts.who_has] if ts is not None else []
        return out

    def story(self, key):
        return [t for t in self.log if t[0] == key]

    def validate(self):
        """Check every invariant; raises AssertionError naming the first broken one."""
        for key, ts in self.tasks.items():
            s = ts.state
            assert ts.key == key and s in STATES, ts
            assert (s == "processing") == (ts.processing_on is not None), ts
            if s == "processing":
                assert ts in ts.processing_on.processing, ts
                assert ts.processing_on.address in self.workers, ts
            assert (s == "memory") == bool(ts.who_has), (ts, ts.who_has)
            for ws in ts.who_has:
                assert ts in ws.has_what and ws.address in self.workers, (ts, ws)
            if s == "waiting":
                assert ts.waiting_on, ts
            assert ts.waiting_on <= ts.dependencies, ts
            for d in ts.waiting_on:
                assert d.state != "memory", (ts, d)
            for d in ts.dependencies:
                assert ts in d.dependents and d.key in self.tasks, (ts, d)
                if s not in DONE and s != "released":
                    assert ts in d.waiters, (ts, d)
            for d in ts.waiters:
                assert d in ts.dependents and d.state not in DONE + ("released",), (ts, d)
            if s in ("waiting", "queued", "no-worker", "processing"):
                assert self._needed(ts), f"{ts} is running but not needed"
            if s == "no-worker":
                assert ts in self.unrunnable, ts
            for cs in ts.who_wants:
                assert ts in cs.wants and cs.id in self.clients, ts
        for ws in self.workers.values():
            for ts in ws.processing:
                assert ts.processing_on is ws and ts.key in self.tasks, (ws, ts)
            for ts in ws.has_what:
                assert ws in ts.who_has and ts.key in self.tasks, (ws, ts)
            assert ws.nbytes == sum(t.nbytes for t in ws.has_what), ws
        queued = {e[2] for e in self.queue if e[2].state == "queued"}
        assert queued == {t for t in self.tasks.values() if t.state == "queued"}
        for g in self.groups.values():
            assert all(v >= 0 for v in g.states.values()), g.name

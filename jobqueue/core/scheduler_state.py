"""The scheduler as a pure state machine: stimuli in, messages out. No I/O, no awaits.

Each public method is a stimulus (a worker arrived, a task finished, a client released keys...).
It updates the state and appends messages to ``worker_out[address]`` and ``client_out[client]``;
the I/O shell (scheduler.py) sends them with :meth:`SchedulerState.take`.

Task states::

    released   known, not wanted by anything running now (kept while dependents exist, for lineage)
    waiting    wanted, some dependencies not in memory yet
    queued     ready, waiting on the scheduler: a root task for a free worker slot, or a task
               that requests resources (placement.py) for a worker that has them free
    no-worker  ready, but no running worker satisfies its restrictions or declares its resources
    processing sent to a worker
    memory     result held by one or more workers
    erred      the task (or a dependency) raised, or killed too many workers
    forgotten  dropped from the scheduler

The scheduler never unpickles user data: functions, arguments, results and exceptions are opaque
bytes here.
"""
from __future__ import annotations

import pickle
from collections import defaultdict, deque

from . import placement
from .errors import KilledWorker
from .placement import Placement, ResourceQueue
from .scheduler_types import (DONE, EMPTY, LEGAL, LOOSE, STATES, USER_PRIORITY,  # noqa: F401
                              WANTED, ClientState, InvalidTransition, TaskGroup, TaskState,
                              WorkerState)


class SchedulerState(Placement):
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
        self.constrained = ResourceQueue()  # queued tasks waiting for resources in use
        self.with_resources: set = set()   # tasks that request resources (not forgotten)
        self.unrunnable: set = set()
        self.idle: dict = {}               # running workers with a free slot (ordered set)
        self.worker_out: dict = defaultdict(list)
        self.client_out: dict = defaultdict(list)
        self.log: deque = deque(maxlen=transition_log)
        self.stimulus = ""
        self.duration_avg: float | None = None
        self.counter = 0
        self.counts: dict = defaultdict(int)     # monotonic counters for /metrics
        # (worker, key, group, start, stop, erred) of recent tasks, for the dashboard's task stream
        self.task_stream: deque = deque(maxlen=10_000)

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
            if t.resources is not None:
                self.with_resources.discard(t)
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
            elif dt.state == "queued":      # waiting for resources (its entry is dropped)
                self._set(dt, "waiting")
            if dt.waiting_on is EMPTY:
                dt.waiting_on = {ts}
            else:
                dt.waiting_on.add(ts)
        self._request(ts)

    # -- stimuli: workers -------------------------------------------------------------------

    def add_worker(self, address, name, nthreads, memory_limit, now=0.0, resources=None,
                   **extra):
        """A worker joined; *resources*: what it declares (``{"GPU": 2}``)."""
        self.stimulus = f"add-worker {address}"
        if address in self.workers:
            self.remove_worker(address, now, reason="re-registered")
        if name in self.names:
            return f"a worker named {name!r} is already connected"
        ws = WorkerState(address, name, max(1, int(nthreads)), memory_limit, now, extra,
                         resources)
        self.workers[address] = ws
        self.names[name] = ws
        self.counts["workers-added"] += 1
        self._fill(ws)
        if ws.resources:
            self._resources_changed()
        else:
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
        if ws.resources:
            self._resources_changed()
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
        if ws.resources:
            self._resources_changed()

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
        if ts.resources is not None:
            self._give_back(ts, ws)
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
        ws = ts.processing_on if ts is not None else None
        if ts is not None and ws is not None and ws.address == address:
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
                if ws.resources:
                    self._resources_changed()

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
            ts = self._new_task(key, group, fid, args, priority, retries, restrictions, groups)
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
        """*restrictions*: None, worker names or addresses, or {"workers": [...] or None,
        "resources": {name: amount}} (placement.py)."""
        resources = None
        if restrictions:
            if type(restrictions) is dict:
                resources = restrictions.get("resources") or None
                restrictions = restrictions.get("workers")
            restrictions = set(restrictions) if restrictions else None
        else:
            restrictions = None
        ts = TaskState(key, group, fid, args, priority, retries, restrictions, resources)
        if resources is not None:
            self.with_resources.add(ts)
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

    def no_worker(self) -> dict:
        """Why tasks wait in no-worker: ``{"resources GPU=1": number of tasks, "workers
        a,b": number of tasks}`` (what they request that no running worker offers)."""
        out: dict = {}
        for ts in self.unrunnable:
            if ts.resources is not None:
                what = f"resources {placement.format_resources(ts.resources)}"
            else:
                what = f"workers {','.join(sorted(ts.restrictions or ()))}"
            out[what] = out.get(what, 0) + 1
        return out

    def resource_load(self) -> list:
        """``[(group, request, number)]`` of the tasks that request resources and are
        waiting, queued, in no-worker or processing: what adaptive scaling can add workers for
        only if the new workers declare them."""
        counts: dict = {}
        for ts in self.with_resources:
            if ts.state in ("waiting", "queued", "no-worker", "processing"):
                key = (ts.group, tuple(sorted(ts.resources.items())))
                counts[key] = counts.get(key, 0) + 1
        return [(group, dict(need), n) for (group, need), n in counts.items()]

    def story(self, key):
        return [t for t in self.log if t[0] == key]

    def validate(self):
        """Check every invariant; raises AssertionError naming the first broken one."""
        for key, ts in self.tasks.items():
            s = ts.state
            assert ts.key == key and s in STATES, ts
            assert (s == "processing") == (ts.processing_on is not None), ts
            on = ts.processing_on
            if on is not None:
                assert ts in on.processing and on.address in self.workers, ts
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
            used: dict = {}
            for ts in ws.processing:
                for name, amount in (ts.resources or {}).items():
                    used[name] = used.get(name, 0) + amount
            assert _nonzero(used) == _nonzero(ws.used), (ws, used, ws.used)
        queued = {e[2] for e in self.queue if e[2].state == "queued"}
        constrained = set(self.constrained.tasks())
        assert not queued & constrained and all(t.resources for t in constrained)
        assert queued | constrained == {t for t in self.tasks.values() if t.state == "queued"}
        assert self.with_resources == {t for t in self.tasks.values() if t.resources is not None}
        for g in self.groups.values():
            assert all(v >= 0 for v in g.states.values()), g.name


def _nonzero(amounts: dict) -> dict:
    return {k: round(v, 9) for k, v in amounts.items() if v > 1e-9}

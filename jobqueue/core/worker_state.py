"""The worker as a pure state machine: stimuli in, instructions out. No I/O, no threads, no clock.

The I/O shell (worker.py) turns what happens (a message from the scheduler, a task that finished
on a thread, a reply from a peer, the memory monitor) into stimuli, feeds them to
:meth:`WorkerState.handle_stimulus` and carries out the instructions it returns: run a task on
a thread (:class:`Execute`), fetch keys from a peer (:class:`Gather`), send a message to the
scheduler (:class:`Send`: the messages of one step, as one batch).

Task states (one :class:`TaskState` per key the worker knows)::

    released   just created (only in the log)
    waiting    to compute here; some inputs are not here yet (in flight, or computed here)
    ready      to compute here, every input here: queued by the scheduler's priority
    executing  handed to a thread (or queued for one: ``prefetch`` beyond the threads)
    cancelled  freed by the scheduler while executing: its result will be dropped
    flight     being fetched from a peer (an input, or a replica for a retiring worker)
    memory     the value is in ``data`` (computed here or fetched)
    forgotten  dropped (only in the log)

Every transition is checked against ``LEGAL`` and recorded with the stimulus that caused it:
``story(key)`` replays one task's life.
"""
from __future__ import annotations

import heapq
import pickle
from collections import deque
from typing import NamedTuple

# The legal transitions: state -> the states it may go to.
LEGAL = {
    "released": frozenset({"waiting", "ready", "flight", "forgotten"}),
    "waiting": frozenset({"ready", "forgotten"}),
    "ready": frozenset({"executing", "waiting", "forgotten"}),
    "executing": frozenset({"memory", "cancelled", "forgotten"}),
    "cancelled": frozenset({"executing", "forgotten"}),
    "flight": frozenset({"memory", "waiting", "ready", "forgotten"}),
    "memory": frozenset({"forgotten"}),
    "forgotten": frozenset(),
}
STATES = ("waiting", "ready", "executing", "cancelled", "flight", "memory")  # in ``tasks``
NEEDS_INPUTS = ("waiting", "ready")


class InvalidTransition(AssertionError):
    pass


# -- stimuli ----------------------------------------------------------------------------------
# Small immutable named values. Each carries the id of the stimulus first: the shell names the
# event (what happened and a counter), and the transition log keeps it. They are named tuples,
# not frozen dataclasses, because the shell makes three per task (a compute, its Execute, its
# result): a frozen dataclass costs 3-4 times as much to build, 4 us per task in all.

class ComputeTask(NamedTuple):
    """The scheduler asks for *key*: run function *fid* on *args*, inputs ``{dep: holders}``."""
    stimulus_id: str
    key: str
    fid: str | None
    args: bytes | None
    deps: dict | None = None
    want: bool = False       # a client waits for it: send a small result inline
    priority: int = 0        # lower runs first (dask.order within a graph)


class FreeKeys(NamedTuple):
    stimulus_id: str
    keys: list


class AcquireReplicas(NamedTuple):
    """Copy ``{key: holders}`` from peers (a retiring worker's results)."""
    stimulus_id: str
    keys: dict


class ExecuteSuccess(NamedTuple):
    stimulus_id: str
    key: str
    value: object
    nbytes: int
    data: object = None      # the pickled value, sent inline to the client (small, wanted)
    start: float | None = None
    stop: float | None = None


class ExecuteFailure(NamedTuple):
    stimulus_id: str
    key: str
    exception: bytes         # pickled
    traceback: str
    start: float | None = None
    stop: float | None = None


class FetchDone(NamedTuple):
    """A peer answered a :class:`Gather`: *data* holds the keys it had, *nbytes* their sizes."""
    stimulus_id: str
    holder: str
    keys: tuple
    data: dict
    nbytes: dict


class FetchFailed(NamedTuple):
    """A :class:`Gather` failed as a whole: the peer is unreachable (*unpicklable* empty), or
    holds a result that cannot be pickled (*unpicklable* says which and why)."""
    stimulus_id: str
    holder: str
    keys: tuple
    unpicklable: str = ""


class Pause(NamedTuple):
    """Memory above the pause fraction: run no new tasks."""
    stimulus_id: str


class Unpause(NamedTuple):
    stimulus_id: str


class Reset(NamedTuple):
    """The connection to the scheduler was lost: the next one starts from nothing."""
    stimulus_id: str


# -- instructions -----------------------------------------------------------------------------

class Execute(NamedTuple):
    """Run ``fid(*args)`` on a thread, the inputs *deps* (``{key: value}``) substituted."""
    key: str
    fid: str | None
    args: bytes | None
    deps: dict | None
    want: bool


class Gather(NamedTuple):
    """Fetch *keys* from the peer *holder*; answer with FetchDone or FetchFailed."""
    holder: str
    keys: tuple


class Send(NamedTuple):
    """Messages to the scheduler, in order, as one batch."""
    msgs: list


class _EmptySet(frozenset):
    """Shared by the tasks that have no waiters or missing inputs (most of a big map)."""

    __slots__ = ()

    def discard(self, item):
        pass


EMPTY = _EmptySet()


class TaskState:
    __slots__ = ("key", "state", "fid", "args", "deps", "want", "priority", "run", "waiting_on",
                 "waiters", "nbytes", "type")

    def __init__(self, key, fid=None, args=None, deps=None, want=False, priority=0, run=False):
        self.key = key
        self.state = "released"
        self.fid = fid
        self.args = args
        self.deps = deps           # {key: [holders]} of the inputs
        self.want = want
        self.priority = priority
        self.run = run             # the scheduler asked this worker to compute it
        self.waiting_on = EMPTY    # keys of inputs not here yet (waiting)
        self.waiters = EMPTY       # tasks here (waiting or ready) that need this key
        self.nbytes = 0
        self.type = None

    def __repr__(self):
        return f"<Task {self.key!r} {self.state}>"


def _in_order(tasks):
    """A set of tasks in a deterministic order (priority, then key): instructions do not
    depend on hashing."""
    return sorted(tasks, key=lambda ts: (ts.priority, ts.key))


def lazy_random():
    import random  # on first use: a worker that never fetches does without it (memory)

    return random


class WorkerState:
    """What one worker knows: its tasks, the values it holds, what runs on its threads.

    ``handle_stimulus(*stimuli) -> instructions`` is the only way in; ``story(key)`` and
    ``validate_state()`` are for debugging and tests. The shell reads ``data`` (to serve
    peers) and the counters (for heartbeats), and changes nothing.
    """

    def __init__(self, address: str = "", nthreads: int = 1, prefetch: int = 2,
                 transition_log: int = 100_000, rng=None):
        self.address = address
        self.nthreads = nthreads
        self.prefetch = prefetch    # tasks handed to the threads beyond one each
        self.rng = rng              # .choice(holders): which peer to fetch an input from
        self.tasks: dict[str, TaskState] = {}
        self.data: dict = {}
        self.nbytes = 0             # of everything in data
        self.ready: list = []       # heap of (priority, seq, TaskState), stale entries skipped
        self.seq = 0
        self.executing = 0          # Execute instructions whose result has not come back
        self.executed = 0
        self.paused = False
        self.log: deque = deque(maxlen=transition_log)  # (key, old, new, stimulus id)
        self.stimulus_id = ""
        self._out: list = []        # instructions of the current step
        self._msgs: list = []       # messages to the scheduler of the current step
        self._gathers: dict = {}    # holder -> keys, grouped within one handle_stimulus call

    # -- the entry point ----------------------------------------------------------------------

    def handle_stimulus(self, *stimuli) -> list:
        """Apply each stimulus in order; return the instructions for the shell to carry out:
        a Send first (if any message), then Execute in priority order, then Gather."""
        handlers = _HANDLERS
        try:
            for ev in stimuli:
                self.stimulus_id = ev.stimulus_id
                handlers[type(ev)](self, ev)
            self._pump()
        except BaseException:
            self._out, self._msgs, self._gathers = [], [], {}  # none of it reaches the next step
            raise
        out = self._out
        if self._msgs:
            out.insert(0, Send(self._msgs))
            self._msgs = []
        if self._gathers:
            out.extend(Gather(holder, tuple(keys)) for holder, keys in self._gathers.items())
            self._gathers = {}
        self._out = []
        return out

    # -- transitions --------------------------------------------------------------------------

    def _set(self, ts, new):
        old = ts.state
        if new not in LEGAL[old]:
            raise InvalidTransition(f"{ts.key!r}: {old} -> {new} ({self.stimulus_id})")
        ts.state = new
        self.log.append((ts.key, old, new, self.stimulus_id))

    def _send(self, msg):
        self._msgs.append(msg)

    def _forget(self, ts):
        """Drop *ts*. Tasks here that still need its key fetch it from the holders the
        scheduler named, or give up (missing-data)."""
        if ts.state == "memory":
            del self.data[ts.key]
            self.nbytes -= ts.nbytes
        self._set(ts, "forgotten")
        tasks = self.tasks
        del tasks[ts.key]
        if ts.deps:  # its inputs need not be kept or fetched for it
            for dep in ts.deps:
                dts = tasks.get(dep)
                if dts is not None:
                    dts.waiters.discard(ts)
            ts.waiting_on = EMPTY
        if ts.waiters:
            waiters, ts.waiters = _in_order(ts.waiters), EMPTY
            for w in waiters:
                if w.state == "ready":
                    self._set(w, "waiting")
                self._wait_for(w, ts.key)

    def _missing(self, ts, dep, holders):
        """*ts* cannot get its input *dep*: the scheduler reschedules it."""
        self._send({"op": "missing-data", "key": ts.key, "dep": dep, "holders": holders})
        self._forget(ts)

    def _store(self, ts, value, nbytes):
        self._set(ts, "memory")
        self.data[ts.key] = value
        ts.nbytes = nbytes
        ts.type = type(value).__name__
        self.nbytes += nbytes
        if ts.waiters:
            for w in _in_order(ts.waiters):
                if w.state == "waiting":
                    w.waiting_on.discard(ts.key)
                    if not w.waiting_on:
                        self._ready(w)

    def _ready(self, ts):
        self._set(ts, "ready")
        self.seq += 1
        heapq.heappush(self.ready, (ts.priority, self.seq, ts))

    def _start(self, ts):
        """A task to compute here: wait for the inputs that are not here, else queue it."""
        ts.waiting_on = EMPTY
        if ts.deps:
            for dep in ts.deps:
                if not self._wait_for(ts, dep):
                    return
        if ts.waiting_on:
            self._set(ts, "waiting")
        else:
            self._ready(ts)

    def _wait_for(self, ts, dep) -> bool:
        """*ts* needs input *dep*. If it is not here, *ts* waits for it: fetched from a holder
        unless this worker is making it. With no other holder to ask, *ts* is forgotten and
        the scheduler told (missing-data, naming the holders it gave); returns False."""
        dts = self.tasks.get(dep)
        if dts is None:
            holders = ts.deps[dep]
            others = [h for h in holders if h != self.address]
            if not others:
                self._missing(ts, dep, list(holders))
                return False
            dts = self._fetch(dep, others)
        if dts.waiters is EMPTY:
            dts.waiters = {ts}
        else:
            dts.waiters.add(ts)
        if dts.state != "memory":
            if ts.waiting_on is EMPTY:
                ts.waiting_on = {dep}
            else:
                ts.waiting_on.add(dep)
        return True

    def _fetch(self, key, holders):
        holder = holders[0] if len(holders) == 1 else (self.rng or lazy_random()).choice(holders)
        ts = self.tasks[key] = TaskState(key)
        self._set(ts, "flight")
        self._gathers.setdefault(holder, []).append(key)
        return ts

    def _fetch_failed(self, ts, holders):
        """No value for the flight *ts*: compute it if the scheduler asked for it, else the
        tasks waiting for it give up (missing-data: the scheduler reschedules them)."""
        if ts.run:
            self._start(ts)
            return
        waiters, ts.waiters = _in_order(ts.waiters), EMPTY
        for w in waiters:
            self._missing(w, ts.key, holders)
        self._forget(ts)

    def _pump(self):
        """Hand ready tasks to the threads, in priority order, up to nthreads + prefetch."""
        if self.paused:
            return
        ready = self.ready
        limit = self.nthreads + self.prefetch
        while ready and self.executing < limit:
            ts = heapq.heappop(ready)[2]
            if ts.state != "ready":
                continue  # forgotten, or back to waiting for an input (pushed again later)
            self._set(ts, "executing")
            self.executing += 1
            depvals = None
            if ts.deps:
                data, tasks = self.data, self.tasks
                depvals = {d: data[d] for d in ts.deps}
                for d in ts.deps:
                    tasks[d].waiters.discard(ts)
            self._out.append(Execute(ts.key, ts.fid, ts.args, depvals, ts.want))

    # -- stimuli from the scheduler -----------------------------------------------------------

    def _compute(self, ev):
        key = ev.key
        ts = self.tasks.get(key)
        if ts is None:
            ts = self.tasks[key] = TaskState(key, ev.fid, ev.args, ev.deps, ev.want, ev.priority,
                                             True)
            if ev.deps:
                self._start(ts)
            else:
                self._ready(ts)
            return
        state = ts.state
        if state == "memory":
            self._send({"op": "task-finished", "key": key, "nbytes": ts.nbytes,
                        "type": ts.type})
            return
        ts.want = ev.want
        if state == "cancelled":
            self._set(ts, "executing")  # its result counts again
        elif state == "flight" and not ts.run:
            # reported when the value arrives; computed here if the fetch fails
            ts.fid, ts.args, ts.deps, ts.priority = ev.fid, ev.args, ev.deps, ev.priority
        ts.run = True

    def _free_keys(self, ev):
        tasks = self.tasks
        stored = []
        for key in ev.keys:
            ts = tasks.get(key)
            if ts is None:
                continue
            state = ts.state
            ts.run = False
            if state == "executing":
                self._set(ts, "cancelled")
            elif state == "memory":
                stored.append(ts)  # after the tasks freed with it, which may have needed it
            elif state == "flight":
                if not ts.waiters:
                    self._forget(ts)  # its value is dropped when it arrives
            elif state != "cancelled":
                self._forget(ts)
        for ts in stored:
            if ts.state == "memory":
                self._forget(ts)

    def _acquire_replicas(self, ev):
        for key, holders in ev.keys.items():
            if key not in self.tasks and holders:
                self._fetch(key, holders[:1])

    # -- stimuli from the threads -------------------------------------------------------------

    def _execute_success(self, ev):
        self.executing -= 1
        self.executed += 1
        ts = self.tasks.get(ev.key)
        if ts is None:
            return  # the worker reset meanwhile
        if ts.state == "cancelled":
            self._forget(ts)
        elif ts.state == "executing":
            self._store(ts, ev.value, ev.nbytes)
            msg = {"op": "task-finished", "key": ev.key, "nbytes": ev.nbytes, "type": ts.type,
                   "start": ev.start, "stop": ev.stop}
            if ev.data is not None:
                msg["data"] = ev.data
            self._msgs.append(msg)

    def _execute_failure(self, ev):
        self.executing -= 1
        self.executed += 1
        ts = self.tasks.get(ev.key)
        if ts is None or ts.state not in ("executing", "cancelled"):
            return
        if ts.state == "executing":
            self._send({"op": "task-erred", "key": ev.key, "exception": ev.exception,
                        "traceback": ev.traceback, "start": ev.start, "stop": ev.stop})
        self._forget(ts)

    # -- stimuli from peers -------------------------------------------------------------------

    def _fetch_done(self, ev):
        got = []
        data = ev.data
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != "flight":
                continue  # freed, or the worker reset, while it travelled
            if key in data:
                self._store(ts, data[key], ev.nbytes[key])
                if ts.run:
                    self._send({"op": "task-finished", "key": key, "nbytes": ts.nbytes,
                                "type": ts.type})
                got.append(key)
            else:
                self._fetch_failed(ts, [ev.holder])
        if got:
            self._send({"op": "add-keys", "keys": got})

    def _fetch_failed_event(self, ev):
        for key in ev.keys:
            ts = self.tasks.get(key)
            if ts is None or ts.state != "flight":
                continue
            if not ev.unpicklable or ts.run:
                self._fetch_failed(ts, [ev.holder])
                continue
            waiters, ts.waiters = _in_order(ts.waiters), EMPTY
            for w in waiters:
                exc = TypeError(f"input of {w.key!r} cannot be sent: {ev.unpicklable}")
                self._send({"op": "task-erred", "key": w.key, "exception": pickle.dumps(exc),
                            "traceback": "", "start": None, "stop": None})
                self._forget(w)
            self._forget(ts)

    # -- stimuli from the worker itself -------------------------------------------------------

    def _pause(self, ev):
        if not self.paused:
            self.paused = True
            self._send({"op": "worker-status", "status": "paused"})

    def _unpause(self, ev):
        if self.paused:
            self.paused = False
            self._send({"op": "worker-status", "status": "running"})

    def _reset(self, ev):
        """Forget everything. Tasks still on a thread come back to a worker that does not know
        them and their results are dropped (``executing`` counts them until then)."""
        for ts in self.tasks.values():
            self._set(ts, "forgotten")
            ts.waiters = ts.waiting_on = EMPTY
        self.tasks.clear()
        self.data.clear()
        self.nbytes = 0
        self.ready.clear()
        self._gathers.clear()
        self.paused = False  # the new connection starts running; the memory monitor re-pauses

    # -- queries ------------------------------------------------------------------------------

    def story(self, *keys):
        """The transitions of *keys*: (key, old state, new state, stimulus id), oldest first."""
        keys = set(keys)
        return [t for t in self.log if t[0] in keys]

    def validate_state(self):
        """Check every invariant; raises AssertionError naming the first broken one."""
        tasks = self.tasks
        running = 0
        for key, ts in tasks.items():
            s = ts.state
            assert ts.key == key and s in STATES, ts
            assert (s == "memory") == (key in self.data), ts
            if s not in ("flight", "memory"):
                assert ts.run == (s != "cancelled"), ts
            if s in NEEDS_INPUTS:
                for dep in ts.deps or ():
                    dts = tasks.get(dep)
                    assert dts is not None and ts in dts.waiters, (ts, dep)
                    assert (dep in ts.waiting_on) == (dts.state != "memory"), (ts, dts)
            else:
                assert not ts.waiting_on, ts
            if s == "waiting":
                assert ts.waiting_on, ts
            if s == "ready":
                assert any(e[2] is ts for e in self.ready), f"{ts} is not queued"
            for w in ts.waiters:
                assert w.state in NEEDS_INPUTS and tasks.get(w.key) is w, (ts, w)
                assert key in w.deps, (ts, w)
            if s in ("executing", "cancelled"):
                running += 1
        assert running <= self.executing <= self.nthreads + self.prefetch, self.executing
        assert set(self.data) <= set(tasks), set(self.data) - set(tasks)
        assert self.nbytes == sum(tasks[k].nbytes for k in self.data), self.nbytes


_HANDLERS = {
    ComputeTask: WorkerState._compute,
    FreeKeys: WorkerState._free_keys,
    AcquireReplicas: WorkerState._acquire_replicas,
    ExecuteSuccess: WorkerState._execute_success,
    ExecuteFailure: WorkerState._execute_failure,
    FetchDone: WorkerState._fetch_done,
    FetchFailed: WorkerState._fetch_failed_event,
    Pause: WorkerState._pause,
    Unpause: WorkerState._unpause,
    Reset: WorkerState._reset,
}

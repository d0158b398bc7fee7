"""What the scheduler's state is made of: tasks, task groups, workers, clients, legal transitions.

Plain slotted objects (one per task of a 20,000-task map: no dataclass machinery, no per-task
sets until a task needs one). Pure: used by scheduler_state.py and placement.py.
"""
from __future__ import annotations

from typing import Any

WANTED, LOOSE = 1, 2            # flags of a graph's task row (graph.py)
USER_PRIORITY = 1 << 40         # a graph task's priority: position - user priority * this

LEGAL = {
    ("released", "waiting"), ("released", "queued"), ("released", "no-worker"),
    ("released", "processing"), ("released", "erred"), ("released", "forgotten"),
    ("waiting", "queued"), ("waiting", "no-worker"), ("waiting", "processing"),
    ("waiting", "released"), ("waiting", "erred"), ("waiting", "forgotten"),
    ("queued", "processing"), ("queued", "released"), ("queued", "forgotten"),
    ("queued", "no-worker"), ("queued", "waiting"),           # tasks that wait for resources
    ("no-worker", "processing"), ("no-worker", "waiting"), ("no-worker", "released"),
    ("no-worker", "forgotten"), ("no-worker", "erred"), ("no-worker", "queued"),
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

    def discard(self, item: Any) -> None:
        pass


EMPTY: Any = _EmptySet()


class TaskState:
    __slots__ = ("key", "group", "fid", "args", "priority", "state", "dependencies", "dependents",
                 "waiting_on", "waiters", "who_has", "processing_on", "nbytes", "type", "retries",
                 "suspicious", "killed_on", "restrictions", "who_wants", "exception", "traceback",
                 "duration", "loose", "resources")

    def __init__(self, key: str, group: str, fid: str | None, args: Any, priority: int,
                 retries: int = 0, restrictions: set | None = None,
                 resources: dict | None = None):
        self.key = key
        self.group = group
        self.fid = fid
        self.args = args
        self.priority = priority
        self.state = "released"
        self.dependencies: Any = EMPTY
        self.dependents: Any = EMPTY
        self.waiting_on: Any = EMPTY
        self.waiters: Any = EMPTY
        self.who_has: Any = EMPTY  # becomes a set with the first worker that holds the result
        self.processing_on: WorkerState | None = None
        self.nbytes = 0
        self.type: str | None = None
        self.retries = retries
        self.suspicious = 0
        self.killed_on: list | None = None
        self.restrictions = restrictions
        self.who_wants: set = set()
        self.exception: Any = None
        self.traceback: Any = None
        self.duration: float | None = None
        self.loose = False  # restrictions are a preference (allow_other_workers)
        self.resources = resources  # {name: amount} it needs on its worker while it runs

    def __repr__(self) -> str:
        return f"<Task {self.key!r} {self.state}>"


class TaskGroup:
    """Tasks of one kind (the key's prefix): counts per state and timing, for progress and adapt."""

    __slots__ = ("name", "states", "duration", "done", "nbytes", "types")

    def __init__(self, name: str):
        self.name = name
        self.states = dict.fromkeys(STATES + ("forgotten",), 0)
        self.duration = 0.0
        self.done = 0
        self.nbytes = 0
        self.types: set = set()

    @property
    def average_duration(self) -> float | None:
        return self.duration / self.done if self.done else None


class WorkerState:
    __slots__ = ("address", "name", "nthreads", "memory_limit", "status", "processing", "has_what",
                 "nbytes", "functions", "last_seen", "metrics", "extra", "resources", "used")

    def __init__(self, address: str, name: str, nthreads: int, memory_limit: int,
                 now: float = 0.0, extra: dict | None = None, resources: dict | None = None):
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
        self.resources: dict = resources or {}  # declared: {name: amount}
        self.used: dict = {}        # {name: amount} held by its processing tasks

    def __repr__(self) -> str:
        return f"<Worker {self.address} {self.name} {self.status} processing={len(self.processing)}>"


class ClientState:
    __slots__ = ("id", "wants", "base", "failed")

    def __init__(self, cid: str):
        self.id = cid
        self.wants: set = set()
        self.base = 0  # priority of position 0 of the client's latest ordered graph
        self.failed: dict = {}  # key -> pickled error: tasks of its latest graph that cannot run

"""What cluster managers may ask of a scheduler: one interface, in this process or remote.

Cluster managers (``deploy/``, ``batch/``, the adaptive loop) hold a :class:`SchedulerAPI` and
nothing else of the scheduler: not its state, not its worker streams. Two implementations:

- :class:`InProcess` starts a :class:`~jobqueue.core.scheduler.Scheduler` on this process's event
  loop and answers from it directly;
- :class:`Remote` talks to a scheduler elsewhere (SSHCluster's scheduler host, ``jobqueue
  scheduler``) as a client, with the same messages a :class:`~jobqueue.core.client.Client` sends.
  It keeps a view of the workers that it refreshes in the background.

Every method is called on the event loop (the cluster's ``_sync`` gets there), except the
plain reads (``workers()``, ``log_text()``, ``address``, ``dashboard_link``).
"""
from __future__ import annotations

import abc
import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .comm import Comm

logger = logging.getLogger("jobqueue.scheduler_api")


@dataclass(frozen=True)
class WorkerView:
    """One connected worker as a cluster manager sees it."""
    address: str
    name: str
    nthreads: int
    memory_limit: int
    processing: int = 0          # tasks running on it or sent to it
    status: str = "running"      # running, paused, closing

    @classmethod
    def from_row(cls, address: str, row: dict) -> WorkerView:
        """From one entry of ``scheduler_info()["workers"]``."""
        return cls(address, str(row.get("name") or address), int(row.get("nthreads") or 0),
                   int(row.get("memory_limit") or 0), int(row.get("processing") or 0),
                   str(row.get("status") or "running"))


@dataclass(frozen=True)
class Load:
    """What adaptive scaling reads: the work and who is doing it."""
    tasks: dict = field(default_factory=dict)      # {task group: queued, waiting or processing}
    durations: dict = field(default_factory=dict)  # {task group: average seconds}
    workers: dict = field(default_factory=dict)    # {worker name: WorkerView}
    # (task group, {resource: amount}, number): tasks that request resources (not in tasks)
    resources: tuple = ()

    @classmethod
    def from_message(cls, msg: dict) -> Load:
        """From the scheduler's answer (``Scheduler.load()``, the ``adaptive-load`` op)."""
        workers = [WorkerView.from_row(a, row) for a, row in (msg.get("workers") or {}).items()]
        resources = tuple((str(g), dict(need), int(n)) for g, need, n in msg.get("resources") or ())
        return cls(dict(msg.get("tasks") or {}), dict(msg.get("durations") or {}),
                   {w.name: w for w in workers}, resources)


def _by_name(rows: dict) -> dict:
    views = (WorkerView.from_row(address, row) for address, row in rows.items())
    return {w.name: w for w in views}


class SchedulerAPI(abc.ABC):
    """The one interface between a cluster manager and its scheduler."""

    @property
    @abc.abstractmethod
    def address(self) -> str | None:
        """``tcp://host:port`` (or ``tls://``) once started, else None."""

    @property
    def security(self) -> Any:
        """The TLS settings (a :class:`~jobqueue.core.security.Security`) workers need to
        reach the scheduler, or None."""
        return None

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's URL (with its token when it needs one), or None."""
        return None

    @abc.abstractmethod
    async def start(self) -> SchedulerAPI:
        """Start (or reach) the scheduler; ``address`` is known afterwards."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the scheduler (it closes its workers first)."""

    @abc.abstractmethod
    def workers(self) -> dict[str, WorkerView]:
        """Connected workers by name: in this process exact; remote, as of the last refresh
        (every ``poll`` seconds while a worker is awaited, else every second)."""

    @abc.abstractmethod
    async def wait_for_worker_change(self, timeout: float) -> None:
        """Return when the set of workers may have changed, or after ``timeout`` seconds."""

    @abc.abstractmethod
    async def load(self) -> Load:
        """The current load, for the adaptive policy."""

    @abc.abstractmethod
    async def scheduler_info(self) -> dict:
        """What ``Client.scheduler_info()`` returns: address, workers, task counts, ..."""

    @abc.abstractmethod
    async def retire_workers(self, workers: list) -> list:
        """Close workers (names or addresses) gracefully: no new tasks, their running tasks
        finish, the results only they hold move to other workers. Their addresses."""

    @abc.abstractmethod
    async def close_workers(self, workers: list, reason: str = "") -> list:
        """Tell workers (names or addresses) to close now. The addresses of those told."""

    @abc.abstractmethod
    def log_text(self) -> str:
        """The scheduler's log."""

    def serve_cluster(self, jobs: Callable[[], list], logs: Callable[[str], Any]) -> None:
        """Let the scheduler's dashboard and ``jobqueue info`` show the cluster's jobs:
        ``jobs()`` -> [{name, id, state, reason, workers, ...}], ``logs(name)`` -> text."""

    def on_close(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` (on the event loop) when the scheduler closes by itself
        (``scheduler.idle-timeout``) or is lost."""

    def start_idle_clock(self) -> None:
        """The cluster has started: from now on, ``scheduler.idle-timeout`` without a client
        and a task closes the scheduler (a scheduler elsewhere keeps its own clock)."""


class InProcess(SchedulerAPI):
    """A :class:`~jobqueue.core.scheduler.Scheduler` on this process's event loop.

    ``server`` is that scheduler, for core code (the dashboard) and tests; cluster managers use
    the methods of :class:`SchedulerAPI` only."""

    def __init__(self, token: str, **options):
        from .scheduler import Scheduler

        self.server = Scheduler(token, idle_from_start=False, **options)
        self._on_close: list = []

    @property
    def address(self) -> str | None:
        return self.server.address

    @property
    def dashboard_link(self) -> str | None:
        return self.server.dashboard_link

    @property
    def security(self) -> Any:
        return self.server.security

    async def start(self) -> InProcess:
        await self.server.start()
        asyncio.get_running_loop().create_task(self._watch_close())
        return self

    async def _watch_close(self):
        await self.server.closed.wait()
        for callback in self._on_close:
            callback()

    async def close(self) -> None:
        self._on_close.clear()              # asked to close: not "closed by itself"
        await self.server.close()

    def workers(self) -> dict[str, WorkerView]:
        return {ws.name: WorkerView(ws.address, ws.name, ws.nthreads, ws.memory_limit,
                                    len(ws.processing), ws.status)
                for ws in list(self.server.state.workers.values())}

    async def wait_for_worker_change(self, timeout: float) -> None:
        await self.server.wait_for_worker_change(timeout)

    async def load(self) -> Load:
        return Load.from_message(self.server.load())

    async def scheduler_info(self) -> dict:
        return self.server.info()

    async def retire_workers(self, workers: list) -> list:
        return await self.server.retire_workers(list(workers))

    async def close_workers(self, workers: list, reason: str = "") -> list:
        return self.server.close_workers(list(workers), reason)

    def log_text(self) -> str:
        return self.server.log.text()

    def serve_cluster(self, jobs, logs) -> None:
        self.server.jobs_provider = jobs
        self.server.logs_provider = logs

    def on_close(self, callback) -> None:
        self._on_close.append(callback)

    def start_idle_clock(self) -> None:
        self.server.start_idle_clock()


class Remote(SchedulerAPI):
    """A scheduler on another host (or process), reached at ``address`` as a client.

    Requests are the ops every client may send (``scheduler-info``, ``adaptive-load``,
    ``retire-workers``, ``close-workers``); the worker view is refreshed in the background,
    every ``poll`` seconds while ``expecting()`` says a worker is awaited, else every second."""

    address: str | None = None      # set once known

    def __init__(self, token: str, address: str | None = None, name: str = "cluster",
                 poll: float = 0.1, expecting: Callable[[], bool] | None = None,
                 security: Any = None):
        self.token = token
        self.address = address
        self._security = security
        self.name = name
        self.poll = poll
        self.expecting = expecting or (lambda: False)
        self.status = "init"
        self.comm: Comm | None = None
        self._info: dict = {"address": address, "workers": {}}
        self._workers: dict = {}
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._rid = 0
        self._poller: asyncio.Task | None = None
        self._on_close: list = []

    async def start(self) -> Remote:
        from .comm import connect

        if self.address is None:
            raise RuntimeError("Remote: no scheduler address to connect to")
        self.comm = comm = await connect(self.address, self.token, security=self._security)
        await comm.write([{"op": "register-client", "id": f"{self.name}-cluster"}])
        (reply,) = await comm.read()
        if reply.get("op") != "welcome":
            comm.abort()
            raise RuntimeError(f"the scheduler at {self.address} refused this cluster: "
                               f"{reply.get('message')}")
        await self.refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        self.status = "running"
        return self

    async def _request(self, op: str, **fields):
        comm = self.comm
        if comm is None:
            raise RuntimeError(f"not connected to the scheduler at {self.address}")
        async with self._lock:
            self._rid += 1
            rid = self._rid
            await comm.write([{"op": op, "rid": rid, **fields}])
            while True:
                for msg in await comm.read():
                    if msg.get("op") == "reply" and msg.get("rid") == rid:
                        if msg.get("error"):
                            raise RuntimeError(f"scheduler at {self.address}: {msg['error']}")
                        return msg.get("result")

    async def refresh(self) -> None:
        """Ask the scheduler afresh for its workers."""
        self._info = await self._request("scheduler-info")
        workers = _by_name(self._info.get("workers") or {})
        if set(workers) != set(self._workers):
            self._changed.set()
            self._changed = asyncio.Event()
        self._workers = workers

    async def _poll(self):
        from .errors import CommClosedError
        from .protocol import ProtocolError

        while self.status == "running":
            await asyncio.sleep(self.poll if self.expecting() else max(self.poll, 1.0))
            try:
                await self.refresh()
            except (CommClosedError, ProtocolError, OSError, RuntimeError) as e:
                if self.status == "running":
                    logger.error("lost the scheduler at %s: %s%s", self.address, e,
                                 self.lost_because())
                    self.status = "lost"
                    self._changed.set()
                    for callback in self._on_close:
                        callback()
                return

    @property
    def security(self) -> Any:
        return self._security

    def lost_because(self) -> str:
        """More about why the scheduler is gone, if a subclass knows (its ssh session)."""
        return ""

    async def close(self) -> None:
        from .errors import CommClosedError

        if self.status == "closed":
            return
        self.status = "closed"
        if self._poller is not None:
            self._poller.cancel()
        if self.comm is not None:
            try:
                await self.comm.write([{"op": "close-client"}])
            except CommClosedError:
                pass
            self.comm.abort()

    def workers(self) -> dict[str, WorkerView]:
        return dict(self._workers)

    async def wait_for_worker_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def load(self) -> Load:
        return Load.from_message(await self._request("adaptive-load"))

    async def scheduler_info(self) -> dict:
        if self.status == "running":
            await self.refresh()
        return self._info

    async def retire_workers(self, workers: list) -> list:
        return await self._request("retire-workers", workers=list(workers))

    async def close_workers(self, workers: list, reason: str = "") -> list:
        if self.status != "running":
            return []
        return await self._request("close-workers", workers=list(workers), reason=reason)

    def log_text(self) -> str:
        return ""

    def on_close(self, callback) -> None:
        self._on_close.append(callback)


async def wait_for_workers(api: SchedulerAPI, names, timeout: float,
                           problem: Callable[[], str | None] = lambda: None,
                           check_every: float = 0.5) -> None:
    """Wait until every worker in ``names`` is connected. Raises RuntimeError with
    ``problem()`` as soon as it says something (e.g. a job failed to start) and TimeoutError
    after ``timeout`` seconds."""
    names = set(names)
    deadline = time.monotonic() + timeout
    while True:
        missing = names - set(api.workers())
        if not missing:
            return
        why = problem()
        if why:
            raise RuntimeError(why)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"workers {sorted(missing)} did not connect to {api.address} "
                               f"within {timeout:g} s")
        await api.wait_for_worker_change(min(left, check_every))


# -- logging per cluster ------------------------------------------------------------------------

def log_scope(scope: str):
    """A context manager: lines logged inside it (in this thread or task) belong to ``scope``
    (a cluster's name) and go to that cluster's ``get_logs()`` only."""
    import contextlib

    from .scheduler import LOG_SCOPE

    @contextlib.contextmanager
    def scoped():
        token = LOG_SCOPE.set(scope)
        try:
            yield
        finally:
            LOG_SCOPE.reset(token)

    return scoped()


async def in_scope(scope: str, coro):
    """Await ``coro`` with its log lines, and those of every task it starts, in ``scope``."""
    from .scheduler import LOG_SCOPE

    LOG_SCOPE.set(scope)        # this task's own context: nothing else sees it
    return await coro

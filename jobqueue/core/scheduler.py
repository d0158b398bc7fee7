"""The scheduler's I/O shell: server, message handlers, batched streams, heartbeats.

All decisions are made by :class:`~jobqueue.core.scheduler_state.SchedulerState`; this module
decodes messages (never user pickles), feeds them in as stimuli and sends what comes out.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
import shutil
import tempfile
import time
from collections import deque
from typing import Any

from .. import node
from ..node import read_scheduler_file, write_scheduler_file  # noqa: F401 (their old home)
from . import protocol
from .comm import BatchedSend, CommClosedError, Listener, format_address
from .placement import check_resources, format_resources
from .scheduler_state import SchedulerState
from .security import Security

logger = logging.getLogger("jobqueue.scheduler")

# Whose work the current code is doing: a cluster's name, or a scheduler's own scope. Set where a
# cluster or scheduler starts its work on the event loop; asyncio tasks (and the connections a
# listener accepts) inherit it, so each log line can be told apart by cluster.
LOG_SCOPE: contextvars.ContextVar = contextvars.ContextVar("jobqueue_log_scope", default=None)


class LogBuffer(logging.Handler):
    """Keeps the last lines logged for one scope (one cluster), for ``get_logs()``.

    A line logged on behalf of another cluster is not kept; one logged outside any cluster
    (e.g. by a Client of this process) is kept by every buffer: unattributed, not lost."""

    def __init__(self, scope=None, n=10_000):
        super().__init__(logging.INFO)
        self.scope = scope
        self.lines = deque(maxlen=n)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def filter(self, record):
        scope = LOG_SCOPE.get()
        return scope is None or scope == self.scope

    def emit(self, record):
        try:
            self.lines.append(self.format(record))
        except Exception:
            pass

    def text(self):
        return "\n".join(self.lines)


class MalformedMessage(Exception):
    pass


NONE = type(None)
BLOB = (bytes, memoryview)
STR_LIST = "list of str"

# The fields each message must carry, checked before the message reaches the state machine:
# an authenticated but broken (or hostile) peer gets its connection closed, and the state
# is never left half-updated by a wrong type.
SCHEMAS: dict[str, dict[str, Any]] = {
    "task-finished": {"key": str, "nbytes": int, "type": (str, NONE), "start": (int, float, NONE),
                      "stop": (int, float, NONE), "data": (*BLOB, NONE)},
    "task-erred": {"key": str, "exception": (*BLOB, NONE), "traceback": (str, NONE),
                   "start": (int, float, NONE), "stop": (int, float, NONE)},
    "add-keys": {"keys": STR_LIST},
    "missing-data": {"key": str, "dep": str, "holders": STR_LIST},
    "heartbeat": {"metrics": (dict, NONE)},
    "worker-status": {"status": str},
    "run-result": {"status": str},
    "retire-self": {},
    "update-graph": {"tasks": list, "functions": (dict, NONE), "graph": (int, NONE)},
    "retry": {"keys": STR_LIST},
    "terminate": {},
    "release-keys": {"keys": STR_LIST},
    "cancel": {"keys": STR_LIST},
    "who-has": {"keys": STR_LIST},
    "scheduler-info": {},
    "run": {"func": BLOB},
    "close-workers": {"workers": STR_LIST},
    "retire-workers": {"workers": STR_LIST},
    "replicate": {"keys": STR_LIST},
    "adaptive-load": {},
}
TASK_FIELDS = ((str, "key"), (str, "group"), ((str, NONE), "fid"), ((*BLOB, NONE), "args"),
               (STR_LIST, "dependencies"), ((STR_LIST, NONE), "restrictions"), (int, "retries"),
               (int, "priority"), (int, "flags"))


def _is(value, kind) -> bool:
    if kind == STR_LIST:
        return type(value) is list and all(type(x) is str for x in value)
    if type(kind) is tuple and STR_LIST in kind:
        return any(_is(value, k) for k in kind)
    return isinstance(value, kind)


def check_message(msg: dict) -> None:
    schema = SCHEMAS.get(msg["op"])
    if schema is None:
        raise MalformedMessage(f"unknown op {msg['op']!r}")
    for name, kind in schema.items():
        if not _is(msg.get(name), kind):
            raise MalformedMessage(f"{msg['op']!r} message: {name!r} must be {kind}, "
                                   f"got {type(msg.get(name)).__name__}")


def check_task(task) -> None:
    # Written out (not a loop over TASK_FIELDS): this runs once per task on the hot path.
    if type(task) is not list or (len(task) != 7 and len(task) != 9):
        raise MalformedMessage("update-graph: each task is [key, group, fid, args, "
                               "dependencies, restrictions, retries] or a graph's task, "
                               "[..., priority, flags]")
    if len(task) == 9 and not (type(task[7]) is int and type(task[8]) is int):
        raise MalformedMessage("update-graph: a graph task's priority and flags are ints")
    key, group, fid, args, deps, restrictions, retries = task[:7]
    if not (type(key) is str and type(group) is str and (fid is None or type(fid) is str)
            and (args is None or type(args) is bytes or type(args) is memoryview)
            and type(deps) is list and (restrictions is None or type(restrictions) is list
                                        or type(restrictions) is dict)
            and type(retries) is int and retries >= 0):
        for value, (kind, name) in zip(task, TASK_FIELDS):
            if not _is(value, kind):
                raise MalformedMessage(f"update-graph: task field {name!r} has type "
                                       f"{type(value).__name__}")
        raise MalformedMessage("update-graph: retries must be >= 0")
    for d in deps:
        if type(d) is not str:
            raise MalformedMessage("update-graph: dependencies must be keys (str)")
    if restrictions is not None:
        if type(restrictions) is dict:
            _check_restrictions(restrictions)
            restrictions = restrictions.get("workers") or ()
        for r in restrictions:
            if type(r) is not str:
                raise MalformedMessage("update-graph: restrictions must be str")


def _check_restrictions(restrictions: dict) -> None:
    """{"workers": [str] or None, "resources": {str: number >= 0}} (placement.py)."""
    if set(restrictions) - {"workers", "resources"} or not (
            restrictions.get("workers") is None or _is(restrictions["workers"], STR_LIST)):
        raise MalformedMessage("update-graph: restrictions are a list of workers or "
                               "{'workers': [...], 'resources': {name: amount}}")
    try:
        check_resources(restrictions.get("resources") or {})
    except ValueError as e:
        raise MalformedMessage(f"update-graph: {e}") from None


def _check_task_finished(msg) -> bool:
    """The most frequent message, checked inline; the generic check explains failures."""
    start, stop, data = msg.get("start"), msg.get("stop"), msg.get("data")
    return (type(msg.get("key")) is str and type(msg.get("nbytes")) is int
            and (start is None or type(start) is float) and (stop is None or type(stop) is float)
            and (data is None or type(data) is bytes or type(data) is memoryview)
            and (msg.get("type") is None or type(msg.get("type")) is str))


def _field(msg, name, kind):
    value = msg.get(name)
    if not isinstance(value, kind):
        raise MalformedMessage(f"{msg.get('op')!r} message needs {name!r} of type "
                               f"{getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


class Scheduler:
    def __init__(self, token=None, host: str = "127.0.0.1", port: int = 0,
                 allowed_failures: int = 3, worker_ttl: float | None = 300.0,
                 scheduler_file: str | None = None, dashboard_address=None,
                 idle_timeout: float | None = None, security: Security | None = None,
                 temp_directory: str | None = None, idle_from_start: bool = True):
        self.token = token or secrets.token_urlsafe(32)
        self.security = security  # None: from the config, at start
        self.temp_directory = temp_directory  # temporary certificates (None: ~/.jobqueue)
        self._tls_dir = None
        self.host = host
        self.port = port
        self.worker_ttl = worker_ttl
        self.idle_timeout = idle_timeout     # None: never close for lack of work
        # False: the idle clock waits for start_idle_clock() (a cluster still starting its
        # first workers, which may take longer than idle_timeout, is not idle)
        self.idle_from_start = idle_from_start
        self._idle_clock: asyncio.Task | None = None
        self.scheduler_file = scheduler_file
        self.dashboard_address = dashboard_address  # None: no dashboard
        self.dashboard = None
        # Set by the cluster that owns this scheduler, read by the dashboard on request:
        # jobs_provider() -> [{name, id, state, reason, workers, ...}], logs_provider(name) -> text
        self.jobs_provider = None
        self.logs_provider = None
        self.state = SchedulerState(allowed_failures=allowed_failures)
        self.worker_streams: dict[str, BatchedSend] = {}
        self.client_streams: dict[str, BatchedSend] = {}
        self.runs: dict = {}
        self.listener: Listener | None = None
        self.address = None
        self.status = "init"
        self.started = time.time()
        self.log = LogBuffer()
        self.closed = asyncio.Event()      # set once close() has finished
        self._workers_changed: list = []   # futures of callers waiting for a worker to come/go
        self._tasks: list = []
        self._rid = 0
        self.worker_handlers = {
            "task-finished": self._task_finished, "task-erred": self._task_erred,
            "add-keys": self._add_keys, "missing-data": self._missing_data,
            "heartbeat": self._heartbeat, "worker-status": self._worker_status,
            "run-result": self._run_result, "retire-self": self._retire_self,
        }
        self.client_handlers = {
            "update-graph": self._update_graph, "release-keys": self._release_keys,
            "cancel": self._cancel, "who-has": self._who_has, "scheduler-info": self._info,
            "run": self._run, "close-workers": self._close_workers,
            "retire-workers": self._retire_workers, "replicate": self._replicate,
            "adaptive-load": self._adaptive_load, "retry": self._retry,
            "terminate": self._terminate,
        }

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self):
        # Everything this scheduler does from here on (its tasks, the connections it accepts)
        # logs under one scope: the owning cluster's if it set one, else the scheduler's own.
        if LOG_SCOPE.get() is None:
            LOG_SCOPE.set(f"scheduler-{id(self):x}")
        self.log.scope = LOG_SCOPE.get()
        root = logging.getLogger("jobqueue")
        root.addHandler(self.log)
        if root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        security = self.security or Security.from_config()
        if security.tls and not security.complete:
            self._tls_dir = tempfile.mkdtemp(prefix="tls-",
                                             dir=self.temp_directory or node.private_directory())
            security = security.ready(self._tls_dir)
        self.security = security
        self.listener = Listener(self.token, self._handle, security=security)
        port = await self.listener.start(self.host, self.port)
        host = self.host if self.host not in ("", "0.0.0.0") else node.public_address()
        self.address = format_address(host, port, self.listener.scheme)
        self.listener.serve_in_process(self.address)
        self.status = "running"
        loop = asyncio.get_running_loop()
        if self.worker_ttl is not None:  # None: never remove a silent worker
            self._tasks.append(loop.create_task(self._check_workers()))
        if self.idle_from_start:
            self.start_idle_clock()
        if self.scheduler_file:
            try:
                write_scheduler_file(self.scheduler_file, self.address, self.token,
                                     self.security.env())
            except OSError:
                self.scheduler_file = None      # not ours: close() must not remove it
                await self.close(close_workers=False)
                raise
        logger.info("scheduler listening at %s", self.address)
        if self.dashboard_address is not None:
            from .dashboard import Dashboard

            try:
                self.dashboard = await Dashboard(self, self.dashboard_address).start()
            except BaseException:
                await self.close(close_workers=False)
                raise
        return self

    async def close(self, close_workers: bool = True, timeout: float = 2.0):
        if self.status == "closed":
            return
        self.status = "closing"
        if close_workers and self.worker_streams:
            for bs in self.worker_streams.values():
                bs.send({"op": "close", "reason": "scheduler closing"})
            deadline = time.monotonic() + timeout
            while self.worker_streams and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.listener is not None:
            self.listener.stop()
        for bs in list(self.worker_streams.values()) + list(self.client_streams.values()):
            bs.close()
        self.status = "closed"
        node.remove_private(self.scheduler_file)
        if self._tls_dir is not None:
            shutil.rmtree(self._tls_dir, ignore_errors=True)
        logger.info("scheduler at %s closed", self.address)
        logging.getLogger("jobqueue").removeHandler(self.log)
        self._worker_change()
        self.closed.set()

    def start_idle_clock(self) -> None:
        """Close after ``idle_timeout`` without a client and without a task, counted from now."""
        if self.idle_timeout is not None and self._idle_clock is None and \
                self.status == "running":
            self._idle_clock = asyncio.get_running_loop().create_task(self._check_idle())
            self._tasks.append(self._idle_clock)

    async def _check_idle(self):
        """Close after ``idle_timeout`` without a client and without a task."""
        interval = max(0.05, min(self.idle_timeout / 4, 5.0))
        idle_since = time.monotonic()
        while self.status == "running":
            await asyncio.sleep(interval)
            if self.state.clients or self.state.tasks:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.idle_timeout:
                logger.info("no client and no task for %g s (scheduler.idle-timeout): closing",
                            self.idle_timeout)
                await self.close()          # it cancels the other tasks, not this one
                return

    def _worker_change(self):
        """Wake whoever waits for a worker to arrive or leave (wait_for_worker_change)."""
        waiters, self._workers_changed = self._workers_changed, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_for_worker_change(self, timeout: float) -> None:
        """Return when a worker arrived or left, or after ``timeout`` seconds."""
        fut = asyncio.get_running_loop().create_future()
        self._workers_changed.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            pass

    async def _check_workers(self):
        interval = max(0.2, min(self.worker_ttl / 10, 5.0))
        while True:
            await asyncio.sleep(interval)
            for address in self.state.stale_workers(time.monotonic(), self.worker_ttl):
                logger.warning("worker %s missed heartbeats for %g s (worker-ttl): removing it",
                               address, self.worker_ttl)
                self._drop_worker(address, "worker-ttl")

    def _flush(self):
        wout, cout = self.state.take()
        for address, msgs in wout.items():
            bs = self.worker_streams.get(address)
            if bs is not None:
                bs.send_many(msgs)
        for cid, msgs in cout.items():
            bs = self.client_streams.get(cid)
            if bs is not None:
                bs.send_many(msgs)

    # -- connections --------------------------------------------------------------------------

    async def _handle(self, comm):
        msgs = await comm.read()
        first = msgs[0]
        op = first["op"]
        if op == "register-worker":
            await self._worker_connection(comm, first)
        elif op == "register-client":
            await self._client_connection(comm, first)
        elif op == "identity":
            await comm.write([{"op": "identity", "address": self.address,
                               "workers": len(self.state.workers)}])
        else:
            await comm.write([{"op": "error", "message": f"unknown first message {op!r}"}])

    async def _worker_connection(self, comm, msg):
        try:
            address = _field(msg, "address", str)
            name = str(msg.get("name") or address)
            nthreads = int(msg.get("nthreads", 1))
            memory_limit = int(msg.get("memory_limit") or 0)
            resources = check_resources(msg.get("resources") or {}, "the worker's resources")
        except (MalformedMessage, TypeError, ValueError) as e:
            await comm.write([{"op": "error", "message": str(e)}])
            return
        now = time.monotonic()
        error = self.state.add_worker(address, name, nthreads, memory_limit, now,
                                      resources=resources, pid=msg.get("pid"),
                                      host=msg.get("host"))
        if error:
            logger.warning("refused worker %s: %s", address, error)
            await comm.write([{"op": "error", "message": error}])
            return
        await comm.write([{"op": "welcome"}])
        bs = BatchedSend(comm)
        self.worker_streams[address] = bs
        logger.info("worker %s (%s, %d threads%s) joined", address, name, nthreads,
                    f", resources {format_resources(resources)}" if resources else "")
        self._flush()
        self._worker_change()
        handlers = self.worker_handlers
        task_finished = handlers["task-finished"]

        def on_batch(msgs):
            for msg in msgs:
                handler = handlers.get(msg["op"])
                if handler is None:
                    raise MalformedMessage(f"unknown op {msg['op']!r}")
                if handler is not task_finished or not _check_task_finished(msg):
                    check_message(msg)
                handler(address, msg)
            self._flush()

        try:
            await comm.dispatch(on_batch)
        except MalformedMessage as e:
            logger.warning("closing worker %s: %s", address, e)
        except (CommClosedError, protocol.ProtocolError) as e:
            if self.status == "running":
                logger.info("worker %s left: %s", address, e)
        finally:
            if self.worker_streams.get(address) is bs:
                self._drop_worker(address, "connection closed")

    def _drop_worker(self, address, reason):
        bs = self.worker_streams.pop(address, None)
        if bs is not None:
            bs.close()
        self.state.remove_worker(address, time.monotonic(), reason)
        self._worker_change()
        for run in list(self.runs.values()):
            if address in run["pending"]:
                run["pending"].discard(address)
                run["results"][address] = {"status": "error", "exception": None,
                                           "traceback": f"worker {address} left"}
                self._finish_run(run)
        self._flush()

    async def _client_connection(self, comm, msg):
        cid = msg.get("id")
        if not isinstance(cid, str) or cid in self.client_streams:
            await comm.write([{"op": "error", "message": f"bad or duplicate client id {cid!r}"}])
            return
        self.state.add_client(cid)
        await comm.write([{"op": "welcome", "address": self.address}])
        bs = BatchedSend(comm)
        self.client_streams[cid] = bs
        handlers = self.client_handlers

        def on_batch(msgs):
            for msg in msgs:
                op = msg["op"]
                if op == "close-client":
                    return True
                handler = handlers.get(op)
                if handler is None:
                    raise MalformedMessage(f"unknown op {op!r}")
                check_message(msg)
                handler(cid, msg)
            self._flush()

        try:
            await comm.dispatch(on_batch)
        except MalformedMessage as e:
            logger.warning("closing client %s: %s", cid, e)
        except (CommClosedError, protocol.ProtocolError) as e:
            logger.debug("client %s left: %s", cid, e)
        finally:
            del self.client_streams[cid]
            bs.close()
            self.state.remove_client(cid)
            self._flush()

    def _reply(self, cid, msg, result=None, error=None):
        bs = self.client_streams.get(cid)
        if bs is not None:
            bs.send({"op": "reply", "rid": msg.get("rid"), "result": result, "error": error})

    # -- worker messages ----------------------------------------------------------------------

    def _task_finished(self, address, msg):
        self.state.task_finished(address, msg["key"], msg["nbytes"],
                                 msg.get("type"), msg.get("start"), msg.get("stop"),
                                 msg.get("data"))

    def _task_erred(self, address, msg):
        self.state.task_erred(address, msg["key"], msg.get("exception"),
                              msg.get("traceback"), msg.get("start"), msg.get("stop"))

    def _add_keys(self, address, msg):
        self.state.add_keys(address, msg["keys"])

    def _missing_data(self, address, msg):
        self.state.missing_data(address, msg["key"], msg["dep"], msg["holders"])

    def _heartbeat(self, address, msg):
        self.state.heartbeat(address, time.monotonic(), msg.get("metrics"))

    def _worker_status(self, address, msg):
        status = msg["status"]
        if status not in ("running", "paused"):
            raise MalformedMessage(f"unknown worker status {status!r}")
        self.state.worker_status(address, status)

    def _retire_self(self, address, msg):
        """The worker reached its lifetime (walltime ahead): retire it gracefully."""
        task = asyncio.get_running_loop().create_task(self.retire_workers([address]))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _run_result(self, address, msg):
        run = self.runs.get(msg.get("rid"))
        if run is not None and address in run["pending"]:
            run["pending"].discard(address)
            run["results"][address] = {k: msg.get(k) for k in
                                       ("status", "result", "exception", "traceback")}
            self._finish_run(run)

    def _finish_run(self, run):
        if not run["pending"]:
            self.runs.pop(run["rid"], None)
            self._reply(run["cid"], run["msg"], result=run["results"])

    # -- client messages ----------------------------------------------------------------------

    def _update_graph(self, cid, msg):
        tasks = msg["tasks"]
        for t in tasks:
            check_task(t)
        functions = msg.get("functions") or {}
        for fid, blob in functions.items():
            if type(fid) is not str or not isinstance(blob, BLOB):
                raise MalformedMessage("update-graph: functions map ids to bytes")
        self.state.update_graph(cid, tasks, functions, msg.get("graph"))

    def _retry(self, cid, msg):
        self.state.retry(cid, msg["keys"])

    def _terminate(self, cid, msg):
        """A client's shutdown(): close the workers and this scheduler."""
        logger.info("client %s asked the scheduler to shut down", cid)
        self._reply(cid, msg, True)
        task = asyncio.get_running_loop().create_task(self.close())
        self._tasks.append(task)

    def _release_keys(self, cid, msg):
        self.state.release_keys(cid, msg["keys"])

    def _cancel(self, cid, msg):
        self.state.cancel(cid, msg["keys"])

    def _who_has(self, cid, msg):
        self._reply(cid, msg, self.state.who_has(msg["keys"]))

    def _info(self, cid, msg):
        info = self.info()
        if self.jobs_provider is not None:      # the owning cluster's jobs, for `jobqueue info`
            try:
                info["jobs"] = [dict(job) for job in self.jobs_provider()]
            except Exception:
                logger.exception("listing the cluster's jobs failed")
        self._reply(cid, msg, info)

    def _run(self, cid, msg):
        targets = msg.get("workers")
        if not _is(targets, STR_LIST):
            targets = list(self.worker_streams)
        targets = [self._resolve(w) for w in targets]
        self._rid += 1
        run = {"rid": self._rid, "cid": cid, "msg": msg, "pending": set(), "results": {}}
        for address in targets:
            bs = self.worker_streams.get(address)
            if bs is None:
                run["results"][address] = {"status": "error", "exception": None,
                                           "traceback": f"no worker {address}"}
            else:
                run["pending"].add(address)
                bs.send({"op": "run", "rid": self._rid, "func": msg.get("func")})
        self.runs[self._rid] = run
        self._finish_run(run)

    def _close_workers(self, cid, msg):
        self._reply(cid, msg, self.close_workers(msg["workers"], msg.get("reason")))

    def close_workers(self, workers, reason=None) -> list:
        """Tell workers (names or addresses) to close now; the addresses of those told."""
        closed = []
        for w in workers:
            address = self._resolve(w)
            bs = self.worker_streams.get(address)
            if bs is not None:
                bs.send({"op": "close", "reason": str(reason or "closed by the cluster")})
                closed.append(address)
        return closed

    def _adaptive_load(self, cid, msg):
        self._reply(cid, msg, self.load())

    def load(self) -> dict:
        """What adaptive scaling needs: ``{"tasks": {group: queued, waiting or processing},
        "durations": {group: average seconds}, "workers": worker_rows(), "resources":
        [[group, {resource: amount}, n]]}``; tasks that request resources are counted in
        "resources" only (new workers help them only if they declare those resources)."""
        tasks: dict = {}
        durations = {}
        for group in self.state.groups.values():
            s = group.states
            n = s["queued"] + s["no-worker"] + s["waiting"] + s["processing"]
            if n:
                tasks[group.name] = n
            if group.average_duration is not None:
                durations[group.name] = group.average_duration
        resources = self.state.resource_load()
        for group, _, n in resources:
            tasks[group] -= n
            if not tasks[group]:
                del tasks[group]
        return {"tasks": tasks, "durations": durations, "workers": self.worker_rows(),
                "resources": [list(r) for r in resources]}

    def _replicate(self, cid, msg):
        workers = msg.get("workers")
        if workers is not None and not _is(workers, STR_LIST):
            raise MalformedMessage("replicate: workers must be a list of str or null")

        async def replicate():
            try:
                self._reply(cid, msg, await self.replicate(msg["keys"], workers))
            except Exception as e:
                self._reply(cid, msg, error=f"replicate failed: {e}")

        task = asyncio.get_running_loop().create_task(replicate())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def replicate(self, keys, workers=None, timeout: float = 60.0) -> dict:
        """Copy the results ``keys`` to every running worker (of ``workers``, names or
        addresses, if given; ``scatter(broadcast=True)``): each worker that lacks one fetches
        it from a holder. ``{key: [holders]}`` at the end."""
        state = self.state
        deadline = time.monotonic() + timeout
        targets = None if workers is None else {self._resolve(w) for w in workers}

        def missing():
            plan: dict = {}
            for key in keys:
                ts = state.tasks.get(key)
                if ts is None or ts.state != "memory":
                    continue
                holders = [ws.address for ws in ts.who_has]
                for ws in state.workers.values():
                    if ws.status == "running" and ws not in ts.who_has and (
                            targets is None or ws.address in targets):
                        plan.setdefault(ws.address, {})[key] = holders
            return plan

        asked: set = set()
        while (plan := missing()) and time.monotonic() < deadline:
            for address, wanted in plan.items():
                todo = {k: h for k, h in wanted.items() if (address, k) not in asked}
                bs = self.worker_streams.get(address)
                if todo and bs is not None:
                    bs.send({"op": "acquire-replicas", "keys": todo})
                    asked.update((address, k) for k in todo)
            await asyncio.sleep(0.01)
        return state.who_has(keys)

    def _retire_workers(self, cid, msg):
        workers = [self._resolve(w) for w in msg["workers"]]

        async def retire():
            try:
                result = await self.retire_workers(workers)
                self._reply(cid, msg, result)
            except Exception as e:
                self._reply(cid, msg, error=f"retire-workers failed: {e}")

        task = asyncio.get_running_loop().create_task(retire())
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def retire_workers(self, workers, timeout: float = 60.0) -> list:
        """Close workers gracefully: they take no new tasks, finish what they have, and the
        results only they hold (and that are still needed) are copied to other workers first."""
        state = self.state
        workers = [self._resolve(w) for w in workers if self._resolve(w) in state.workers]
        state.retire(workers)
        self._flush()
        deadline = time.monotonic() + timeout
        while any(state.workers[w].processing for w in workers if w in state.workers):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        for _ in range(3):  # copy what only they hold; again if a copy failed
            pending: dict = {}
            for address in workers:
                for target, keys in state.replicate_plan(address).items():
                    pending.setdefault(target, {}).update(keys)
            if not pending:
                break
            for target, keys in pending.items():
                bs = self.worker_streams.get(target)
                if bs is not None:
                    bs.send({"op": "acquire-replicas", "keys": keys})
            wanted = {k for keys in pending.values() for k in keys}
            while time.monotonic() < deadline:
                if all(len(state.tasks[k].who_has) > 1 for k in wanted
                       if k in state.tasks and state.tasks[k].state == "memory"):
                    break
                await asyncio.sleep(0.01)
        for address in workers:
            bs = self.worker_streams.get(address)
            if bs is not None:
                bs.send({"op": "close", "reason": "retired"})
        while any(w in self.worker_streams for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for address in workers:
            if address in self.worker_streams:
                self._drop_worker(address, "retired (did not close in time)")
        logger.info("retired %d workers", len(workers))
        return workers

    def _resolve(self, name_or_address):
        ws = self.state.names.get(name_or_address)
        return ws.address if ws is not None else name_or_address

    # -- queries ------------------------------------------------------------------------------

    @property
    def dashboard_link(self):
        return self.dashboard.link if self.dashboard is not None else None

    def worker_rows(self) -> dict:
        """``{address: {name, nthreads, memory_limit, status, processing, ...}}``."""
        return {ws.address: {
            "name": ws.name, "nthreads": ws.nthreads, "memory_limit": ws.memory_limit,
            "status": ws.status, "processing": len(ws.processing),
            "stored": len(ws.has_what), "nbytes": ws.nbytes, "metrics": ws.metrics,
            "resources": ws.resources, "used_resources": dict(ws.used), **ws.extra}
            for ws in self.state.workers.values()}

    def info(self) -> dict:
        workers = self.worker_rows()
        counts: dict = {}
        for ts in self.state.tasks.values():
            counts[ts.state] = counts.get(ts.state, 0) + 1
        return {"address": self.address, "workers": workers, "tasks": counts,
                "no_worker": self.state.no_worker(),
                "clients": len(self.state.clients), "started": self.started,
                "dashboard_link": self.dashboard_link,
                "settings": {"allowed_failures": self.state.allowed_failures,
                             "worker_ttl": self.worker_ttl, "idle_timeout": self.idle_timeout}}

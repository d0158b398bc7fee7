"""Client, Future, as_completed and wait: the user's side of the runtime.

The client's I/O runs on the process's background event loop (loop.py); the user's thread only
pickles, queues messages and waits. Submissions are queued and flushed as one ``update-graph``
per loop iteration, so ``map`` over 20,000 inputs is one message.
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import pickle
import threading
import uuid
import weakref
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

from .. import params
from . import loop as loop_mod
from . import protocol
from .asynchronous import AsyncClientMixin
from .collections import DaskMixin, register_default, unregister_default
from .comm import BatchedSend, CommClosedError, PeerPool, connect
from .errors import CancelledError, SchedulerError
from .protocol import TaskRef

logger = logging.getLogger("jobqueue.client")

PENDING, FINISHED, ERROR, CANCELLED, LOST = "pending", "finished", "error", "cancelled", "lost"
_NOTHING = object()
# Tasks per update-graph message, each part its own batch: the scheduler schedules the first
# part while the rest is on its way, and never holds a million decoded rows at once.
GRAPH_PART = 10_000


class RemoteTraceback(Exception):
    """Carries the traceback of a task that raised on a worker; set as the exception's cause."""

    def __init__(self, tb):
        self.tb = tb

    def __str__(self):
        return "\n\nTraceback on the worker:\n" + (self.tb or "(none)")


class FutureState:
    __slots__ = ("status", "value", "blob", "exception", "traceback", "callbacks", "type")

    def __init__(self):
        self.status = PENDING
        self.value = _NOTHING
        self.blob = None
        self.exception = None
        self.traceback = None
        self.callbacks = None
        self.type = None


@params.document()
class Future:
    """A task's eventual result, as ``Client.submit`` and ``Client.map`` return it.

    Futures are made by a client, not by hand. While one exists the scheduler keeps its result;
    ``release()`` (or dropping the last reference) lets it go.

    Parameters
    ----------
    key : str
        The task's key.
    client : Client
        The client that holds the result.
    state : optional
        The shared state of the key's futures in this client (internal).

    Examples
    --------
    >>> future = client.submit(pow, 2, 10)
    >>> future.result()
    1024
    """

    __slots__ = ("key", "client", "_state", "__weakref__")
    __dask_future__ = True  # dask's graphs may hold it: it stands for the task's result

    def __init__(self, key, client, state=None):
        self.key = key
        self.client = client
        self._state = state if state is not None else client._state_for(key)
        client._incref(key)

    @property
    def status(self):
        """pending, finished, error, cancelled or lost (the connection to the scheduler)."""
        return self._state.status

    def done(self) -> bool:
        """Whether the task has finished, failed or been cancelled."""
        return self._state.status != PENDING

    def result(self, timeout=None):
        """The task's result; raises the task's exception (with the worker's traceback as its
        cause) if it failed, CancelledError if it was cancelled. With an asynchronous client,
        an awaitable of it."""
        if self.client.asynchronous:
            return self.client._result_async(self, timeout)
        self.client._wait([self._state], timeout)
        return self.client._result_of(self)

    def __await__(self):
        """``await future``: its result, without blocking the caller's event loop."""
        return self.client._result_async(self).__await__()

    def exception(self, timeout=None):
        """The exception the task raised, or None once it has finished without one."""
        if self.client.asynchronous:
            return self.client._then(self.client._ready([self._state]),
                                     lambda _: self._exception_now(), timeout)
        self.client._wait([self._state], timeout)
        return self._exception_now()

    def _exception_now(self):
        st = self._state
        if st.status == ERROR:
            return self.client._exception_of(st)
        if st.status == CANCELLED:
            return CancelledError(self.key)
        return None

    def _has_value(self) -> bool:
        return self._state.value is not _NOTHING

    def _set_value(self, value) -> None:
        if self._state.value is _NOTHING:
            self._state.value = value

    def traceback(self):
        """The worker's traceback of a failed task, as text (None otherwise)."""
        return self._state.traceback

    def cancel(self):
        """Cancel the task (and, on the scheduler, every task that depends on it)."""
        self.client.cancel([self])

    def retry(self):
        """Run the task again if it failed (and the failed tasks it depends on)."""
        self.client.retry([self])

    def __dask_tokenize__(self):
        return ("jobqueue.Future", self.key)

    def cancelled(self) -> bool:
        """Whether the task was cancelled."""
        return self._state.status == CANCELLED

    def add_done_callback(self, fn):
        """Call ``fn(future)`` in a thread of the client once the task is done (at once if it
        is)."""
        self.client._add_callback(self, fn)

    def release(self):
        """Let the scheduler forget this result, once no other Future holds it."""
        client, self.client = self.client, None
        if client is not None:
            client._decref(self.key)

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass

    def __reduce__(self):
        raise TypeError("a Future cannot be pickled; pass it as an argument to submit or map "
                        "and the task receives its result")

    def __repr__(self):
        st = self._state
        extra = f", type: {st.type}" if st.type else ""
        return f"<Future: {st.status}{extra}, key: {self.key}>"

    def _repr_html_(self):
        return f"<b>Future</b>: {self._state.status}, key: <code>{self.key}</code>"


def _funcname(func) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    return name if name != "<lambda>" else "lambda"


def _importable(func) -> bool:
    mod = getattr(func, "__module__", None)
    qual = getattr(func, "__qualname__", "")
    return bool(mod) and mod != "__main__" and "<" not in qual and callable(func)


def _replace_futures(obj, deps):
    """Copy of *obj* with Futures replaced by TaskRefs; their keys are added to *deps*."""
    t = type(obj)
    if t is Future:
        deps[obj.key] = obj
        return TaskRef(obj.key)
    if t is tuple or t is list or t is set or t is frozenset:
        if not any(type(x) in _CONTAINERS for x in obj):
            return obj
        return t(_replace_futures(x, deps) for x in obj)
    if t is dict:
        if not any(type(x) in _CONTAINERS for x in obj.values()):
            return obj
        return {k: _replace_futures(v, deps) for k, v in obj.items()}
    return obj


_CONTAINERS = frozenset({Future, tuple, list, set, frozenset, dict})


def _find_address(address, scheduler_file, token):
    """Where Client() connects when not given a cluster: argument, env, file, config."""
    if address is None and scheduler_file is None:
        address = os.environ.get("JOBQUEUE_SCHEDULER_ADDRESS") or None
        scheduler_file = os.environ.get("JOBQUEUE_SCHEDULER_FILE") or None
    if scheduler_file is not None and address is None:
        from ..node import read_scheduler_file

        address, file_token = read_scheduler_file(scheduler_file)
        token = token or file_token
    if address is None:
        try:
            from .. import config

            address = config.get("scheduler-address", None)
        except Exception:
            address = None
    if address is not None:
        token = token or os.environ.get("JOBQUEUE_TOKEN")
    return address, token


def _security_for(cluster, scheduler_file):
    """The TLS settings of the cluster's own scheduler or of a scheduler file (None: config)."""
    scheduler = getattr(cluster, "scheduler", None)
    if getattr(scheduler, "security", None) is not None:
        return scheduler.security
    scheduler_file = scheduler_file or os.environ.get("JOBQUEUE_SCHEDULER_FILE")
    if scheduler_file:
        from ..node import scheduler_file_security

        return scheduler_file_security(scheduler_file)
    return None


@params.document()
class Client(DaskMixin, AsyncClientMixin):
    """Connect to a scheduler (or start a LocalCluster) and submit work.

    ``Client()`` uses ``JOBQUEUE_SCHEDULER_ADDRESS``/``JOBQUEUE_TOKEN``, ``scheduler_file=``, or
    the config key ``scheduler-address``; with none of them it starts a ``LocalCluster`` with the
    keyword arguments the client does not use itself. While open, the client is dask's default
    scheduler (``set_as_default=False`` opts out); closing it restores the previous one.
    ``asynchronous=True``: ``await Client(...)`` (or ``async with``) connects, and what waits
    for an answer returns an awaitable (see :mod:`jobqueue.core.asynchronous`).

    Parameters
    ----------
    address : str or Cluster, optional
        A cluster object (the client takes its address and token), or the scheduler's address
        ``tcp://host:port`` (or ``tls://``).
    scheduler_file : str, optional
        Read the scheduler's address and token from this file (as a cluster's
        ``scheduler_file=`` or ``jobqueue scheduler --scheduler-file`` wrote it).
    token : str, optional
        The scheduler's token, with ``address`` (default: ``$JOBQUEUE_TOKEN``).
    timeout : float, default 30.0
        Seconds to wait for the connection to the scheduler.
    name : str, optional
        The client's id in the scheduler's logs and dashboard (default: client-RANDOM).
    set_as_default : bool, default True
        Make this client dask's scheduler while it is open.
    **cluster_kwargs
        Arguments of the LocalCluster started when there is no scheduler to connect to
        (``Client(n_workers=2)``); an error when there is one.

    Examples
    --------
    >>> client = Client(SLURMCluster(cores=8, memory="32GB"))
    >>> client = Client(scheduler_file="~/scheduler.json")
    >>> futures = client.map(lambda x: x + 1, range(10))
    >>> client.gather(futures)
    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    """

    def __init__(self, address=None, *, scheduler_file=None, token=None, timeout=30.0,
                 name=None, set_as_default=True, asynchronous=False, **cluster_kwargs):
        self.cluster = None
        self._owns_cluster = False
        self._default = False
        self.asynchronous = bool(asynchronous)
        self._waiters: list = []
        if address is not None and not isinstance(address, str):
            self.cluster = address
            address, token = address.scheduler_address, address.token
        else:
            address, token = _find_address(address, scheduler_file, token)
            if address is None:
                from ..deploy.local import LocalCluster

                self.cluster = LocalCluster(asynchronous=self.asynchronous, **cluster_kwargs)
                self._owns_cluster = True
                address, token = self.cluster.scheduler_address, self.cluster.token
            elif cluster_kwargs:
                raise TypeError(f"unexpected arguments {sorted(cluster_kwargs)} when connecting "
                                f"to the existing scheduler at {address}")
        if not token:
            raise ValueError(f"no token for the scheduler at {address}: set JOBQUEUE_TOKEN, "
                             "pass token=, or use scheduler_file=")
        self.address = address
        self.token = token
        self.id = name or f"client-{uuid.uuid4().hex[:12]}"
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count()
        self._states: dict[str, FutureState] = {}
        self._refcount: dict[str, int] = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._outbox: list = []
        self._flush_scheduled = False
        self._sent_functions: set = set()
        self._function_cache: dict = {}
        self._rid = itertools.count(1)
        self._replies: dict = {}
        self.security = _security_for(self.cluster, scheduler_file)
        self._peers = PeerPool(token, self.security)
        self._callback_pool = None
        self.status = "connecting"
        self._loop = loop_mod.get_loop()
        self._timeout, self._set_as_default, self._scheduler_file = \
            timeout, set_as_default, scheduler_file
        if not self.asynchronous:
            loop_mod.sync(self._start(timeout), timeout + 5)
            self._running()

    def _running(self):
        self.status = "running"
        _clients.add(self)
        self._default = self._set_as_default
        if self._set_as_default:
            register_default(self)

    async def _start_async(self):
        """Start the cluster (if it was made asynchronous and not awaited yet), then connect."""
        cluster = self.cluster
        if cluster is not None and getattr(cluster, "status", "") in ("created", "starting"):
            await cluster
            self.address = cluster.scheduler_address
            self.security = _security_for(cluster, self._scheduler_file)
            self._peers = PeerPool(self.token, self.security)
        await loop_mod.run_async(self._start(self._timeout), self._timeout + 5)
        self._running()
        return self

    # -- connection ---------------------------------------------------------------------------

    async def _start(self, timeout):
        comm = await connect(self.address, self.token, timeout=timeout, security=self.security)
        await comm.write([{"op": "register-client", "id": self.id}])
        (reply,) = await comm.read()
        if reply.get("op") != "welcome":
            raise SchedulerError(reply.get("message"))
        self._comm = comm
        self._stream = BatchedSend(comm)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        handlers = {"key-in-memory": self._on_memory, "task-erred": self._on_erred,
                    "cancelled": self._on_cancelled, "reply": self._on_reply}

        def on_batch(msgs):
            fire = []
            for msg in msgs:
                st = handlers[msg["op"]](msg)
                if st is not None and st.callbacks:
                    fire.append(st)
            with self._cond:
                self._cond.notify_all()
            self._wake()
            for st in fire:
                self._fire_callbacks(st)

        try:
            await self._comm.dispatch(on_batch)
        except (CommClosedError, protocol.ProtocolError) as e:
            if self.status == "running" and getattr(self.cluster, "status", "") not in (
                    "closing", "closed"):       # a cluster closed on purpose: nothing to say
                logger.error("lost the connection to the scheduler at %s: %s", self.address, e)
            self.status = "closed"
            lost = CommClosedError(f"lost the connection to the scheduler at {self.address}")
            for st in list(self._states.values()):
                if st.status == PENDING:
                    st.status, st.exception = LOST, lost
            for fut in self._replies.values():
                if not fut.done():
                    fut.set_exception(lost)
            with self._cond:
                self._cond.notify_all()
            self._wake()

    def _on_memory(self, msg):
        st = self._states.get(msg["key"])
        if st is not None:
            st.type = msg.get("type")
            data = msg.get("data")
            if data is not None:
                st.blob = bytes(data)
            st.status = FINISHED
        return st

    def _on_erred(self, msg):
        st = self._states.get(msg["key"])
        if st is not None:
            st.exception = msg.get("exception")
            st.traceback = msg.get("traceback")
            st.status = ERROR
        return st

    def _on_cancelled(self, msg):
        st = self._states.get(msg["key"])
        if st is not None and st.status in (PENDING, FINISHED):
            st.status = CANCELLED
        return st

    def _on_reply(self, msg):
        fut = self._replies.pop(msg.get("rid"), None)
        if fut is not None and not fut.done():
            if msg.get("error"):
                fut.set_exception(SchedulerError(msg["error"]))
            else:
                fut.set_result(msg.get("result"))

    async def _request(self, msg):
        rid = next(self._rid)
        fut = asyncio.get_running_loop().create_future()
        self._replies[rid] = fut
        msg["rid"] = rid
        self._flush()
        self._stream.send(msg)
        return await fut

    # -- outgoing messages --------------------------------------------------------------------

    def _send(self, msg=None, tasks=None, graph=None):
        """Queue a message, or tasks for the next update-graph; thread-safe, flushed once.
        *graph*: the tasks are one ordered graph of that many positions; its first part opens
        a message of its own, which tells the scheduler to reserve the positions."""
        with self._lock:
            box = self._outbox
            i = 0
            if graph is not None:
                box.append({"op": "update-graph", "tasks": [], "functions": {},
                            "graph": graph})
            while tasks is not None and i < len(tasks):  # in parts of at most GRAPH_PART
                if box and box[-1]["op"] == "update-graph" and \
                        len(box[-1]["tasks"]) < GRAPH_PART:
                    part = box[-1]["tasks"]
                else:
                    part = []
                    box.append({"op": "update-graph", "tasks": part, "functions": {}})
                n = GRAPH_PART - len(part)
                part.extend(tasks[i:i + n])
                i += n
            if msg is not None:
                if msg["op"] == "release-keys" and box and box[-1]["op"] == "release-keys":
                    box[-1]["keys"].extend(msg["keys"])
                else:
                    box.append(msg)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        if loop_mod.in_loop_thread():
            self._loop.call_soon(self._flush)
        else:
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self):
        with self._lock:
            box, self._outbox = self._outbox, []
            self._flush_scheduled = False
        if box and self.status in ("running", "connecting"):
            batches = [[]]  # a full part of a graph ends a batch
            for msg in box:
                batches[-1].append(msg)
                if msg["op"] == "update-graph" and len(msg["tasks"]) >= GRAPH_PART:
                    batches.append([])
            self._stream.send_batches(batches)

    def _function_id(self, func, cache: bool):
        """Pickle *func* (once per client when importable) and queue its bytes for the scheduler."""
        hit = self._function_cache.get(func) if cache else None
        if hit is not None:
            return hit
        import cloudpickle

        try:
            blob = cloudpickle.dumps(func, protocol=5)
        except Exception as e:
            raise TypeError(f"cannot pickle the function {func!r}: {type(e).__name__}: {e}") \
                from e
        fid = hashlib.sha1(blob).hexdigest()[:20]
        if cache:
            if len(self._function_cache) > 1000:
                self._function_cache.clear()
            self._function_cache[func] = fid
        with self._lock:
            if fid not in self._sent_functions:
                self._sent_functions.add(fid)
                self._outbox.append({"op": "update-graph", "tasks": [],
                                     "functions": {fid: protocol.wrap(blob)}})
        return fid

    def _pack(self, key, prefix, group, fid, args, kwargs, restrictions, retries, pure):
        """The task row; its key is *key*, or made of *prefix* and a hash of the function and
        arguments (*pure*: the same call gets the same key, and shares its result), or a
        counter (unique)."""
        deps: dict = {}
        if any(type(a) in _CONTAINERS for a in args) or \
                any(type(v) in _CONTAINERS for v in kwargs.values()):
            args = _replace_futures(args, deps)
            kwargs = _replace_futures(kwargs, deps)
        for f in deps.values():
            if f.client is not self:
                raise ValueError(f"{f!r} belongs to another client")
        try:
            blob = protocol.fast_dumps((args, kwargs))
        except Exception as e:
            raise TypeError(f"cannot pickle the arguments of task {key or prefix!r}: "
                            f"{type(e).__name__}: {e}") from e
        if key is None:
            if pure:
                h = hashlib.blake2b(fid.encode(), digest_size=16)
                h.update(blob)
                key = f"{prefix}-{h.hexdigest()}"
            else:
                key = f"{prefix}-{self._prefix}-{next(self._counter)}"
        return [key, group, fid, protocol.wrap(blob), list(deps), restrictions, int(retries)]

    # -- futures ------------------------------------------------------------------------------

    def _state_for(self, key):
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = FutureState()
        return st

    def _incref(self, key):
        with self._lock:
            self._refcount[key] = self._refcount.get(key, 0) + 1

    def _decref(self, key):
        with self._lock:
            n = self._refcount.get(key, 0) - 1
            if n > 0:
                self._refcount[key] = n
                return
            self._refcount.pop(key, None)
            self._states.pop(key, None)
        if self.status == "running":
            self._send({"op": "release-keys", "keys": [key]})

    def _wait(self, states, timeout=None):
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            for st in states:
                while st.status == PENDING:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(f"result not ready after {timeout} s")
                    self._cond.wait(left)

    def _exception_of(self, st):
        exc = st.exception
        if isinstance(exc, BaseException):
            return exc
        try:
            exc = pickle.loads(exc) if exc is not None else RuntimeError("task failed")
        except Exception as e:
            exc = RuntimeError(f"task failed, and its exception could not be unpickled here: {e}")
        if st.traceback:
            exc.__cause__ = RemoteTraceback(st.traceback)
        st.exception = exc
        return exc

    def _result_of(self, future):
        st = future._state
        if st.status == FINISHED:
            if st.value is _NOTHING:
                if st.blob is not None:
                    st.value = pickle.loads(st.blob)
                    st.blob = None
                else:       # gather() and await fetch first: only result() waits here
                    st.value = loop_mod.sync(self._fetch([future.key]))[future.key]
            return st.value
        if st.status == ERROR:
            raise self._exception_of(st)
        if st.status == CANCELLED:
            raise CancelledError(f"{future.key} was cancelled")
        raise st.exception or RuntimeError(f"{future.key}: {st.status}")

    async def _fetch(self, keys, timeout: float = 300.0):
        """Results from the workers that hold them. A holder may die meanwhile: the scheduler
        then recomputes the result (we still want it), and we ask again."""
        import time

        out: dict = {}
        todo = list(keys)
        deadline = time.monotonic() + timeout
        while todo:
            who_has = await self._request({"op": "who-has", "keys": todo})
            by_worker: dict = {}
            for key in todo:
                holders = who_has.get(key) or []
                if holders:
                    by_worker.setdefault(holders[0], []).append(key)
            for address, ks in by_worker.items():
                try:
                    out.update(await self._peers.get_data(address, ks))
                except (CommClosedError, OSError, protocol.ProtocolError) as e:
                    logger.info("could not fetch from %s (%s); asking the scheduler again",
                                address, e)
            todo = [k for k in todo if k not in out]
            if todo:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"results of {todo[:3]}... are held by no worker "
                                       f"(lost, and not recomputed within {timeout:g} s)")
                await asyncio.sleep(0.1)
        return out

    def _add_callback(self, future, fn):
        st = future._state
        with self._cond:
            if st.status == PENDING:
                if st.callbacks is None:
                    st.callbacks = []
                st.callbacks.append((future, fn))
                return
        self._call(fn, future)

    def _fire_callbacks(self, st):
        callbacks, st.callbacks = st.callbacks, None
        for future, fn in callbacks:
            self._call(fn, future)

    def _call(self, fn, future):
        if self._callback_pool is None:
            self._callback_pool = ThreadPoolExecutor(1, thread_name_prefix="jobqueue-callback")

        def run():
            try:
                fn(future)
            except Exception:
                logger.exception("error in done-callback %r", fn)

        self._callback_pool.submit(run)

    # -- public API ---------------------------------------------------------------------------

    def submit(self, func, *args, key=None, workers=None, retries=0, pure=True, resources=None,
               **kwargs):
        """Run ``func(*args, **kwargs)`` on a worker; returns a Future.

        Parameters
        ----------
        **kwargs
            Keyword arguments of ``func``; Futures stand for their results.

        Examples
        --------
        >>> future = client.submit(pow, 2, 10)
        >>> future.result()
        1024
        """
        if not callable(func):
            raise TypeError(f"submit expects a callable first, got {type(func).__name__}")
        self._check_open()
        args, kwargs = self._collections_to_futures(args, kwargs)
        fid = self._function_id(func, cache=_importable(func))
        group = _funcname(func)
        restrictions = self._restrictions(workers, resources)
        if key is not None and key in self._states:
            return Future(key, self)
        task = self._pack(key, group, group, fid, args, kwargs, restrictions, retries, pure)
        key = task[0]
        if key in self._states:
            return Future(key, self)
        future = Future(key, self)
        self._send(tasks=[task])
        return future

    def map(self, func, *iterables, key=None, workers=None, retries=0, pure=True,
            resources=None, **kwargs):
        """``[submit(func, *args) for args in zip(*iterables)]``, with the function sent once.

        Parameters
        ----------
        *iterables
            One iterable per positional argument of ``func``, zipped.
        **kwargs
            Keyword arguments of ``func``, the same for every call.

        Examples
        --------
        >>> futures = client.map(pow, [1, 2, 3], [2, 2, 2])
        >>> client.gather(futures)
        [1, 4, 9]
        """
        if not callable(func):
            raise TypeError(f"map expects a callable first, got {type(func).__name__}")
        self._check_open()
        _, kwargs = self._collections_to_futures((), kwargs)
        fid = self._function_id(func, cache=True)
        group = _funcname(func)
        restrictions = self._restrictions(workers, resources)
        futures, tasks = [], []
        items = list(zip(*iterables))
        keys = key if isinstance(key, (list, tuple)) else None
        if keys is not None and len(keys) != len(items):
            raise ValueError(f"map got {len(keys)} keys for {len(items)} inputs")
        prefix = key if isinstance(key, str) else group
        states = self._states
        for i, args in enumerate(items):
            task = self._pack(keys[i] if keys is not None else None, prefix, group, fid, args,
                              kwargs, restrictions, retries, pure)
            if task[0] not in states:
                tasks.append(task)
            futures.append(Future(task[0], self))
        self._send(tasks=tasks)
        return futures

    def scatter(self, data, workers=None, broadcast=False):
        """Put local data on workers; returns Futures (same structure as *data*).

        Parameters
        ----------
        data : object, list, tuple, set or dict
            One value, or a collection of values that each become a Future (a dict's keys
            become the Futures' keys).
        broadcast : bool, default False
            Copy every piece to every worker (of ``workers``, if given), so that tasks using
            it on any worker need not fetch it first.
        workers : str or list of str, optional
            Put the data on these workers (addresses or names); by default, on any.
        """
        self._check_open()
        restrictions = self._restrictions(workers)

        def one(value, key=None):
            key = key or f"{type(value).__name__}-{uuid.uuid4().hex[:16]}"
            blob = protocol.serialize(value)
            if len(blob) > 1:  # out-of-band buffers: keep them as one pickle for transport
                blob = [pickle.dumps(value, protocol=5)]
            task = [key, "scatter", None, protocol.wrap(blob[0]), [], restrictions, 0]
            future = Future(key, self)
            self._send(tasks=[task])
            return future

        if isinstance(data, dict):
            out = {k: one(v, str(k)) for k, v in data.items()}
        elif isinstance(data, (list, tuple, set)):
            out = type(data)(one(v) for v in data)
        else:
            out = one(data)
        if self.asynchronous:                 # as dask's: await client.scatter(...)
            return self._then(self._replicate(out, workers) if broadcast else _nothing(),
                              lambda _: out)
        if broadcast:
            self.replicate(out, workers=workers)
        return out

    def replicate(self, futures, workers=None) -> None:
        """Copy the results of *futures* to every worker; returns once they are there.

        Parameters
        ----------
        workers : str or list of str, optional
            Copy to these workers only (addresses or names).
        """
        return self._sync(self._replicate(futures, workers))

    async def _replicate(self, futures, workers):
        flat: list = []
        _collect(futures, flat)
        await self._ready([f._state for f in flat])
        await self._request({"op": "replicate", "keys": [f.key for f in flat],
                             "workers": self._restrictions(workers)})

    def gather(self, futures, errors="raise"):
        """Results of *futures* (a Future, or lists/tuples/dicts of them), same structure.

        Parameters
        ----------
        errors : {'raise', 'skip'}, default 'raise'
            ``raise``: the first failed task's exception is raised; ``skip``: failed and
            cancelled tasks are left out of the result.
        With an asynchronous client, an awaitable of them.
        """
        flat: list = []
        _collect(futures, flat)
        if self.asynchronous:
            return self._gather_async(futures, flat, errors)
        self._wait([f._state for f in flat])
        fetch = [f.key for f in flat if f._state.status == FINISHED
                 and f._state.value is _NOTHING and f._state.blob is None]
        if fetch:
            values = self._sync(self._fetch(fetch))
            for f in flat:
                if f.key in values:
                    f._set_value(values[f.key])
        return self._build(futures, errors)

    def _build(self, futures, errors):
        return _build(futures, errors == "skip")

    def cancel(self, futures):
        """Cancel *futures* (and, on the scheduler, every task that depends on them). They are
        cancelled here at once: a graph built after this call never counts on their keys,
        which the scheduler drops before it reads that graph."""
        if isinstance(futures, Future):
            futures = [futures]
        fire = []
        with self._cond:
            for f in futures:
                st = f._state
                if st.status in (PENDING, FINISHED):
                    st.status = CANCELLED
                    fire.extend(st.callbacks or ())
                    st.callbacks = None
            self._cond.notify_all()
        self._wake_soon()
        for future, fn in fire:
            self._call(fn, future)
        self._send({"op": "cancel", "keys": [f.key for f in futures]})

    def run(self, func, *args, workers=None, **kwargs):
        """Run ``func(*args, **kwargs)`` once on every worker: ``{worker address: result}``.

        Parameters
        ----------
        workers : list of str, optional
            Run on these workers only (addresses); by default, on all.
        **kwargs
            Keyword arguments of ``func``.
        """
        import cloudpickle
        import functools

        blob = cloudpickle.dumps(functools.partial(func, *args, **kwargs), protocol=5)
        return self._then(self._request({"op": "run", "func": protocol.wrap(blob),
                                         "workers": workers}), _run_results)

    def scheduler_info(self) -> dict:
        """The scheduler's address, id and ``workers`` (``{address: {name, nthreads,
        memory_limit, ...}}``)."""
        return self._sync(self._request({"op": "scheduler-info"}))

    def wait_for_workers(self, n_workers: int, timeout: float | None = None):
        """Wait until ``n_workers`` workers are connected to the scheduler (with an
        asynchronous client, an awaitable).

        With a cluster object, its own ``wait_for_workers`` waits (batch clusters fail early,
        with each job's state and log tail, once their jobs cannot bring the workers).

        Parameters
        ----------
        n_workers : int
            Number of workers.
        """
        if self.cluster is not None and not self.asynchronous:
            if timeout is None:
                return self.cluster.wait_for_workers(n_workers)
            return self.cluster.wait_for_workers(n_workers, timeout=timeout)
        return self._sync(self._wait_for_workers(n_workers, timeout))
    async def _wait_for_workers(self, n: int, timeout: float | None):
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            have = len((await self._request({"op": "scheduler-info"}))["workers"])
            if have >= n:
                return
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"{have} of {n} workers connected to {self.address} within "
                                   f"{timeout:g} s")
            await asyncio.sleep(0.1)     # the scheduler does not tell clients of new workers

    @property
    def dashboard_link(self):
        """The scheduler's dashboard URL (with its token when it needs one), or None."""
        if self.cluster is not None:
            return self.cluster.dashboard_link
        return self.scheduler_info().get("dashboard_link")

    def retire_workers(self, workers):
        """Close workers gracefully: results only they hold are copied to others first.

        Parameters
        ----------
        workers : list of str
            Addresses or names of the workers.
        """
        return self._sync(self._request({"op": "retire-workers", "workers": list(workers)}))

    def close_workers(self, workers):
        """Close workers at once; their results are recomputed if needed.

        Parameters
        ----------
        workers : list of str
            Addresses or names of the workers.
        """
        return self._sync(self._request({"op": "close-workers", "workers": list(workers)}))

    def _restrictions(self, workers, resources=None):
        """The task row's restrictions: None, [worker...], or, with *resources*,
        {"workers": [...] or None, "resources": {name: amount}} (placement.py)."""
        if workers is not None:
            workers = [workers] if isinstance(workers, str) else list(workers)
        if resources:
            from .placement import check_resources

            return {"workers": workers, "resources": check_resources(resources)}
        return workers

    def _check_open(self):
        if self.status != "running":
            raise RuntimeError(f"client is {self.status}")

    def close(self):
        """Disconnect (the scheduler forgets this client's futures); a LocalCluster the
        client started is closed too. With an asynchronous client, an awaitable."""
        if self.asynchronous:
            return self._close_async()
        if self._begin_close():
            try:
                loop_mod.sync(self._shutdown(), 10)
            except Exception as e:
                logger.debug("error while closing client: %s", e)
            self._closed()
            if self._owns_cluster:
                self.cluster.close()

    async def _close_async(self):
        if self._begin_close():
            try:
                await loop_mod.run_async(self._shutdown(), 10)
            except Exception as e:
                logger.debug("error while closing client: %s", e)
            self._closed()
            if self._owns_cluster:
                await self.cluster.close()

    def _begin_close(self) -> bool:
        if self.status in ("closing", "closed"):
            return False
        self.status = "closing"
        if self._default:
            unregister_default(self)
        return True

    async def _shutdown(self):
        self._flush()
        self._stream.send({"op": "close-client"})
        await asyncio.sleep(0)
        for _ in range(100):
            if not self._stream.pending:
                break
            await asyncio.sleep(0.01)
        self._reader.cancel()
        self._stream.close()
        self._peers.close()

    def _closed(self):
        self.status = "closed"
        if self._callback_pool is not None:
            self._callback_pool.shutdown(wait=False)
        _clients.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Client: scheduler={self.address!r} status={self.status}>"

    def _repr_html_(self):
        return (f"<b>Client</b> {self.id}<br>scheduler: <code>{self.address}</code>"
                f"<br>status: {self.status}")


_clients: weakref.WeakSet = weakref.WeakSet()
_SKIPPED = object()


def _run_results(results: dict) -> dict:
    """``{worker address: result}`` of Client.run; a worker's exception is raised here."""
    out = {}
    for address, r in results.items():
        if r["status"] != "ok":
            if r.get("exception") is not None:
                exc = pickle.loads(r["exception"])
                exc.__cause__ = RemoteTraceback(r.get("traceback"))
                raise exc
            raise RuntimeError(r.get("traceback"))
        out[address] = pickle.loads(r["result"])
    return out


async def _nothing():
    return None


def _collect(x, out):
    """Futures in nested lists/tuples/sets/dicts (no closures: they would delay releases)."""
    if isinstance(x, Future):
        out.append(x)
    elif isinstance(x, (list, tuple, set)):
        for y in x:
            _collect(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _collect(y, out)


def _build(x, skip):
    if isinstance(x, Future):
        if skip and x._state.status != FINISHED:
            return _SKIPPED
        return x.client._result_of(x)          # gather() waited for it
    if isinstance(x, (list, tuple, set)):
        return type(x)(v for v in (_build(y, skip) for y in x) if v is not _SKIPPED)
    if isinstance(x, dict):
        return {k: v for k, v in ((k, _build(y, skip)) for k, y in x.items())
                if v is not _SKIPPED}
    return x


@params.document()
class as_completed:
    """Iterate over futures in the order they finish.

    Parameters
    ----------
    with_results : bool, default False
        Yield ``(future, result)`` pairs instead of futures.

    Examples
    --------
    >>> for future in as_completed(client.map(slow, range(10))):
    ...     print(future.result())
    """

    def __init__(self, futures=(), with_results=False):
        import queue

        self._queue = queue.SimpleQueue()
        self._pending = 0
        self._waiting: dict = {}            # id -> future not yielded yet
        self.with_results = with_results
        for f in futures:
            self.add(f)

    def add(self, future):
        """Add a future to iterate over.

        Parameters
        ----------
        future : Future
            A future of any client.
        """
        self._pending += 1
        self._waiting[id(future)] = future
        future.add_done_callback(self._queue.put)

    def __iter__(self):
        return self

    def __next__(self):
        if self._pending == 0:
            raise StopIteration
        future = self._queue.get()
        self._waiting.pop(id(future), None)
        self._pending -= 1
        if self.with_results:
            return future, future.result()
        return future

    def count(self):
        """How many futures are still to come."""
        return self._pending

    def __aiter__(self):
        return self

    async def __anext__(self):
        """``async for future in as_completed(futures)``: waits on the client's loop, not in
        a thread of the caller."""
        waiting = self._waiting
        if not waiting:
            raise StopAsyncIteration
        client = next(iter(waiting.values())).client
        await loop_mod.run_async(client._until(lambda: any(f.done() for f in waiting.values())))
        future = next(f for f in waiting.values() if f.done())
        del waiting[id(future)]
        self._pending -= 1
        if self.with_results:
            return future, await future
        return future


DoneAndNotDone = namedtuple("DoneAndNotDone", ["done", "not_done"])


@params.document()
def wait(futures, timeout=None, return_when="ALL_COMPLETED"):
    """Wait for futures; returns ``(done, not_done)``, two sets.

    Parameters
    ----------
    futures : iterable of Future
        The futures to wait for.
    return_when : {'ALL_COMPLETED', 'FIRST_COMPLETED', 'FIRST_EXCEPTION'}
        Return when all are done, when one is, or when one fails (or all are done).
    """
    import time

    futures = list(futures)
    if not futures:
        return DoneAndNotDone(set(), set())
    client = futures[0].client
    deadline = None if timeout is None else time.monotonic() + timeout

    def finished():
        done = {f for f in futures if f.done()}
        if return_when == "FIRST_COMPLETED":
            return bool(done)
        if return_when == "FIRST_EXCEPTION":
            return len(done) == len(futures) or any(f.status == ERROR for f in done)
        return len(done) == len(futures)

    if client.asynchronous:                      # await wait(futures)
        return client._then(client._until(finished), lambda _: _done_and_not(futures),
                            timeout)

    with client._cond:
        while not finished():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"futures not done after {timeout} s")
            client._cond.wait(left)
    return _done_and_not(futures)


def _done_and_not(futures) -> DoneAndNotDone:
    done = {f for f in futures if f.done()}
    return DoneAndNotDone(done, set(futures) - done)

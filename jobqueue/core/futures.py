"""Future, as_completed and wait: a task's eventual result, as the user's thread sees it.

A Future holds a key and its client; the client's reader (on the event loop) fills the shared
FutureState and wakes waiters through the client's condition variable.
"""
from __future__ import annotations

import logging
import pickle
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import params
from . import loop as loop_mod
from .errors import CancelledError

if TYPE_CHECKING:
    from .client import Client

logger = logging.getLogger("jobqueue.client")

PENDING, FINISHED, ERROR, CANCELLED, LOST = "pending", "finished", "error", "cancelled", "lost"
_NOTHING = object()


class RemoteTraceback(Exception):
    """Carries the traceback of a task that raised on a worker; set as the exception's cause."""

    def __init__(self, tb: str | None):
        self.tb = tb

    def __str__(self) -> str:
        return "\n\nTraceback on the worker:\n" + (self.tb or "(none)")


class FutureState:
    __slots__ = ("status", "value", "blob", "exception", "traceback", "callbacks", "type")

    def __init__(self) -> None:
        self.status = PENDING
        self.value: Any = _NOTHING
        self.blob: bytes | None = None
        self.exception: Any = None         # pickled on arrival, the exception once unpickled
        self.traceback: str | None = None
        self.callbacks: list | None = None
        self.type: str | None = None


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

    def __init__(self, key: str, client: Client, state: FutureState | None = None) -> None:
        self.key = key
        self.client: Client | None = client       # None once released
        self._state = state if state is not None else client._state_for(key)
        client._incref(key)

    def _client(self) -> Client:
        client = self.client
        if client is None:
            raise RuntimeError(f"{self!r} was released: its result is no longer held for it")
        return client

    @property
    def status(self) -> str:
        """pending, finished, error, cancelled or lost (the connection to the scheduler)."""
        return self._state.status

    def done(self) -> bool:
        """Whether the task has finished, failed or been cancelled."""
        return self._state.status != PENDING

    def result(self, timeout: float | None = None) -> Any:
        """The task's result; raises the task's exception (with the worker's traceback as its
        cause) if it failed, CancelledError if it was cancelled. With an asynchronous client,
        an awaitable of it."""
        if self._client().asynchronous:
            return self._client()._result_async(self, timeout)
        self._client()._wait([self._state], timeout)
        return self._client()._result_of(self)

    def __await__(self):
        """``await future``: its result, without blocking the caller's event loop."""
        return self._client()._result_async(self).__await__()

    def exception(self, timeout: float | None = None) -> Any:
        """The exception the task raised, or None once it has finished without one."""
        if self._client().asynchronous:
            return self._client()._then(self._client()._ready([self._state]),
                                     lambda _: self._exception_now(), timeout)
        self._client()._wait([self._state], timeout)
        return self._exception_now()

    def _exception_now(self) -> BaseException | None:
        st = self._state
        if st.status == ERROR:
            return self._client()._exception_of(st)
        if st.status == CANCELLED:
            return CancelledError(self.key)
        return None

    def _has_value(self) -> bool:
        return self._state.value is not _NOTHING

    def _set_value(self, value) -> None:
        if self._state.value is _NOTHING:
            self._state.value = value

    def traceback(self) -> str | None:
        """The worker's traceback of a failed task, as text (None otherwise)."""
        return self._state.traceback

    def cancel(self) -> None:
        """Cancel the task (and, on the scheduler, every task that depends on it)."""
        self._client().cancel([self])

    def retry(self) -> None:
        """Run the task again if it failed (and the failed tasks it depends on)."""
        self._client().retry([self])

    def __dask_tokenize__(self) -> tuple:
        return ("jobqueue.Future", self.key)

    def cancelled(self) -> bool:
        """Whether the task was cancelled."""
        return self._state.status == CANCELLED

    def add_done_callback(self, fn: Callable[[Future], Any]) -> None:
        """Call ``fn(future)`` in a thread of the client once the task is done (at once if it
        is)."""
        self._client()._add_callback(self, fn)

    def release(self) -> None:
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



class FutureBook:
    """The client's side of its futures: one FutureState per key, reference counts (a key is
    released on the scheduler when its last Future goes), waiting, results and done-callbacks.
    Part of :class:`~jobqueue.core.client.Client`, which holds the state it uses."""

    if TYPE_CHECKING:     # the Client's own
        status: str
        _states: dict[str, FutureState]
        _refcount: dict[str, int]
        _lock: threading.Lock
        _cond: threading.Condition
        _callback_pool: ThreadPoolExecutor | None

        def _send(self, msg: dict | None = None, tasks: list | None = None,
                  graph: int | None = None) -> None: ...
        async def _fetch(self, keys: list, timeout: float = 300.0) -> dict: ...

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


_SKIPPED = object()


def _collect(x: Any, out: list[Future]) -> None:
    """Futures in nested lists/tuples/sets/dicts (no closures: they would delay releases)."""
    if isinstance(x, Future):
        out.append(x)
    elif isinstance(x, (list, tuple, set)):
        for y in x:
            _collect(y, out)
    elif isinstance(x, dict):
        for y in x.values():
            _collect(y, out)


def _build(x: Any, skip: bool) -> Any:
    if isinstance(x, Future):
        if skip and x._state.status != FINISHED:
            return _SKIPPED
        return x._client()._result_of(x)          # gather() waited for it
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

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False) -> None:
        self._queue: queue.SimpleQueue[Future] = queue.SimpleQueue()
        self._pending = 0
        self._waiting: dict = {}            # id -> future not yielded yet
        self.with_results = with_results
        for f in futures:
            self.add(f)

    def add(self, future: Future) -> None:
        """Add a future to iterate over.

        Parameters
        ----------
        future : Future
            A future of any client.
        """
        self._pending += 1
        self._waiting[id(future)] = future
        future.add_done_callback(self._queue.put)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._pending == 0:
            raise StopIteration
        future = self._queue.get()
        self._waiting.pop(id(future), None)
        self._pending -= 1
        if self.with_results:
            return future, future.result()
        return future

    def count(self) -> int:
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
        client = next(iter(waiting.values()))._client()
        await loop_mod.run_async(client._until(lambda: any(f.done() for f in waiting.values())))
        future = next(f for f in waiting.values() if f.done())
        del waiting[id(future)]
        self._pending -= 1
        if self.with_results:
            return future, await future
        return future


class DoneAndNotDone(NamedTuple):
    done: set[Future]
    not_done: set[Future]


@params.document()
def wait(futures: Iterable[Future], timeout: float | None = None,
         return_when: str = "ALL_COMPLETED") -> Any:
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
    client = futures[0]._client()
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


def _done_and_not(futures: list[Future]) -> DoneAndNotDone:
    done = {f for f in futures if f.done()}
    return DoneAndNotDone(done, set(futures) - done)

"""``Client(..., asynchronous=True)``: the same client, awaited instead of waited for.

The client's I/O always runs on the process's background event loop (loop.py). A synchronous
client blocks its caller's thread until a coroutine there is done (:func:`loop.sync`); an
asynchronous one hands the caller's event loop an awaitable of the same coroutine
(:func:`loop.run_async`), so ``await client.gather(futures)`` and ``await future`` never block
the caller's loop. Methods that only queue messages (``submit``, ``map``, ``cancel``) are the
same in both modes. What dask.distributed's asynchronous client awaits is awaited here too::

    async with SLURMCluster(cores=4, memory="8GB", asynchronous=True) as cluster:
        cluster.scale(jobs=2)
        async with Client(cluster, asynchronous=True) as client:
            future = client.submit(inc, 1)
            print(await future, await client.gather([future]))
"""
from __future__ import annotations

import asyncio
from typing import Any, Callable

from . import loop as loop_mod

PENDING = "pending"


class AsyncClientMixin:
    """What :class:`~jobqueue.core.client.Client` needs to be awaited."""

    asynchronous: bool
    status: str
    _waiters: list
    _states: dict
    _starting: Any = None

    # -- running coroutines on the loop: waited for, or awaited -------------------------------

    def _sync(self, coro, timeout=None):
        """Run ``coro`` on the loop: its result, or (asynchronous) an awaitable of it."""
        if self.asynchronous:
            return loop_mod.run_async(coro, timeout)
        return loop_mod.sync(coro, timeout)

    def _then(self, coro, after: Callable[[Any], Any], timeout=None):
        """``after(result of coro)``, ``after`` run in the caller's thread; (asynchronous) an
        awaitable of it. The coroutine starts at once in both modes."""
        if not self.asynchronous:
            return after(loop_mod.sync(coro, timeout))
        running = loop_mod.run_async(coro, timeout)

        async def finish():
            return after(await running)

        return finish()

    # -- waiting for futures on the loop ------------------------------------------------------

    async def _ready(self, states) -> None:
        """On the loop: return once none of ``states`` is pending."""
        await self._until(lambda: all(st.status != PENDING for st in states))

    async def _until(self, predicate: Callable[[], bool]) -> None:
        """On the loop: return once ``predicate()`` (of the futures' states) is true. States
        change on the loop, or in cancel(), which wakes the waiters: no change goes unseen."""
        loop = asyncio.get_running_loop()
        while not predicate():
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter

    def _wake(self) -> None:
        """On the loop: let every ``_ready`` look again."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _wake_soon(self) -> None:
        """From any thread: ``_wake`` on the loop."""
        loop_mod.call_soon(self._wake)

    async def _result_async(self, future, timeout=None):
        """``await future``: its result (or its exception raised), without blocking the loop
        of the caller."""
        st = future._state
        await loop_mod.run_async(self._ready([st]), timeout)
        if st.status == "finished" and st.blob is None and not future._has_value():
            values = await loop_mod.run_async(self._fetch([future.key]))
            future._set_value(values[future.key])
        return self._result_of(future)

    async def _gather_async(self, futures, flat, errors):
        await loop_mod.run_async(self._ready([f._state for f in flat]))
        fetch = [f for f in flat if f._state.status == "finished" and f._state.blob is None
                 and not f._has_value()]
        if fetch:
            values = await loop_mod.run_async(self._fetch([f.key for f in fetch]))
            for f in fetch:
                if f.key in values:
                    f._set_value(values[f.key])
        return self._build(futures, errors)

    # -- starting and closing -----------------------------------------------------------------

    def __await__(self):
        """``await Client(..., asynchronous=True)``: connect; the client itself."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start_async())
        return self._starting.__await__()

    async def __aenter__(self):
        return await self

    async def __aexit__(self, *exc):
        await self.close()

    # provided by Client
    async def _start_async(self): ...
    async def _fetch(self, keys, timeout: float = 300.0): ...
    def _result_of(self, future): ...
    def _build(self, futures, errors): ...
    def close(self): ...

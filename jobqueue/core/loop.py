"""One background event-loop thread per process, for the synchronous API (Client, clusters)."""
from __future__ import annotations

import asyncio
import threading

_lock = threading.Lock()
_loop = None
_thread = None


def get_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run():
                asyncio.set_event_loop(_loop)
                _loop.call_soon(ready.set)
                _loop.run_forever()

            _thread = threading.Thread(target=run, name="jobqueue-loop", daemon=True)
            _thread.start()
            ready.wait()
        return _loop


def in_loop_thread() -> bool:
    return _thread is not None and threading.current_thread() is _thread


def sync(coro, timeout=None):
    """Run *coro* on the background loop and wait for its result from another thread."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError("sync() called from the jobqueue event-loop thread (would deadlock)")
    future = asyncio.run_coroutine_threadsafe(coro, get_loop())
    try:
        return future.result(timeout)
    except TimeoutError:
        future.cancel()
        raise


def run_async(coro, timeout=None) -> asyncio.Future:
    """Run *coro* on the background loop; returns an awaitable for the caller's running event
    loop (the ``asynchronous=True`` API: the same coroutines as :func:`sync`, awaited instead of
    waited for). The work starts at once, whether or not the caller awaits the result."""
    caller = caller_loop(coro)
    if timeout is not None:
        coro = asyncio.wait_for(coro, timeout)
    if caller is get_loop():
        return asyncio.ensure_future(coro)
    return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, get_loop()), loop=caller)


def caller_loop(coro) -> asyncio.AbstractEventLoop:
    """The caller's running event loop; without one, *coro* is closed and RuntimeError says
    how an asynchronous=True object is used."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        coro.close()
        raise RuntimeError("asynchronous=True: call this from a coroutine running in an event "
                           "loop, and await the result") from None


def call_soon(fn, *args) -> None:
    get_loop().call_soon_threadsafe(fn, *args)

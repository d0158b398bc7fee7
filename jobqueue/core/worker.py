"""The worker's I/O shell: runs tasks in a thread pool, serves results to peers and clients.

What the worker knows and decides lives in the pure state machine (worker_state.py). This shell
turns what happens into its stimuli and carries out its instructions: one event loop carries
the scheduler stream, the data server and input fetches (Gather); tasks (Execute) run in
``nthreads`` threads that hand results back in batches (one loop wake-up for many results).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import logging
import os
import pickle
import queue
import socket
import sys
import threading
import time
import traceback

from . import protocol, shm
from .comm import BatchedSend, CommClosedError, PeerPool, connect, format_address, parse_address
from .errors import UnpicklableResult
from .listener import Listener
from .protocol import Raw, substitute
from .security import Security, scheme_of
from .worker_state import (AcquireReplicas, ComputeTask, Execute, ExecuteFailure, ExecuteSuccess,
                           FetchDone, FetchFailed, FreeKeys, Gather, Pause, Reset, Send, Unpause,
                           WorkerState, lazy_random)

logger = logging.getLogger("jobqueue.worker")

INLINE_RESULT = 16 * 1024
EXIT_NO_SCHEDULER = 3  # the nanny does not restart a worker that exits with this
EXIT_PRELOAD_FAILED = 4  # nor one whose --preload module failed: it would fail again
PREFETCH = 2  # tasks queued for the threads beyond one each: a thread never waits for the loop


_ATOMIC = frozenset({int, float, bool, type(None), complex, str})
_PLAIN = _ATOMIC | {bytes, bytearray, list, tuple, dict, set, frozenset}


def sizeof(obj, depth=2) -> int:
    """Cheap estimate of the bytes an object holds (dask's own estimate once a task has
    loaded dask: it knows arrays, dataframes and their containers)."""
    if type(obj) in _ATOMIC:
        return sys.getsizeof(obj)
    dask_sizeof = sys.modules.get("dask.sizeof")
    if dask_sizeof is not None:
        try:
            return int(dask_sizeof.sizeof(obj))
        except Exception:
            pass
    try:
        return memoryview(obj).nbytes
    except TypeError:
        pass
    n = sys.getsizeof(obj, 64)
    if depth and type(obj) in (list, tuple, set, frozenset):
        items = list(obj)[:100]
        if items:
            n += sum(sizeof(x, depth - 1) for x in items) * len(obj) // len(items)
    elif depth and type(obj) is dict:
        items = list(obj.items())[:100]
        if items:
            n += sum(sizeof(k, depth - 1) + sizeof(v, depth - 1) for k, v in items) \
                * len(obj) // len(items)
    return n


def dumps_exception(exc: BaseException) -> bytes:
    try:
        import cloudpickle

        return cloudpickle.dumps(exc, protocol=5)
    except Exception as e:
        return pickle.dumps(RuntimeError(
            f"{type(exc).__name__}: {exc} (the exception could not be pickled: {e})"))


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_frames(tb) -> traceback.StackSummary:
    """The frames of a traceback that are the user's: ours (jobqueue's) are left out, and a
    function that came from a script (cloudpickle names its file '<dynamic-code>') gets the
    script's path back from its globals' __file__, so its source line shows where readable."""
    frames = []
    for frame, lineno in traceback.walk_tb(tb):
        filename = frame.f_code.co_filename
        if filename == "<dynamic-code>":
            filename = frame.f_globals.get("__file__") or filename
        elif filename.startswith(_PACKAGE):
            continue
        frames.append(traceback.FrameSummary(filename, lineno, frame.f_code.co_name))
    return traceback.StackSummary.from_list(frames)


def format_traceback(exc: BaseException) -> str:
    """The task's traceback as the user reads it (see _user_frames), chained exceptions too."""
    root = te = traceback.TracebackException(type(exc), exc, exc.__traceback__,
                                             lookup_lines=False)
    e: BaseException | None = exc
    seen = set()
    while te is not None and e is not None and id(e) not in seen:
        seen.add(id(e))
        te.stack = _user_frames(e.__traceback__)
        if te.__cause__ is not None:
            te, e = te.__cause__, e.__cause__
        elif te.__context__ is not None and not te.__suppress_context__:
            te, e = te.__context__, e.__context__
        else:
            break
    return "".join(root.format())


async def _in_thread(func):
    """func() on a thread of its own that ends with it (the loop's default executor would keep
    an idle thread, and its memory, for the worker's whole life)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def run():
        try:
            result = func()
        except BaseException as e:
            loop.call_soon_threadsafe(_settle, fut, None, e)
        else:
            loop.call_soon_threadsafe(_settle, fut, result, None)

    threading.Thread(target=run, name="jobqueue-run", daemon=True).start()
    return await fut


def _settle(fut, result, exc):
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def route_address(scheduler_address: str) -> str:
    """The local IP address that routes to the scheduler."""
    from ..node import route_source

    return route_source(*parse_address(scheduler_address)) or "127.0.0.1"


class ProcessUsage:
    """This process's RSS and CPU %, from /proc on Linux (psutil elsewhere): an idle worker
    does not need psutil's memory."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.last = (time.monotonic(), sum(os.times()[:2]))
        self.proc = None

    def read(self) -> tuple[int, float]:
        try:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * self.page
        except OSError:
            import psutil

            self.proc = self.proc or psutil.Process()
            rss = self.proc.memory_info().rss
        now, cpu = time.monotonic(), sum(os.times()[:2])
        (then, before), self.last = self.last, (now, cpu)
        return rss, round(100.0 * (cpu - before) / max(now - then, 1e-9), 1)


class Worker:
    def __init__(self, scheduler_address: str, *, token=None, nthreads: int = 1, name=None,
                 memory_limit: int = 0, host=None, port: int = 0, death_timeout: float = 60.0,
                 heartbeat_interval: float = 1.0, memory_pause: float = 0.8,
                 lifetime: float | None = None, lifetime_stagger: float = 0.0,
                 security: Security | None = None, resources: dict | None = None,
                 preload=()):
        self.scheduler_address = scheduler_address
        # TLS when the scheduler speaks it: for the scheduler, peers and our own data server
        self.security = security or Security.from_config()
        self.token = token if token is not None else os.environ.get("JOBQUEUE_TOKEN")
        self.nthreads = max(1, int(nthreads))
        self.memory_limit = int(memory_limit or 0)
        self.host = host
        self.port = port
        self.death_timeout = death_timeout
        self.heartbeat_interval = heartbeat_interval
        self.memory_pause = memory_pause
        self.lifetime = lifetime
        self.lifetime_stagger = lifetime_stagger
        self.resources = dict(resources or {})
        self.preload = list(preload or ())
        self._preloaded: list = []        # (name, module) whose dask_setup ran
        self.name = name
        self.address = None
        self.state = WorkerState(nthreads=self.nthreads, prefetch=PREFETCH)
        self._ids = itertools.count()     # stimulus ids: op-n
        self.function_blobs: dict = {}
        self.functions: dict = {}
        self.status = "init"
        self.stream = None
        self.listener = None
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._done: list = []
        self._lock = threading.Lock()
        self._wake = False
        self._threads: list = []
        self._fn_lock = threading.Lock()
        self.peers = PeerPool(self.token, self.security)
        self._closed = None
        self.loop = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        host = self.host or route_address(self.scheduler_address)
        tls = scheme_of(self.scheduler_address) == "tls"
        self.listener = Listener(self.token, self._serve, role="worker",
                                 security=self.security if tls else None)
        port = await self.listener.start(host, self.port)
        self.address = self.state.address = format_address(host, port, self.listener.scheme)
        if self.name is None:
            self.name = self.address
        for spec in self.preload:
            self._preloaded.append((spec, run_preload(spec, self)))
        for i in range(self.nthreads):
            t = threading.Thread(target=self._thread_main, name=f"jobqueue-task-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        await self._connect(self.death_timeout)
        self.status = "running"
        self.loop.create_task(self._heartbeats())
        if self.lifetime:
            # Leave before the batch system's walltime kills us: staggered, so that the
            # workers of one job array do not all leave at once.
            delay = max(0.0, self.lifetime - lazy_random().uniform(0, self.lifetime_stagger))
            self.loop.call_later(delay, self._retire_self)
        return self

    def _retire_self(self):
        if self.status == "running" and self.stream is not None:
            logger.info("worker %s reached its lifetime (%g s): retiring", self.name,
                        self.lifetime)
            self.stream.send({"op": "retire-self"})

    async def _connect(self, timeout):
        deadline = time.monotonic() + timeout
        delay, last = 0.05, None
        while True:
            try:
                comm = await connect(self.scheduler_address, self.token, role="worker",
                                     security=self.security,
                                     timeout=max(1.0, min(10.0, deadline - time.monotonic())))
                await comm.write([{"op": "register-worker", "address": self.address,
                                   "name": self.name, "nthreads": self.nthreads,
                                   "memory_limit": self.memory_limit, "pid": os.getpid(),
                                   "host": socket.gethostname(),
                                   "resources": self.resources}])
                (reply,) = await comm.read()
                break
            except CommClosedError as e:
                last = e
                if time.monotonic() + delay > deadline:
                    raise CommClosedError(
                        f"worker {self.name} could not reach the scheduler at "
                        f"{self.scheduler_address} within {timeout:g} s: {last}") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        if reply.get("op") != "welcome":
            await comm.close()
            message = reply.get("message") or ""
            if "already connected" in message and time.monotonic() < deadline:
                # restarted by the nanny before the scheduler noticed the old process died
                await asyncio.sleep(0.2)
                return await self._connect(deadline - time.monotonic())
            raise RuntimeError(f"scheduler refused worker {self.name}: {message}")
        self.stream = BatchedSend(comm)
        self.loop.create_task(self._read_scheduler(comm))
        logger.info("worker %s at %s connected to %s with %d threads", self.name, self.address,
                    self.scheduler_address, self.nthreads)

    async def _read_scheduler(self, comm):
        try:
            await comm.dispatch(self._on_scheduler_batch)
        except (CommClosedError, protocol.ProtocolError) as e:
            if self.status != "running":
                return
            logger.warning("lost the scheduler at %s (%s); reconnecting for up to %g s",
                           self.scheduler_address, e, self.death_timeout)
        except Exception:
            if self.status != "running":
                return
            logger.exception("error handling a message from the scheduler; reconnecting")
            comm.abort()
        self.handle(Reset(stimulus_id=f"reset-{next(self._ids)}"))
        try:
            await self._connect(self.death_timeout)
        except (CommClosedError, RuntimeError) as e:
            logger.error("%s; exiting (death-timeout)", e)
            await self.close(reason="death-timeout")

    async def close(self, reason="closed"):
        if self.status in ("closing", "closed"):
            return
        self.status = "closing"
        logger.info("worker %s closing: %s", self.name, reason)
        for spec, module in reversed(self._preloaded):
            teardown = getattr(module, "dask_teardown", None)
            if teardown is not None:
                try:
                    teardown(self)
                except Exception:
                    logger.exception("dask_teardown of preload %s failed", spec)
        if self.stream is not None:
            self.stream.close()
        if self.listener is not None:
            self.listener.stop()
        self.peers.close()
        for _ in self._threads:
            self._work.put(None)
        self.status = "closed"
        self._closed.set()

    async def finished(self):
        await self._closed.wait()

    # -- the state machine ----------------------------------------------------------------------

    def handle(self, *stimuli):
        """Feed the state machine; carry out its instructions."""
        for ins in self.state.handle_stimulus(*stimuli):
            kind = type(ins)
            if kind is Execute:
                self._work.put(ins)
            elif kind is Send:
                if self.stream is not None:
                    self.stream.send_many(ins.msgs)
            elif kind is Gather:
                self.loop.create_task(self._gather(ins.holder, ins.keys))
            else:
                raise TypeError(f"unknown instruction {ins!r}")

    def _on_scheduler_batch(self, msgs):
        """One batch of messages from the scheduler; its stimuli share an id (op-n)."""
        stimuli = []
        n = next(self._ids)
        sid = f"compute-{n}"
        for msg in msgs:
            op = msg["op"]
            if op == "compute":
                if "func" in msg:
                    self.function_blobs[msg["fid"]] = bytes(msg["func"])
                stimuli.append(ComputeTask(  # positional: one per task, the cheapest way
                    sid, msg["key"], msg["fid"], msg["args"], msg.get("deps"),
                    msg.get("want", False), msg.get("priority", 0)))
            elif op == "free-keys":
                stimuli.append(FreeKeys(f"free-keys-{n}", msg["keys"]))
            elif op == "acquire-replicas":
                stimuli.append(AcquireReplicas(f"acquire-replicas-{n}", msg["keys"]))
            elif op == "run":
                self._run(msg)
            elif op == "close":
                self.loop.create_task(self.close(reason=msg.get("reason", "scheduler asked")))
            else:
                logger.warning("unknown message from scheduler: %s", op)
        if stimuli:
            self.handle(*stimuli)

    def _run(self, msg):
        async def run():
            try:
                func = pickle.loads(msg["func"])
                result = await _in_thread(func)
                reply = {"status": "ok", "result": protocol.wrap(protocol.fast_dumps(result))}
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # SystemExit from func ends the call, not the worker
                reply = {"status": "error", "exception": dumps_exception(e),
                         "traceback": format_traceback(e)}
            reply.update(op="run-result", rid=msg["rid"])
            self.stream.send(reply)

        self.loop.create_task(run())

    # -- inputs from peers --------------------------------------------------------------------

    async def _gather(self, holder, keys):
        sid = f"gather-{next(self._ids)}"
        try:
            values = await self.peers.get_data(holder, list(keys))
        except UnpicklableResult as e:
            self.handle(FetchFailed(holder=holder, keys=keys, unpicklable=str(e),
                                    stimulus_id=sid))
            return
        except (CommClosedError, OSError, protocol.ProtocolError) as e:
            logger.warning("could not fetch %d inputs from %s: %s", len(keys), holder, e)
            self.handle(FetchFailed(holder=holder, keys=keys, stimulus_id=sid))
            return
        self.handle(FetchDone(holder=holder, keys=keys, data=values,
                              nbytes={k: sizeof(v) for k, v in values.items()},
                              stimulus_id=sid))

    async def _serve(self, comm):
        """Data server: peers and clients ask for results. A peer on this machine reads large
        frames from our memory or from shared memory files (shm.py); what it read from our
        memory is kept, and files it did not take are removed, until it asks again or leaves."""
        created: list = []
        try:
            while True:
                msgs = await comm.read()
                shm.discard(created)
                replies = [self._get_data(msg, created) if msg["op"] == "get-data" else
                           {"op": "error", "message": f"unknown op {msg['op']!r}"}
                           for msg in msgs]
                await comm.write(replies)
        finally:
            shm.discard(created)

    def _get_data(self, msg, created) -> dict:
        local = msg.get("shm") is not None and msg.get("shm") == shm.namespace()
        stored = self.state.data
        data, missing, errors = {}, [], {}
        for key in msg["keys"]:
            if key not in stored:
                missing.append(key)
                continue
            try:
                frames = protocol.serialize(stored[key])
            except Exception as e:
                errors[key] = (f"the result of {key!r} ({type(stored[key]).__name__}) "
                               f"cannot be pickled: {type(e).__name__}: {e}")
                continue
            if local:
                frames = shm.export(frames, created, cross=msg.get("cross") is True)
            data[key] = [f if isinstance(f, dict) else Raw(f) for f in frames]
        reply = {"op": "data", "data": data, "missing": missing, "errors": errors}
        if local and msg.get("cross") is True:
            reply["holder"] = shm.holder()
        return reply

    # -- execution ----------------------------------------------------------------------------

    def _function(self, fid):
        fn = self.functions.get(fid)
        if fn is None:
            with self._fn_lock:
                fn = self.functions.get(fid)
                if fn is None:
                    fn = self.functions[fid] = pickle.loads(self.function_blobs[fid])
        return fn

    def _thread_main(self):
        work = self._work
        while True:
            ins = work.get()
            if ins is None:
                return
            out = self._execute(ins)
            ins = None
            with self._lock:
                self._done.append(out)
                out = None  # hold no result in this frame once it is handed over
                if self._wake:
                    continue
                self._wake = True
            self.loop.call_soon_threadsafe(self._drain)

    def _execute(self, ins):
        """Run one task (on a thread): ExecuteSuccess or ExecuteFailure, without its id."""
        start = time.time()
        try:
            if ins.fid is None:
                result = pickle.loads(ins.args)
            else:
                fn = self._function(ins.fid)
                args, kwargs = pickle.loads(ins.args) if ins.args is not None else ((), {})
                if ins.deps:
                    args = substitute(args, ins.deps)
                    kwargs = substitute(kwargs, ins.deps)
                result = fn(*args, **kwargs)
            stop = time.time()
            data = None
            nbytes = sizeof(result)
            small = nbytes <= INLINE_RESULT
            if (ins.want and small) or type(result) not in _PLAIN:
                try:  # find out now, not when a peer or the client asks for it
                    data = protocol.fast_dumps(result) if small else (
                        protocol.serialize(result) and None)
                except Exception as e:
                    raise TypeError(f"the result of {ins.key!r} ({type(result).__name__}) "
                                    f"cannot be pickled: {type(e).__name__}: {e}") from e
                data = protocol.wrap(data) if ins.want and data is not None else None
            return (True, ins.key, result, nbytes, data, start, stop)
        except Exception as e:
            if hasattr(e, "add_note"):  # Python 3.11+: the client's traceback names the task
                e.add_note(f"(raised by task {ins.key!r} on worker {self.name})")
            return (False, ins.key, dumps_exception(e), format_traceback(e), None, start,
                    time.time())

    def _drain(self):
        """Results from the threads, as one batch of stimuli."""
        with self._lock:
            done, self._done, self._wake = self._done, [], False
        sid = f"executed-{next(self._ids)}"
        self.handle(*[
            ExecuteSuccess(sid, key, a, b, data, start, stop) if ok else
            ExecuteFailure(sid, key, a, b, start, stop)
            for ok, key, a, b, data, start, stop in done])

    # -- health -------------------------------------------------------------------------------

    async def _heartbeats(self):
        usage = ProcessUsage()
        parent = os.getppid()
        while self.status == "running":
            await asyncio.sleep(self.heartbeat_interval)
            if os.getppid() != parent:
                logger.error("worker %s: its parent process (the nanny) is gone; exiting",
                             self.name)
                await self.close(reason="parent died")
                return
            rss, cpu = usage.read()
            state = self.state
            if self.memory_limit:
                paused = rss > self.memory_pause * self.memory_limit
                if paused != state.paused:
                    logger.warning("worker %s %s: memory %d MB of limit %d MB", self.name,
                                   "paused" if paused else "resumed", rss >> 20,
                                   self.memory_limit >> 20)
                    sid = f"memory-{next(self._ids)}"
                    self.handle(Pause(stimulus_id=sid) if paused else Unpause(stimulus_id=sid))
            if self.stream is not None and not self.stream.closed:
                self.stream.send({"op": "heartbeat", "metrics": {
                    "memory": rss, "cpu": cpu, "executing": state.executing,
                    "ready": len(state.ready), "stored": len(state.data),
                    "nbytes": state.nbytes, "executed": state.executed}})


class PreloadError(RuntimeError):
    """A --preload module could not be imported or its dask_setup(worker) raised."""


def run_preload(spec: str, worker):
    """Import *spec* (a module name, or a path to a .py file) and call its
    ``dask_setup(worker)`` if it has one, as dask's workers do; returns the module."""
    import importlib
    import importlib.util

    try:
        if spec.endswith(".py"):
            path = os.path.abspath(os.path.expanduser(spec))
            name = os.path.splitext(os.path.basename(path))[0]
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None or not os.path.isfile(path):
                raise FileNotFoundError(f"no such file: {path}")
            module = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
    except Exception as e:
        raise PreloadError(f"worker {worker.name}: --preload {spec}: cannot import it: "
                           f"{type(e).__name__}: {e}") from e
    setup = getattr(module, "dask_setup", None)
    if setup is not None:
        try:
            setup(worker)
        except Exception as e:
            raise PreloadError(f"worker {worker.name}: --preload {spec}: its dask_setup(worker) "
                               f"raised {type(e).__name__}: {e}\n{format_traceback(e)}") from e
    logger.info("worker %s: preloaded %s%s", worker.name, spec,
                " (ran dask_setup)" if setup is not None else "")
    return module


def main(argv=None):
    """Run one worker process in the foreground (the nanny starts these)."""
    from ..node import add_worker_arguments

    p = argparse.ArgumentParser(prog="python -m jobqueue.core.worker")
    add_worker_arguments(p, nanny=False)    # the options of `jobqueue worker`, one process
    args = vars(p.parse_args(argv))
    scheduler = args.pop("scheduler")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def run():
        gc.freeze()  # the modules loaded so far live as long as the process: never scan them
        # options not given keep Worker's defaults (the nanny gives them all, from the config)
        w = Worker(scheduler, **{k: v for k, v in args.items() if v is not None})
        try:
            await w.start()
        except PreloadError as e:
            logger.error("%s", e)
            return EXIT_PRELOAD_FAILED
        except (CommClosedError, RuntimeError) as e:
            logger.error("%s", e)
            return EXIT_NO_SCHEDULER
        await w.finished()
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())

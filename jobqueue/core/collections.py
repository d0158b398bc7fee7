"""The Client's dask side: get, compute, persist, futures_of, and being dask's default scheduler.

Nothing here imports dask at module level: a Client made in a process without dask never
loads it. While a Client is open (``set_as_default=True``) it is dask's scheduler: set in
dask's config now if dask is already imported, or the moment ``dask.config`` is first
imported (an import hook), so ``import dask`` after ``Client()`` still runs on the cluster.
"""
from __future__ import annotations

import contextlib

import importlib.abc
import importlib.util
import logging
import sys
import threading

from .. import params
from . import graph as graph_mod

logger = logging.getLogger("jobqueue.client")


@params.document()
class DaskMixin:
    """Methods of :class:`~jobqueue.core.client.Client` for dask collections and graphs."""

    asynchronous = False  # dask asks before calling get(): this client is synchronous

    def get(self, dsk, keys, *, workers=None, allow_other_workers=None, retries=None,
            priority=0, sync=True, resources=None, **kwargs):
        """Compute *keys* of a dask graph: their results in the same structure, or Futures.

        dask calls this when the client is its scheduler (``dask.compute(x)``).

        Parameters
        ----------
        dsk : dict, HighLevelGraph or dask expression
            The graph.
        keys : key or nested lists of keys
            What to compute.
        sync : bool, default True
            Return the results rather than Futures.
        **kwargs
            Options ``dask.compute()`` passes on to every scheduler; not used here.
        """
        flat = _flatten(keys)
        futures = self._graph_to_futures(dsk, flat, dict(
            workers=workers, allow_other_workers=allow_other_workers, retries=retries,
            priority=priority, resources=resources))
        packed = _pack(keys, futures)
        return self.gather(packed) if sync else packed

    def compute(self, collections, sync=False, optimize_graph=True, workers=None,
                allow_other_workers=None, retries=None, priority=0, traverse=True,
                resources=None, **kwargs):
        """Futures of dask collections (``sync=True``: their results); a list in, a list out.

        Parameters
        ----------
        traverse : bool, default True
            Look for collections inside lists, tuples, sets and dicts given.
        **kwargs
            Options of dask.distributed's ``compute`` that have no meaning here; not used.

        Examples
        --------
        >>> import dask.array as da
        >>> x = da.ones((1000, 1000), chunks=100)
        >>> client.compute(x.sum(), sync=True)
        1000000.0
        """
        dask = graph_mod.require_dask()
        single = not isinstance(collections, (list, tuple, set, frozenset))
        items = [collections] if single else list(collections)
        if traverse:
            items = [dask.delayed(a) if isinstance(a, (list, tuple, set, dict)) else a
                     for a in items]
        variables = [a for a in items if dask.is_dask_collection(a)]
        out = list(items)
        if variables:
            expr, keys = graph_mod.collections_expr(variables, optimize_graph, finalize=True)
            names = [k for ks in keys for k in _flatten(ks)]
            futures = self._graph_to_futures(expr, names, dict(
                workers=workers, allow_other_workers=allow_other_workers, retries=retries,
                priority=priority, resources=resources))
            it = iter(names)
            out = [futures[next(it)] if dask.is_dask_collection(a) else a for a in items]
        if sync:
            out = self.gather(out)
        return out[0] if single else out

    def persist(self, collections, optimize_graph=True, workers=None,
                allow_other_workers=None, retries=None, priority=0, resources=None, **kwargs):
        """Collections of the same shape whose chunks are computed, and kept, on the workers:
        their graphs hold Futures. Returns at once; a list in, a list out.

        Parameters
        ----------
        **kwargs
            Options of dask.distributed's ``persist`` that have no meaning here; not used.
        """
        graph_mod.require_dask()
        single = not isinstance(collections, (list, tuple, set, frozenset))
        items = [collections] if single else list(collections)
        expr, keys = graph_mod.collections_expr(items, optimize_graph, finalize=False)
        flat = [k for ks in keys for k in _flatten(ks)]
        futures = self._graph_to_futures(expr, flat, dict(
            workers=workers, allow_other_workers=allow_other_workers, retries=retries,
            priority=priority, resources=resources))
        out = []
        for coll, ks in zip(items, keys):
            rebuild, args = coll.__dask_postpersist__()
            out.append(rebuild({k: futures[k] for k in _flatten(ks)}, *args))
        return out[0] if single else out

    def _graph_to_futures(self, dsk, keys, options) -> dict:
        """{dask key: Future} for *keys* of the graph, whose tasks are sent to the scheduler."""
        import dask

        from .client import GRAPH_PART, Future

        self._check_open()
        annotations = dict(dask.get_annotations())
        annotations.update({k: v for k, v in options.items() if v})
        materialized, by_type = graph_mod.materialize(dsk, keys)

        def held(key):
            st = self._states.get(key)
            return st is not None and st.status not in ("cancelled", "lost")

        conv = graph_mod.Converter(materialized, keys, held, self._graph_function_id,
                                   by_type, annotations)
        names = conv.names()
        futures = {k: Future(names[k], self) for k in keys}
        part, graph = [], len(conv.order)
        for row in conv.rows():  # parts go out while the next ones are made
            part.append(row)
            if len(part) == GRAPH_PART:
                self._send(tasks=part, graph=graph)
                part, graph = [], None
        if part:
            self._send(tasks=part, graph=graph)
        return futures

    def _graph_function_id(self, func):
        try:
            hash(func)
        except TypeError:
            return self._function_id(func, cache=False)
        return self._function_id(func, cache=True)

    def _collections_to_futures(self, args, kwargs):
        """dask collections among the arguments are computed first; the task gets results."""
        if "dask" not in sys.modules:
            return args, kwargs
        import dask

        if any(dask.is_dask_collection(a) for a in args):
            args = tuple(self.compute(a) if dask.is_dask_collection(a) else a for a in args)
        if any(dask.is_dask_collection(v) for v in kwargs.values()):
            kwargs = {k: self.compute(v) if dask.is_dask_collection(v) else v
                      for k, v in kwargs.items()}
        return args, kwargs

    def retry(self, futures):
        """Run failed tasks again: the erred ones among *futures* and the failed tasks they
        depend on."""
        from .client import ERROR, PENDING, Future

        if isinstance(futures, Future):
            futures = [futures]
        keys = []
        with self._cond:
            for f in futures:
                if f._state.status == ERROR:
                    f._state.status, f._state.exception, f._state.traceback = PENDING, None, None
                    keys.append(f.key)
        if keys:
            self._send({"op": "retry", "keys": keys})

    def shutdown(self):
        """Close the cluster (scheduler and workers) and this client. A client connected to a
        scheduler by address asks the scheduler to close its workers and itself."""
        if self.asynchronous:
            return self._shutdown_async()
        if self.cluster is not None:
            cluster = self.cluster
            self.close()
            cluster.close()
            return
        if self.status == "running":
            try:
                self._sync(self._request({"op": "terminate"}), 30)
            except Exception as e:  # the connection closes as the scheduler does
                logger.info("scheduler at %s: %s", self.address, e)
        self.close()

    async def _shutdown_async(self):
        if self.cluster is not None:
            await self.close()
            await self.cluster.close()
            return
        if self.status == "running":
            try:
                await self._sync(self._request({"op": "terminate"}), 30)
            except Exception as e:  # the connection closes as the scheduler does
                logger.info("scheduler at %s: %s", self.address, e)
        await self.close()

    @contextlib.contextmanager
    def as_current(self):
        """Context manager: this client is dask's scheduler inside the block."""
        with _lock:
            _stack.append(self)
            _apply()
        try:
            yield self
        finally:
            with _lock:
                for i in range(len(_stack) - 1, -1, -1):
                    if _stack[i] is self:
                        del _stack[i]
                        break
                _apply()


def _flatten(keys) -> list:
    if isinstance(keys, list):
        return [k for x in keys for k in _flatten(x)]
    return [keys]


def _pack(keys, futures):
    if isinstance(keys, list):
        return [_pack(k, futures) for k in keys]
    return futures[keys]


@params.document()
def futures_of(obj) -> list:
    """The Futures in *obj*.

    Parameters
    ----------
    obj : object
        A Future, a persisted dask collection, or lists, tuples, sets and dicts of them.
    """
    from .client import Future

    out, seen, stack = [], set(), [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, Future):
            if x.key not in seen:
                seen.add(x.key)
                out.append(x)
        elif isinstance(x, (list, tuple, set, frozenset)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif hasattr(type(x), "__dask_graph__"):
            graph = x.__dask_graph__()
            if graph is not None:
                stack.extend(graph.values())
    return out


# -- being dask's default scheduler --------------------------------------------------------------

_lock = threading.Lock()
_stack: list = []           # open clients that asked to be the default, oldest first
_previous = [None]          # dask.config.set context entered for the newest, if dask is loaded


def register_default(client) -> None:
    """*client* becomes dask's scheduler (now, or when dask.config is imported)."""
    with _lock:
        _stack.append(client)
        _apply()


def unregister_default(client) -> None:
    with _lock:
        if client in _stack:
            _stack.remove(client)
            _apply()


def _apply():
    """Point dask's config at the newest registered client (called with _lock held)."""
    config = sys.modules.get("dask.config")
    if config is None or not hasattr(config, "set"):
        if _stack and not any(isinstance(f, _DaskConfigHook) for f in sys.meta_path):
            sys.meta_path.insert(0, _DaskConfigHook())
        return
    ctx, _previous[0] = _previous[0], None
    if ctx is not None:
        ctx.__exit__(None, None, None)
    if _stack:
        _previous[0] = config.set(_settings(config, _stack[-1]))


class _CurrentClient:
    """dask's scheduler while a jobqueue Client is the default: a call goes to the newest open
    client (``get``, and ``persist`` which dask.persist looks for). dask's config holds this
    module-level object rather than a Client, so the config stays picklable: dask.distributed's
    nanny pickles it into every worker process it spawns, and a Client cannot be pickled."""

    def __call__(self, dsk, keys, **kwargs):
        return current_client().get(dsk, keys, **kwargs)

    def persist(self, collections, **kwargs):
        return current_client().persist(collections, **kwargs)

    def __reduce__(self):
        return "CURRENT_CLIENT"

    def __repr__(self):
        return f"<jobqueue's default Client: {_stack[-1] if _stack else 'none open'}>"


CURRENT_CLIENT = _CurrentClient()


def current_client():
    """The jobqueue Client that is dask's scheduler now."""
    with _lock:
        if not _stack:
            raise RuntimeError("no jobqueue Client is open as dask's scheduler")
        return _stack[-1]


def _settings(config, client) -> dict:
    """dask config while *client* is the scheduler. Dataframe shuffles default to the task-based
    method, as dask.distributed's do without P2P: dask's default without a distributed client
    is "disk", files on whichever node runs a task, which a cluster of several nodes cannot
    share."""
    values = {"scheduler": CURRENT_CLIENT}
    if not config.get("dataframe.shuffle.method", None):
        values["dataframe.shuffle.method"] = "tasks"
    return values


class _DaskConfigHook(importlib.abc.MetaPathFinder):
    """Runs _apply() right after ``dask.config`` is first imported, then removes itself."""

    def find_spec(self, name, path, target=None):
        if name != "dask.config":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_and_apply(module):
            exec_module(module)
            with _lock:
                _apply()

        loader.exec_module = exec_and_apply
        return spec

"""dask graphs -> our task rows. Pure: no I/O, no client; dask is imported only when called.

A dask graph (an expression, a HighLevelGraph or a plain dict, in the task spec of dask 2025+:
``Task``, ``Alias``, ``DataNode``, ``TaskRef``, nested ``List``/``Tuple``/``Set``/``Dict``, or
the legacy tuple format) becomes the rows of an ``update-graph`` message::

    [key, group, fid, args, dependency keys, restrictions, retries, priority, flags]

- keys are strings: a dask key ``('x-ab12', 0, 3)`` becomes ``"('x-ab12', 0, 3)"``, a str key
  stays itself (:func:`key_name`);
- one pickled function per distinct callable: a task whose arguments are plain values,
  references and containers of them is sent as its function and its arguments, with our
  ``TaskRef`` for every input (the worker substitutes the inputs' values); any other task (an
  argument that is itself a task) runs as :func:`execute_node` of the pickled node;
- aliases that nobody asked for are not tasks: their dependents refer to the target directly;
- ``priority`` is dask.order's position, less the user's priority (annotation or argument)
  times 2**40: the scheduler adds a base per graph, so graphs run first come first served and
  within a graph in dask.order's order (what lets a reduction stream through memory);
- ``restrictions``: the ``workers`` annotation, or with ``resources`` ({"GPU": 1}, dask's
  annotation) ``{"workers": [...] or None, "resources": {...}}``;
- ``flags``: WANTED (a Future holds the key), LOOSE (restrictions are a preference).

Rows come in dask.order's order, which is topological: every dependency comes first.
"""
from __future__ import annotations

import pickle

from .protocol import TaskRef, fast_dumps, wrap
from .scheduler_state import LOOSE, USER_PRIORITY, WANTED

MIN_DASK = (2025, 4, 0)
ANNOTATIONS = ("retries", "workers", "allow_other_workers", "priority", "resources")


class GraphError(ValueError):
    """A graph that cannot run: names the key that is wrong and why."""


def require_dask():
    """The dask module, or ImportError naming the version needed."""
    want = ".".join(map(str, MIN_DASK))
    try:
        import dask
    except ImportError as e:
        raise ImportError(f"dask collections need dask>={want}: pip install "
                          f"'jobqueue[dask]' ({e})") from None
    check_version(dask.__version__)
    return dask


def check_version(version: str) -> None:
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit()) if p else ""
        if not digits:
            break
        parts.append(int(digits))
    if tuple(parts) < MIN_DASK:
        raise ImportError(f"dask {version} is older than supported: jobqueue needs dask>="
                          f"{'.'.join(map(str, MIN_DASK))} (its task spec); "
                          "pip install -U 'jobqueue[dask]'")


def key_name(key) -> str:
    """Our string key for a dask key."""
    return key if type(key) is str else str(key)


def execute_node(node, keys, *values):
    """Run a dask graph node on a worker: *values* are the results of its dependency *keys*."""
    return node(dict(zip(keys, values)))


# -- from what users hand us to a plain graph ----------------------------------------------------

def collections_expr(collections, optimize_graph=True, finalize=True):
    """(expression, [keys of each collection]) as dask.compute (finalize) or persist builds them."""
    require_dask()
    from dask.base import collections_to_expr

    expr = collections_to_expr(list(collections), optimize_graph)
    if finalize:
        from dask._expr import FinalizeCompute

        expr = FinalizeCompute(expr)
    expr = expr.optimize()
    return expr, expr.__dask_keys__()


def materialize(graph, keys):
    """(dict of GraphNodes, annotations by type) from an expression, HighLevelGraph or dict.
    A plain dict is culled to what *keys* need (expressions cull themselves)."""
    require_dask()
    from dask._task_spec import Alias, convert_legacy_graph
    from dask.highlevelgraph import HighLevelGraph

    annotations: dict = {}
    cull = isinstance(graph, dict)
    if isinstance(graph, HighLevelGraph):
        from dask._expr import HLGExpr

        graph = HLGExpr(graph)
    if not isinstance(graph, dict):
        for kind, per_key in (graph.__dask_annotations__() or {}).items():
            annotations.setdefault(kind, {}).update(per_key)
        graph = graph.__dask_graph__()
    dsk = {}
    for k, v in graph.items():  # our Futures, for dask versions that do not know them
        dsk[k] = Alias(k, v.key) if getattr(v, "__dask_future__", False) else v
    dsk = convert_legacy_graph(dsk)
    if cull:
        dsk = _cull(dsk, keys)
    return dsk, annotations


def _cull(dsk, keys):
    out, work = {}, list(keys)
    while work:
        k = work.pop()
        if k in out or k not in dsk:
            continue
        out[k] = node = dsk[k]
        work.extend(node.dependencies)
    return out


# -- to rows -------------------------------------------------------------------------------------

class _NotPlain(Exception):
    pass


class Converter:
    """Turns one materialized graph into rows; *function_id(func)* -> fid (pickles it once)."""

    def __init__(self, dsk, wanted, held, function_id, annotations=None, defaults=None):
        import dask.order
        from dask import _task_spec as spec
        from dask.utils import key_split

        self.spec = spec
        self.key_split = key_split
        self.dsk = dsk
        self.wanted = set(wanted)
        self.held = held
        self.function_id = function_id
        self.annotations = annotations or {}
        self.defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
        self.groups: dict = {}
        self._plain = None
        self.target = self._resolve_aliases()
        missing = self._missing()
        if missing:
            raise GraphError(missing)
        self.order = dask.order.order(dsk) if dsk else {}

    def _resolve_aliases(self) -> dict:
        """{alias key: final target} for aliases nobody asked for."""
        Alias, dsk, wanted = self.spec.Alias, self.dsk, self.wanted
        target = {}
        for k, node in dsk.items():
            if type(node) is Alias and k not in wanted:
                t, seen = node.target, {k}
                while t in dsk and type(dsk[t]) is Alias and t not in wanted and t not in seen:
                    seen.add(t)
                    t = dsk[t].target
                target[k] = t
        return target

    def name(self, key) -> str:
        return key_name(self.target.get(key, key))

    def _missing(self):
        """Why the graph cannot run, if a dependency is neither in it nor held by a Future."""
        dsk, Alias = self.dsk, self.spec.Alias

        def future_of(k):  # an alias under which a graph refers to one of our Futures
            node = dsk[k]
            return type(node) is Alias and key_name(node.target) == key_name(k)

        def absent(d):
            return (d not in dsk or future_of(d)) and not self.held(key_name(d))

        for k, node in dsk.items():
            if future_of(k):
                continue
            for d in node.dependencies:
                if absent(d):
                    return (f"task {k!r} depends on {d!r}, which is neither in the graph nor "
                            "held by a Future of this client (released, cancelled, lost or "
                            "never computed)")
        for k in self.wanted:
            if k not in dsk and not self.held(key_name(k)):
                return f"the key {k!r} asked for is not in the graph"
        return None

    def names(self) -> dict:
        """{dask key: our key} of the wanted keys."""
        return {k: self.name(k) for k in self.wanted}

    def rows(self):
        """The rows, in dask.order's order (a generator: the first can be sent while the
        rest are made)."""
        dsk, target = self.dsk, self.target
        for k in sorted(dsk, key=self.order.__getitem__):
            if k in target:
                continue
            row = self._row(k, dsk[k])
            if row is not None:
                yield row

    def _row(self, key, node):
        spec, name = self.spec, key_name(key)
        if type(node) is spec.Alias and self.name(node.target) == name:
            return None  # a key held by one of our Futures, under its own name
        try:
            if type(node) is spec.DataNode:
                fid, blob = None, _dumps_value(key, node.value)
            elif type(node) is spec.Task and not isinstance(node, spec.NestedContainer):
                args = tuple(self._arg(a) for a in node.args)
                kwargs = {k: self._arg(v) for k, v in node.kwargs.items()}
                fid, blob = self._fid(key, node.func), _dumps_args(key, args, kwargs)
            else:
                raise _NotPlain
        except _NotPlain:
            keys = list(node.dependencies)
            refs = tuple(TaskRef(self.name(d)) for d in keys)
            fid = self._fid(key, execute_node)
            blob = _dumps_args(key, (node, keys) + refs, {})
        deps = list(dict.fromkeys(self.name(d) for d in node.dependencies))
        restrictions, retries, user, loose = self._annotations(key)
        flags = (WANTED if key in self.wanted else 0) | (LOOSE if loose else 0)
        priority = self.order[key] - user * USER_PRIORITY
        return [name, self._group(key), fid, wrap(blob), deps, restrictions, retries, priority,
                flags]

    def _arg(self, a):
        spec = self.spec
        t = type(a)
        if t is spec.TaskRef:
            return TaskRef(self.name(a.key))
        if not isinstance(a, spec.GraphNode):
            return a
        if t is spec.Alias:
            return TaskRef(self.name(a.target))
        if t is spec.DataNode:
            return a.value
        if t is spec.List or t is spec.Tuple or t is spec.Set:
            return a.klass(self._arg(x) for x in a.args)
        if t is spec.Dict:
            items = a.args
            return {self._arg(items[i]): self._arg(items[i + 1]) for i in range(0, len(items), 2)}
        raise _NotPlain

    def _fid(self, key, func):
        try:
            return self.function_id(func)
        except TypeError as e:
            raise GraphError(f"task {key!r}: {e}") from None

    def _group(self, key) -> str:
        prefix = key[0] if type(key) is tuple and key else key
        g = self.groups.get(prefix)
        if g is None:
            g = self.groups[prefix] = str(self.key_split(prefix))
        return g

    def _annotations(self, key):
        """(restrictions, retries, user priority, loose) of the task *key*."""
        if not self.annotations:  # the common case: the same for every task
            if self._plain is None:
                self._plain = self._check(key, self.defaults)
            return self._plain
        values = dict(self.defaults)
        for kind in ANNOTATIONS:
            per_key = self.annotations.get(kind)
            if per_key and key in per_key:
                values[kind] = per_key[key]
        return self._check(key, values)

    def _check(self, key, values):
        workers = values.get("workers")
        if isinstance(workers, str):
            workers = [workers]
        if workers is not None:
            if not all(isinstance(w, str) for w in workers):
                raise GraphError(f"task {key!r}: the 'workers' annotation must be a worker "
                                 f"address or name, or a list of them, not {workers!r}")
            workers = list(workers) or None
        retries, priority = values.get("retries", 0), values.get("priority", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise GraphError(f"task {key!r}: the 'retries' annotation must be an int >= 0, "
                             f"not {retries!r}")
        if not isinstance(priority, (int, float)) or isinstance(priority, bool):
            raise GraphError(f"task {key!r}: the 'priority' annotation must be a number, "
                             f"not {priority!r}")
        resources = values.get("resources")
        if resources:
            from .placement import check_resources

            try:
                resources = check_resources(resources, "the 'resources' annotation")
            except ValueError as e:
                raise GraphError(f"task {key!r}: {e}") from None
            workers = {"workers": workers, "resources": resources}
        return workers, retries, round(priority), bool(values.get("allow_other_workers"))


def _dumps_args(key, args, kwargs) -> bytes:
    """Plain pickle when it pickles everything by reference to importable modules (three times
    faster than cloudpickle on a graph's nested tasks), else cloudpickle."""
    try:
        if not _by_value_modules():
            blob = pickle.dumps((args, kwargs), protocol=5)
            if b"__main__" not in blob:
                return blob
    except Exception:
        pass
    try:
        return fast_dumps((args, kwargs))
    except Exception as e:
        raise GraphError(f"cannot pickle the arguments of task {key!r}: "
                         f"{type(e).__name__}: {e}") from e


def _by_value_modules() -> bool:
    """Whether a user asked cloudpickle to pickle some module by value."""
    import cloudpickle

    return bool(getattr(cloudpickle.cloudpickle, "_PICKLE_BY_VALUE_MODULES", None))


def _dumps_value(key, value) -> bytes:
    try:
        import cloudpickle

        return cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        raise GraphError(f"cannot pickle the data of {key!r} ({type(value).__name__}): "
                         f"{type(e).__name__}: {e}") from e

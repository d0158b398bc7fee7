"""Pure tests: graph.py's conversion, and the scheduler state's graph stimuli (no network)."""
import operator
import pickle

import pytest

dask = pytest.importorskip("dask")
from dask._task_spec import Alias, DataNode, List, Task, TaskRef  # noqa: E402

from jobqueue.core import protocol  # noqa: E402
from jobqueue.core.graph import (LOOSE, WANTED, Converter, GraphError, execute_node,  # noqa
                                 key_name, materialize)
from jobqueue.core.scheduler_state import SchedulerState  # noqa: E402

A, B = "tcp://a:1", "tcp://b:1"


def inc(x):
    return x + 1


def convert(dsk, keys, held=(), **defaults):
    functions = {}

    def fid(func):
        functions.setdefault(f"f{len(functions)}", func)
        return next(k for k, v in functions.items() if v is func)

    dsk, annotations = materialize(dsk, keys)
    conv = Converter(dsk, keys, set(held).__contains__, fid, annotations, defaults)
    return list(conv.rows()), conv.names(), functions


def run_row(row, functions, values):
    """What a worker does with a row, given the results of its dependencies by our key."""
    key, group, fid, args = row[:4]
    if fid is None:
        return pickle.loads(args)
    a, kw = pickle.loads(args)
    a, kw = protocol.substitute(a, values), protocol.substitute(kw, values)
    return functions[fid](*a, **kw)


def run_all(rows, functions):
    values = {}
    for row in rows:  # rows are in topological order
        values[row[0]] = run_row(row, functions, values)
    return values


def test_rows_are_topological_and_aliases_resolved():
    dsk = {("x", 0): DataNode(("x", 0), 1), "a": Alias("a", ("x", 0)), "b": Alias("b", "a"),
           "c": Task("c", inc, TaskRef("b")), "d": Task("d", operator.add, TaskRef("c"),
                                                        TaskRef("a"))}
    rows, names, functions = convert(dsk, ["d"])
    assert [r[0] for r in rows] == ["('x', 0)", "c", "d"]       # no alias is a task
    assert rows[1][4] == ["('x', 0)"] and sorted(rows[2][4]) == ["('x', 0)", "c"]
    assert names == {"d": "d"} and [r[8] & WANTED for r in rows] == [0, 0, WANTED]
    assert [r[7] for r in rows] == sorted(r[7] for r in rows)   # dask.order's positions
    assert run_all(rows, functions)["d"] == 3


def test_one_function_per_callable_and_generic_nodes():
    dsk = {f"i{n}": Task(f"i{n}", inc, n) for n in range(5)}
    dsk["s"] = Task("s", sum, List(*(TaskRef(f"i{n}") for n in range(5))))
    dsk["nested"] = Task("nested", inc, Task(None, sum, List(TaskRef("i0"), TaskRef("s"))))
    rows, names, functions = convert(dsk, ["s", "nested"])
    by_key = {r[0]: r for r in rows}
    assert len({by_key[f"i{n}"][2] for n in range(5)}) == 1    # inc: one function id
    assert functions[by_key["nested"][2]] is execute_node       # a task inside an argument
    values = run_all(rows, functions)
    assert values["s"] == 15 and values["nested"] == 17


def test_legacy_graph_culled_and_keys_named():
    dsk = {("x", 0): 1, ("x", 1): (inc, ("x", 0)), "unused": (inc, 5)}
    rows, names, _ = convert(dsk, [("x", 1)])
    assert [r[0] for r in rows] == ["('x', 0)", "('x', 1)"]
    assert names == {("x", 1): "('x', 1)"} and key_name(("x", 1)) == "('x', 1)"
    assert rows[0][1] == rows[1][1] == "x"                      # group: the key's prefix


def test_annotations_and_defaults_become_row_fields():
    dsk = {"a": Task("a", inc, 1), "b": Task("b", inc, TaskRef("a"))}
    rows, _, _ = convert(dsk, ["b"], retries=3, workers="w1", allow_other_workers=True,
                         priority=2)
    for r in rows:
        assert r[5] == ["w1"] and r[6] == 3 and r[8] & LOOSE
        assert r[7] < 0                                         # user priority first
    dsk, _ = materialize({"a": Task("a", inc, 1)}, ["a"])
    conv = Converter(dsk, ["a"], lambda k: False, id, {"retries": {"a": 5}}, {"retries": 1})
    assert list(conv.rows())[0][6] == 5                         # the task's own wins


def test_resources_annotation_becomes_the_row_restrictions():
    dsk = {"a": Task("a", inc, 1), "b": Task("b", inc, TaskRef("a"))}
    rows, _, _ = convert(dsk, ["b"], resources={"GPU": 1})
    assert [r[5] for r in rows] == [{"workers": None, "resources": {"GPU": 1}}] * 2
    rows, _, _ = convert(dsk, ["b"], resources={"GPU": 1}, workers=["w1"])
    assert rows[0][5] == {"workers": ["w1"], "resources": {"GPU": 1}}
    dsk, _ = materialize({"a": Task("a", inc, 1)}, ["a"])
    conv = Converter(dsk, ["a"], lambda k: False, id, {"resources": {"a": {"FOO": 2}}}, {})
    assert list(conv.rows())[0][5] == {"workers": None, "resources": {"FOO": 2}}
    with pytest.raises(GraphError, match=r"task 'a': the 'resources' annotation: the amount "
                                         r"of 'GPU' must be a number >= 0"):
        list(Converter(dsk, ["a"], lambda k: False, id, {}, {"resources": {"GPU": "x"}}).rows())


def test_held_futures_and_missing_keys():
    class F:
        __dask_future__ = True

        def __init__(self, key):
            self.key = key

    dsk = {("p", 0): F("('p', 0)"), "out": Task("out", inc, TaskRef(("p", 0)))}
    rows, _, _ = convert(dsk, ["out"], held={"('p', 0)"})
    assert [r[0] for r in rows] == ["out"] and rows[0][4] == ["('p', 0)"]
    with pytest.raises(GraphError, match=r"task 'out' depends on \('p', 0\), which is neither"):
        convert(dsk, ["out"])


# -- the scheduler's side ---------------------------------------------------------------------

def row(key, deps=(), priority=0, flags=0, restrictions=None, retries=0):
    return [key, key[0], "f", b"args", list(deps), restrictions, retries, priority, flags]


@pytest.fixture
def s():
    state = SchedulerState(allowed_failures=1)
    state.add_client("c1")
    yield state
    state.validate()


def test_only_wanted_keys_are_held_and_intermediates_released(s):
    s.add_worker(A, "a", 4, 0)
    s.update_graph("c1", [row("x1", priority=0), row("x2", priority=1),
                          row("y", ["x1", "x2"], priority=2, flags=WANTED)], {"f": b"F"}, graph=3)
    s.validate()
    assert {t.key for t in s.clients["c1"].wants} == {"y"}
    s.task_finished(A, "x1", 8, "int")
    s.task_finished(A, "x2", 8, "int")
    s.task_finished(A, "y", 8, "int")
    s.validate()
    assert s.tasks["y"].state == "memory" and s.tasks["x1"].state == "released"
    s.release_keys("c1", ["y"])
    assert not s.tasks


def test_graph_priorities_order_the_queue_and_user_priority_wins(s):
    s.update_graph("c1", [row("a1", priority=1, flags=WANTED), row("a0", priority=0,
                                                                   flags=WANTED)],
                   {"f": b"F"}, graph=2)
    s.update_graph("c1", [row("b0", priority=0 - 2 * (1 << 40), flags=WANTED)], graph=1)
    s.update_graph("c1", [["m", "m", "f", b"", [], None, 0]])   # a plain submit, last
    s.take()
    s.add_worker(A, "a", 1, 0)
    s.take()
    order = []
    for _ in range(4):
        (key,) = [t.key for t in s.workers[A].processing][:1]
        order.append(key)
        s.task_finished(A, key, 1, "int")
        s.take()
    assert order == ["b0", "a0", "a1", "m"]


def test_loose_restrictions_fall_back_to_any_worker(s):
    s.add_worker(A, "a", 1, 0)
    s.update_graph("c1", [row("s", restrictions=["tcp://gone:1"], flags=WANTED),
                          row("l", restrictions=["tcp://gone:1"], flags=WANTED | LOOSE)],
                   {"f": b"F"}, graph=2)
    assert s.tasks["s"].state == "no-worker" and s.tasks["l"].state == "processing"


def test_retry_reruns_the_failed_task_and_its_dependents(s):
    s.add_worker(A, "a", 2, 0)
    s.update_graph("c1", [row("x", priority=0), row("y", ["x"], priority=1, flags=WANTED)],
                   {"f": b"F"}, graph=2)
    s.task_erred(A, "x", b"exc", "tb")
    assert s.tasks["y"].state == "erred" and s.tasks["x"].state == "released"
    s.take()
    s.retry("c1", ["y"])
    s.validate()
    wout, _ = s.take()
    assert [m["key"] for m in wout[A] if m["op"] == "compute"] == ["x"]
    s.task_finished(A, "x", 1, "int")
    s.task_finished(A, "y", 1, "int")
    assert s.tasks["y"].state == "memory"

"""Bad input: each a clear error naming the key or version, and the cluster still serving."""
import threading

import pytest

dask = pytest.importorskip("dask")
import dask.array as da  # noqa: E402

from jobqueue.core import graph  # noqa: E402
from jobqueue.core.graph import GraphError  # noqa: E402


def inc(x):
    return x + 1


def still_serving(client):
    x = da.arange(100, chunks=10)
    assert int(x.sum().compute()) == 4950
    assert client.submit(inc, 1, pure=False).result() == 2


def test_graph_referencing_a_missing_key(client):
    from dask._task_spec import Alias, Task, TaskRef

    with pytest.raises(GraphError, match=r"task 'b' depends on 'nowhere', which is neither in "
                                         "the graph nor held by a Future"):
        client.get({"a": 1, "b": Alias("b", "nowhere"), "c": (inc, "b")}, "c")
    with pytest.raises(GraphError, match=r"task 't' depends on \('x', 3\)"):
        client.get({"t": Task("t", inc, TaskRef(("x", 3)))}, "t")
    with pytest.raises(GraphError, match="the key 'zzz' asked for is not in the graph"):
        client.get({"a": 1}, "zzz")
    still_serving(client)


def test_persisted_collection_cancelled_then_used(client):
    from jobqueue import futures_of

    y = da.arange(10, chunks=5).persist()
    client.cancel(futures_of(y))
    with pytest.raises(GraphError, match=r"depends on \"?\('arange-[0-9a-f]+', [01]\)\"?, which is "
                                         "neither in the graph nor held by a Future"):
        (y + 1).compute()
    still_serving(client)


def test_task_that_raises_names_its_key(client):
    def boom(x):
        raise ValueError(f"bad chunk {x.shape}")

    x = da.ones(20, chunks=10).map_blocks(boom, dtype=float)
    with pytest.raises(ValueError, match=r"bad chunk \(10,\)") as info:
        x.sum().compute()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    keys = {str(k) for k in x.sum().__dask_graph__()}  # boom is fused into the sum's chunks
    assert any(f"raised by task {k!r} on worker" in notes for k in keys), notes
    assert "Traceback on the worker" in str(info.value.__cause__)
    still_serving(client)


class Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def __reduce__(self):
        raise TypeError("this chunk refuses pickling")


def make_unpicklable(_):
    return Unpicklable()


def test_unpicklable_chunk(client):
    d = dask.delayed(make_unpicklable, pure=False)(1)
    with pytest.raises(TypeError, match=r"the result of 'make_unpicklable-[0-9a-f-]+' "
                                        r"\(Unpicklable\) cannot be pickled"):
        d.compute()
    with pytest.raises(GraphError, match=r"cannot pickle the data of 'data' \(Unpicklable\)"):
        client.get({"data": Unpicklable(), "out": (type, "data")}, "out")
    still_serving(client)


def test_dask_too_old(monkeypatch, client):
    with pytest.raises(ImportError, match=r"dask 2024\.12\.1 is older than supported: jobqueue "
                                          r"needs dask>=2025\.4\.0"):
        graph.check_version("2024.12.1")
    graph.check_version("2025.4.0")
    graph.check_version("2026.8.0")
    graph.check_version("2026.9.0.dev3+g1234")
    monkeypatch.setattr(dask, "__version__", "2023.1.0")
    with pytest.raises(ImportError, match="dask 2023.1.0 is older than supported"):
        da.ones(4, chunks=2).sum().compute()
    monkeypatch.undo()
    still_serving(client)

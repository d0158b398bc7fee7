"""dask collections on a LocalCluster, each result equal to dask's synchronous scheduler's."""
import operator

import numpy as np
import pytest

dask = pytest.importorskip("dask")  # the test extra installs it; see pyproject.toml
import dask.array as da  # noqa: E402
import dask.bag as db  # noqa: E402
import dask.dataframe as dd  # noqa: E402
import pandas as pd  # noqa: E402


def sync(*collections):
    return dask.compute(*collections, scheduler="sync")


def assert_same(a, b):
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())
    elif isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a.sort_index(), b.sort_index())
    else:
        np.testing.assert_allclose(a, b)


def test_array_reductions(client):
    x = da.random.RandomState(0).random_sample((600, 400), chunks=(100, 80))
    ours = dask.compute(x.sum(), x.mean(axis=0), x.std(), x.max(axis=1), x.argmin())
    for a, b in zip(ours, sync(x.sum(), x.mean(axis=0), x.std(), x.max(axis=1), x.argmin())):
        np.testing.assert_allclose(a, b)


def test_array_transpose_rechunk_matmul(client):
    x = da.random.RandomState(1).random_sample((500, 500), chunks=100)
    exprs = [(x + x.T).mean(axis=1), x.rechunk((250, 50)).sum(axis=0), (x @ x.T)[::7, ::11]]
    for a, b in zip(dask.compute(*exprs), sync(*exprs)):
        np.testing.assert_allclose(a, b)
    assert x.rechunk((250, 50)).compute().shape == (500, 500)


def test_zarr_round_trip(client, tmp_path):
    pytest.importorskip("zarr")
    x = da.random.RandomState(2).random_sample((300, 200), chunks=(100, 50))
    path = str(tmp_path / "x.zarr")
    x.to_zarr(path)  # the store tasks run on the workers, which write the local store
    y = da.from_zarr(path)
    assert y.chunks == x.chunks
    np.testing.assert_array_equal(y.compute(), x.compute(scheduler="sync"))
    np.testing.assert_allclose((y * 2).sum().compute(), (x * 2).sum().compute(scheduler="sync"))


@pytest.fixture
def flights(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(4):
        n = 500
        pd.DataFrame({
            "Origin": rng.choice(["EWR", "JFK", "LGA", "BOS"], n),
            "Dest": rng.choice(["SFO", "LAX", "ORD"], n),
            "DepDelay": rng.normal(10, 30, n).round(1),
            "Distance": rng.integers(100, 3000, n),
        }).to_csv(tmp_path / f"flights-{i}.csv", index=False)
    return str(tmp_path / "flights-*.csv")


def test_dataframe_read_csv_groupby(client, flights):
    df = dd.read_csv(flights)
    exprs = [df.groupby("Origin").DepDelay.mean(),
             df.groupby(["Origin", "Dest"]).agg({"DepDelay": ["mean", "max"], "Distance": "sum"}),
             df.Distance.sum(), df.DepDelay.nlargest(5)]
    for a, b in zip(dask.compute(*exprs), sync(*exprs)):
        assert_same(a, b)


def test_dataframe_shuffle_merge(client, flights):
    df = dd.read_csv(flights)
    airports = dd.from_pandas(pd.DataFrame({"Origin": ["EWR", "JFK", "LGA", "BOS"],
                                            "state": ["NJ", "NY", "NY", "MA"]}), npartitions=2)
    assert dask.config.get("dataframe.shuffle.method") == "tasks"  # set by the client
    merged = df.merge(airports, on="Origin", how="inner")
    expr = merged.groupby("state").Distance.sum()
    ours = expr.compute()
    theirs = expr.compute(scheduler="sync")
    pd.testing.assert_series_equal(ours.sort_index(), theirs.sort_index())
    assert len(merged.compute()) == 2000


def test_dataframe_persist_then_two_computations(client, flights):
    df = dd.read_csv(flights)
    df2 = df[df.DepDelay > 0].persist()
    from jobqueue import futures_of

    held = futures_of(df2)
    assert len(held) == df2.npartitions and all(f.done() or f.status == "pending" for f in held)
    base = df[df.DepDelay > 0]
    pd.testing.assert_series_equal(df2.groupby("Origin").DepDelay.mean().compute().sort_index(),
                                   base.groupby("Origin").DepDelay.mean()
                                   .compute(scheduler="sync").sort_index())
    assert df2.Distance.sum().compute() == base.Distance.sum().compute(scheduler="sync")


def test_bag_map_filter_foldby(client):
    b = db.from_sequence(range(1000), npartitions=8)
    exprs = [b.map(lambda x: x * 3).filter(lambda x: x % 2).sum(),
             b.foldby(lambda x: x % 7, operator.add, 0),
             b.map(str).frequencies(sort=True).take(3, npartitions=-1)]
    ours, theirs = dask.compute(*exprs), sync(*exprs)
    assert ours[0] == theirs[0]
    assert sorted(ours[1]) == sorted(theirs[1])
    assert list(ours[2]) == list(theirs[2])


def test_delayed_graph_of_1000_nodes(client):
    @dask.delayed(pure=True)
    def inc(x):
        return x + 1

    @dask.delayed(pure=True)
    def add(a, b):
        return a + b

    layer = [inc(i) for i in range(501)]
    while len(layer) > 1:  # 500 adds: 1,001 tasks
        layer = [add(layer[i], layer[i + 1]) if i + 1 < len(layer) else layer[i]
                 for i in range(0, len(layer), 2)]
    total = layer[0]
    assert len(total.__dask_graph__()) == 1001
    assert total.compute() == total.compute(scheduler="sync") == sum(range(1, 502))
    fut = client.compute(total)
    assert fut.result() == sum(range(1, 502))


def test_compute_several_collections_at_once(client):
    x = da.arange(100, chunks=10)
    d = dask.delayed(sum)([1, 2, 3])
    s = dd.from_pandas(pd.Series(range(50)), npartitions=5)
    a, b, c, plain = dask.compute(x.sum(), d, s.max(), {"k": 1})
    assert (a, b, c, plain) == (4950, 6, 49, {"k": 1})
    x2, s2 = dask.persist(x + 1, s * 2)
    from jobqueue import futures_of

    assert len(futures_of(x2)) == 10 and len(futures_of(s2)) == 5
    assert int(x2.sum().compute()) == 5050 and int(s2.sum().compute()) == 2450

"""The Client's dask API: get, compute, persist, annotations, retry, pure keys, default."""
import operator
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

dask = pytest.importorskip("dask")
import dask.array as da  # noqa: E402
from dask._task_spec import Alias, DataNode, Dict, List, Task, TaskRef  # noqa: E402

from jobqueue import Client, LocalCluster, futures_of  # noqa: E402


def inc(x):
    return x + 1


def getpid(*_):
    return os.getpid()


def test_get_legacy_tuples_and_nested_keys(client):
    dsk = {"a": 1, "b": (inc, "a"), "c": (operator.add, "a", "b"),
           ("x", 0): (sum, ["a", "b", "c"]), ("x", 1): (inc, ("x", 0)), "d": "c"}
    assert client.get(dsk, "c") == 3
    assert client.get(dsk, [["c", ("x", 1)], "d"]) == [[3, 7], 3]
    futures = client.get(dsk, ["b", ("x", 0)], sync=False)
    assert [f.result() for f in futures] == [2, 6]


def test_get_task_spec(client):
    dsk = {
        "a": DataNode("a", 10),
        "b": Task("b", inc, TaskRef("a")),
        "c": Task("c", sorted, List(TaskRef("b"), TaskRef("a"), 3)),
        "d": Task("d", dict, Dict(k=TaskRef("b"), nested=Task(None, inc, TaskRef("c2")))),
        "c2": Task("c2", operator.getitem, TaskRef("c"), 0),
        "e": Alias("e", "d"),
    }
    assert client.get(dsk, ["c", "e"]) == [[3, 10, 11], {"k": 11, "nested": 4}]


def test_compute_returns_futures_and_sync(client):
    x = da.ones(100, chunks=10)
    fut = client.compute(x.sum())
    assert fut.result() == 100
    assert client.compute([x.sum(), x.max(), 5], sync=True) == [100, 1, 5]


def test_persist_keeps_chunks_on_workers(client):
    x = da.arange(1000, chunks=100) * 2
    y = client.persist(x)
    fs = futures_of(y)
    assert len(fs) == 10 and {f.key for f in fs} == {str(k) for k in
                                                     dask.core.flatten(y.__dask_keys__())}
    info = client.scheduler_info()
    assert sum(w["stored"] for w in info["workers"].values()) >= 0
    client.gather(fs)
    # later graphs run on the persisted chunks: no chunk is computed again
    assert int((y + 1).sum().compute()) == int((x + 1).sum().compute(scheduler="sync"))


def test_annotations_retries_workers_priority(client, tmp_path):
    workers = sorted(client.scheduler_info()["workers"])
    marker = tmp_path / "count"

    def flaky(x):
        n = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(n + 1))
        if n < 2:
            raise OSError(f"try {n}")
        return x

    with dask.annotate(retries=2):
        d = dask.delayed(flaky, pure=False)(7)
    assert d.compute() == 7 and marker.read_text() == "3"

    with dask.annotate(workers=[workers[1]]):
        pids = [dask.delayed(getpid, pure=False)(i) for i in range(6)]
    pids_of = client.run(os.getpid)
    assert set(dask.compute(*pids)) == {pids_of[workers[1]]}
    # workers= as an argument, and allow_other_workers when the worker is not there
    assert client.compute(dask.delayed(getpid, pure=False)(1), workers=[workers[0]],
                          sync=True) == pids_of[workers[0]]
    with dask.annotate(workers=["tcp://nowhere:1"], allow_other_workers=True):
        anywhere = dask.delayed(getpid, pure=False)(2)
    assert anywhere.compute() in pids_of.values()
    with pytest.raises(ValueError, match="'retries' annotation must be an int >= 0"):
        client.compute(dask.delayed(inc)(1), retries=-1)
    with pytest.raises(ValueError, match="'workers' annotation must be a worker address"):
        client.compute(dask.delayed(inc)(1), workers=[1])


def test_priority_orders_graphs_on_one_thread(tmp_path):
    """On one worker thread, a graph with priority=1 submitted last overtakes the earlier
    graphs still queued on the scheduler (not those already handed to the worker)."""
    gate_file = tmp_path / "go"
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        gate = client.submit(_wait_for_file, str(gate_file), pure=False)  # holds the thread
        low = [client.compute(dask.delayed(_stamp, pure=False)(i)) for i in range(6)]
        high = client.compute(dask.delayed(_stamp, pure=False)("high"), priority=1)
        queued = client.scheduler_info()["tasks"].get("queued", 0)
        gate_file.write_text("")
        stamps = client.gather(low)
        before = sum(s < high.result() for s in stamps)
        on_worker = 6 - (queued - 1)  # lows handed to the worker before the high one came
        assert gate.result() and queued >= 4 and before <= on_worker, (stamps, queued)


def _wait_for_file(path):
    import time

    while not os.path.exists(path):
        time.sleep(0.01)
    return path


def _stamp(_):
    import time

    return time.monotonic_ns()


def test_future_retry(client, tmp_path):
    marker = tmp_path / "ok"

    def fails_until_marker():
        if not marker.exists():
            raise RuntimeError("no marker yet")
        return "ok"

    d = dask.delayed(fails_until_marker, pure=False)()
    fut = client.compute(inc_delayed(d))
    with pytest.raises(RuntimeError, match="no marker yet"):
        fut.result()
    marker.write_text("")
    fut.retry()
    assert fut.result() == "ok!"


def inc_delayed(d):
    return dask.delayed(operator.add)(d, "!")


def test_submit_with_a_collection_argument(client):
    x = da.arange(10, chunks=5)
    assert client.submit(np.sum, x).result() == 45
    d = dask.delayed(inc)(1)
    assert client.submit(operator.mul, d, 10).result() == 20


def default_client():
    """The client dask's default scheduler sends work to (None: not one of ours)."""
    from jobqueue.core.collections import CURRENT_CLIENT, current_client

    return current_client() if dask.config.get("scheduler", None) is CURRENT_CLIENT else None


def test_client_is_dask_default_while_open_and_restores(cluster):
    before = dask.config.get("scheduler", None)
    with Client(cluster) as c1:
        assert default_client() is c1
        with Client(cluster) as c2:
            assert default_client() is c2
        assert default_client() is c1
        with Client(cluster, set_as_default=False) as c3:
            assert default_client() is c1
            with c3.as_current():
                assert default_client() is c3
                # dask.distributed's nanny pickles dask's config into each worker it spawns
                assert pickle.loads(pickle.dumps(dask.config.config))["scheduler"] is \
                    dask.config.get("scheduler")
            assert default_client() is c1
    assert dask.config.get("scheduler", None) is before


def test_no_local_computation_while_client_is_default(client, flights_csv):
    """dask's local schedulers run their callbacks for every task: none may fire."""
    import dask.dataframe as dd
    from dask.callbacks import Callback

    ran_locally = []
    main_pid = os.getpid()
    with Callback(pretask=lambda key, dsk, state: ran_locally.append(key)):
        x = da.random.random((200, 200), chunks=50)
        blocks = x.map_blocks(lambda b: np.full(b.shape, os.getpid()), dtype=int)
        pids = set(np.unique(blocks.compute()))
        df = dd.read_csv(flights_csv)
        df.groupby("a").b.mean().compute()
        dask.compute(x.sum(), dask.delayed(getpid, pure=False)())
        x.persist().sum().compute()
    assert ran_locally == []
    assert main_pid not in pids and pids <= set(client.run(os.getpid).values())


@pytest.fixture
def flights_csv(tmp_path):
    import pandas as pd

    pd.DataFrame({"a": [1, 2, 1, 2], "b": [1.0, 2.0, 3.0, 4.0]}).to_csv(tmp_path / "f.csv",
                                                                       index=False)
    return str(tmp_path / "f.csv")


def test_dask_imported_after_client_still_uses_it(tmp_path):
    """A script that creates its Client before importing dask computes on the cluster."""
    script = textwrap.dedent("""
        import os, sys
        from jobqueue import Client, LocalCluster
        assert "dask" not in sys.modules
        with LocalCluster(n_workers=1, dashboard_address=None) as cluster, Client(cluster) as c:
            import dask
            from jobqueue.core.collections import CURRENT_CLIENT, current_client
            assert dask.config.get("scheduler") is CURRENT_CLIENT and current_client() is c
            pid = dask.delayed(os.getpid, pure=False)().compute()
            assert pid != os.getpid() and pid in c.run(os.getpid).values()
        assert dask.config.get("scheduler", None) is None
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_shutdown_closes_the_cluster():
    cluster = LocalCluster(n_workers=1, dashboard_address=None)
    client = Client(cluster, set_as_default=False)
    assert client.submit(inc, 1).result() == 2
    client.shutdown()
    assert client.status == "closed" and cluster.status == "closed"


def test_shutdown_of_a_remote_scheduler_ends_its_process(tmp_path):
    """A client connected by address (no cluster object) asks the scheduler to close: the
    `jobqueue scheduler` process exits."""
    import secrets

    path = tmp_path / "scheduler.json"
    env = dict(os.environ, JOBQUEUE_TOKEN=secrets.token_urlsafe(32))
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "scheduler", "--host",
                             "127.0.0.1", "--port", "0", "--scheduler-file", str(path)],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:                # "scheduler at ...": the file is written
            if line.startswith("scheduler at"):
                break
        import threading

        threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain the rest
        client = Client(scheduler_file=str(path), set_as_default=False)
        assert client.cluster is None and client.scheduler_info()["address"]
        client.shutdown()
        assert client.status == "closed"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

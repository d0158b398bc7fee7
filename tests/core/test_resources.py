"""Abstract resources end to end on a LocalCluster: workers declare them (LocalCluster(resources=),
``jobqueue worker --resources``), tasks request them (submit, map, compute, dask.annotate); a
task lands only on a worker that declares them, as many at once as the amounts allow."""
import os
import subprocess
import sys
import time

import pytest

from _tasks import hold, pid
from jobqueue import Client, LocalCluster


def wait_until(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def start_worker(cluster, name, resources):
    """``jobqueue worker --resources ...`` as a batch job starts it."""
    env = dict(os.environ, JOBQUEUE_TOKEN=cluster.token, PYTHONPATH=os.pathsep.join(sys.path),
               **cluster.scheduler.security.env())
    return subprocess.Popen([sys.executable, "-m", "jobqueue", "worker", cluster.scheduler_address,
                             "--nthreads", "2", "--name", name, "--resources", resources],
                            env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=1, threads_per_worker=4, memory_limit=0,
                      resources={"GPU": 2}) as c:
        proc = start_worker(c, "foo-worker", "FOO=1")
        try:
            c.wait_for_workers(2)
            yield c
        finally:
            proc.terminate()
            proc.wait()


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        yield c


def pids(client):
    return {row["name"]: row["pid"] for row in client.scheduler_info()["workers"].values()}


def test_workers_declare_their_resources(client):
    rows = {r["name"]: r for r in client.scheduler_info()["workers"].values()}
    assert rows["foo-worker"]["resources"] == {"FOO": 1}
    (gpu,) = [r for n, r in rows.items() if n != "foo-worker"]
    assert gpu["resources"] == {"GPU": 2}


def test_tasks_land_only_on_the_worker_that_declares_the_resource(client):
    by_name = pids(client)
    gpu_pid = next(p for n, p in by_name.items() if n != "foo-worker")
    gpu = client.map(pid, range(20), resources={"GPU": 1}, pure=False)
    foo = client.map(pid, range(20), resources={"FOO": 1}, pure=False)
    assert set(client.gather(gpu)) == {gpu_pid}
    assert set(client.gather(foo)) == {by_name["foo-worker"]}
    assert client.submit(pid, resources={"GPU": 2}, pure=False).result() == gpu_pid


def test_concurrency_is_limited_by_the_declared_amount(client, tmp_path):
    release = str(tmp_path / "release")
    futures = [client.submit(hold, release, str(tmp_path), i, resources={"GPU": 1}, pure=False)
               for i in range(5)]
    wait_until(lambda: len(list(tmp_path.glob("started-*"))) == 2, "two tasks started")
    info = client.scheduler_info()
    gpu = next(r for r in info["workers"].values() if r["name"] != "foo-worker")
    assert gpu["used_resources"] == {"GPU": 2}      # 4 threads, but GPU=2: two at once
    assert info["tasks"].get("processing") == 2 and info["tasks"].get("queued") == 3
    assert len(list(tmp_path.glob("started-*"))) == 2
    open(release, "w").close()
    spans = client.gather(futures)
    for start, _, _ in spans:                       # at no start were more than 2 running
        assert sum(s <= start < e for s, e, _ in spans) <= 2
    assert gpu["used_resources"] and not next(
        r for r in client.scheduler_info()["workers"].values()
        if r["name"] != "foo-worker")["used_resources"]


def test_no_worker_until_a_suitable_worker_joins(client, cluster):
    future = client.submit(pid, resources={"BAR": 1}, pure=False)
    wait_until(lambda: client.scheduler_info()["no_worker"] == {"resources BAR=1": 1},
               "the task reported in no-worker")
    assert future.status == "pending"
    proc = start_worker(cluster, "bar-worker", "BAR=1")
    try:
        assert future.result(timeout=60) == pids(client)["bar-worker"]
        assert client.scheduler_info()["no_worker"] == {}
    finally:
        proc.terminate()
        proc.wait()


def test_bad_resources_are_refused_where_given(client):
    with pytest.raises(ValueError, match="the amount of 'GPU' must be a number >= 0"):
        client.submit(pid, resources={"GPU": "one"})
    with pytest.raises(ValueError, match="LocalCluster"):
        LocalCluster(n_workers=0, resources={"GPU": -1})


def test_dask_annotations_and_compute_resources(client):
    dask = pytest.importorskip("dask")
    by_name = pids(client)
    with dask.annotate(resources={"FOO": 1}):
        on_foo = dask.delayed(pid)(1, dask_key_name="on-foo")
    assert dask.compute(on_foo)[0] == by_name["foo-worker"]
    plain = dask.delayed(pid)(2, dask_key_name="on-foo-2")
    assert client.compute(plain, resources={"FOO": 1}).result() == by_name["foo-worker"]
    persisted = client.persist(dask.delayed(pid)(3, dask_key_name="on-foo-3"),
                               resources={"FOO": 1})
    assert persisted.compute() == by_name["foo-worker"]

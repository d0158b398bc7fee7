"""End to end on a real LocalCluster: worker processes, TCP, the whole protocol."""
import operator
import os
import subprocess
import sys
import time

import psutil
import pytest

from jobqueue import CancelledError, Client, LocalCluster, as_completed, wait


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def test_map_10000(client):
    futures = client.map(inc, range(10_000))
    assert client.gather(futures) == list(range(1, 10_001))


def test_submit_kwargs_and_nested_futures(client):
    a = client.submit(inc, 1)
    b = client.submit(inc, 2)
    c = client.submit(lambda xs, d, k=0: sum(xs) + d["v"] + k, [a, (b,)][0:1] + [b],
                      {"v": a}, k=10)
    assert c.result() == 2 + 3 + 2 + 10


def test_tree_reduction_4096(client):
    layer = client.map(inc, range(4096))
    while len(layer) > 1:
        layer = [client.submit(add, layer[i], layer[i + 1]) for i in range(0, len(layer), 2)]
    assert layer[0].result() == sum(range(1, 4097))


def test_large_result_moves_between_workers(client):
    (a, b) = sorted(client.scheduler_info()["workers"])
    big = client.submit(lambda: b"x" * (64 << 20), workers=[a])
    n = client.submit(len, big, workers=[b])
    assert n.result() == 64 << 20
    who = client._sync(client._request({"op": "who-has", "keys": [big.key]}))[big.key]
    assert set(who) == {a, b}  # the input was fetched from A and is now replicated on B


def test_workers_restriction_by_name(client, cluster):
    names = {info["name"]: addr for addr, info in client.scheduler_info()["workers"].items()}
    name = sorted(names)[1]
    where = client.submit(lambda: __import__("os").getpid(), workers=[name]).result()
    pids = client.run(os.getpid)
    assert where == pids[names[name]]


def test_exception_with_remote_traceback(client):
    def fails(x):
        raise ValueError(f"bad value {x}")

    f = client.submit(fails, 42)
    with pytest.raises(ValueError, match="bad value 42") as info:
        f.result()
    assert "fails" in str(info.value.__cause__)  # the remote traceback names the function
    assert "in fails" in f.traceback() and "ValueError: bad value 42" in f.traceback()
    assert isinstance(f.exception(), ValueError)
    g = client.submit(inc, f)  # dependents of a failed task fail the same way
    with pytest.raises(ValueError, match="bad value 42"):
        g.result()


def wait_for_file(path, value=None, timeout=60.0):
    """Runs until the test creates *path* (a gate the test opens), then returns *value*."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_cancel(client, tmp_path):
    gate = str(tmp_path / "gate")
    slow = client.submit(wait_for_file, gate)
    after = client.submit(inc, slow)
    slow.cancel()
    with pytest.raises(CancelledError):
        after.result(timeout=10)
    assert slow.cancelled()
    open(gate, "w").close()           # the cancelled task, still running, may end now
    for address in client.scheduler_info()["workers"]:    # every worker is free again
        assert client.submit(inc, 1, workers=[address], pure=False).result(timeout=30) == 2


def test_memory_returns_after_futures_dropped(client):
    def rss():
        return psutil.Process().memory_info().rss

    before = client.run(rss)
    futures = [client.submit(lambda i: b"x" * (100 << 20), i) for i in range(2)]
    wait(futures)
    during = client.run(rss)
    assert sum(during.values()) - sum(before.values()) > 150 << 20
    del futures
    deadline = time.time() + 10
    while time.time() < deadline:
        after = client.run(rss)
        if sum(after.values()) - sum(before.values()) < 50 << 20:
            break
        time.sleep(0.2)
    assert sum(after.values()) - sum(before.values()) < 50 << 20


def test_as_completed_wait_callbacks(client, tmp_path):
    # two tasks, one on each worker, each running until the test opens its gate: the second
    # submitted is let finish first, and as_completed yields it first
    gates = [str(tmp_path / f"gate-{i}") for i in range(2)]
    workers = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(wait_for_file, gate, i, workers=[w])
               for i, (gate, w) in enumerate(zip(gates, workers))]
    completed = as_completed(futures)
    order = []
    for i in (1, 0):
        open(gates[i], "w").close()
        order.append(next(completed).result())
    assert order == [1, 0]
    with pytest.raises(StopIteration):
        next(completed)
    done, not_done = wait(futures)
    assert set(done) == set(futures) and not not_done
    seen = []
    f = client.submit(inc, 5)
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    f.result()
    deadline = time.time() + 5
    while not seen and time.time() < deadline:
        time.sleep(0.01)
    assert seen == [6]


def test_scatter_broadcast_puts_the_data_on_every_worker(client):
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    [big] = client.scatter([b"x" * (1 << 20)], broadcast=True)
    small = client.scatter({"only-on-one": 1}, workers=workers[:1], broadcast=True)
    who = client._sync(client._request({"op": "who-has", "keys": [big.key, "only-on-one"]}))
    assert sorted(who[big.key]) == workers and who["only-on-one"] == workers[:1]
    assert client.submit(len, big, workers=workers[1:]).result() == 1 << 20
    assert small["only-on-one"].result() == 1


def test_scatter_and_gather_structures(client):
    data = client.scatter([1, 2, 3])
    total = client.submit(sum, data)
    assert total.result() == 6
    d = client.scatter({"a": 10})
    assert client.gather(d) == {"a": 10}
    assert client.gather({"x": [client.submit(inc, 1)]}) == {"x": [2]}


def test_scheduler_info(client, cluster):
    info = client.scheduler_info()
    assert info["address"] == cluster.scheduler_address
    assert len(info["workers"]) == 2
    for w in info["workers"].values():
        assert w["nthreads"] == 1 and w["memory_limit"] == 2 * 10**9


def test_unpicklable_argument_fails_at_submit(client):
    import threading

    with pytest.raises(TypeError, match="cannot pickle the arguments"):
        client.submit(inc, threading.Lock())


def test_results_freed_on_workers(client):
    futures = client.map(inc, range(100))
    client.gather(futures)
    del futures
    deadline = time.time() + 5
    while time.time() < deadline:
        info = client.scheduler_info()
        if sum(w["stored"] for w in info["workers"].values()) == 0:
            break
        time.sleep(0.05)
    assert sum(w["stored"] for w in info["workers"].values()) == 0


def test_logs_repr_and_close_leave_no_children():
    me = psutil.Process()
    before = set(me.children(recursive=True))
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
        with Client(cluster) as c:
            assert c.submit(inc, 1).result() == 2
        children = set(me.children(recursive=True)) - before
        assert len(children) >= 4  # a nanny and a worker process per worker
        logs = cluster.get_logs()
        assert "scheduler" in logs and len(logs) == 3
        assert "joined" in logs["scheduler"]
        assert any("connected to" in text for name, text in logs.items() if name != "scheduler")
        assert "workers=2" in repr(cluster) and "threads=2" in repr(cluster)
        assert "<table>" in cluster._repr_html_()
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_client_without_arguments_starts_local_cluster(monkeypatch):
    monkeypatch.delenv("JOBQUEUE_SCHEDULER_ADDRESS", raising=False)
    with Client(n_workers=1, threads_per_worker=1) as c:
        assert c.submit(sum, [1, 2]).result() == 3
        assert isinstance(c.cluster, LocalCluster)
    assert c.cluster.status == "closed"


def test_plain_script_without_main_guard(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(
        "from jobqueue import Client\n"
        "client = Client(n_workers=2, threads_per_worker=1)\n"
        "print(sum(client.gather(client.map(abs, range(-50, 50)))))\n"
        "client.close()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items()
                                          if not k.startswith("JOBQUEUE_")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(sum(abs(i) for i in range(-50, 50)))


def test_connect_with_environment(cluster, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SCHEDULER_ADDRESS", cluster.scheduler_address)
    monkeypatch.setenv("JOBQUEUE_TOKEN", cluster.token)
    with Client() as c:
        assert c.cluster is None
        assert c.submit(operator.mul, 6, 7).result() == 42


def test_run_reports_errors_and_the_workers_survive(client):
    def boom():
        raise ValueError("boom on a worker")

    with pytest.raises(ValueError, match="boom on a worker") as info:
        client.run(boom)
    assert "boom" in str(info.value.__cause__)  # the remote traceback
    with pytest.raises(SystemExit):
        client.run(sys.exit, 3)
    pids = client.run(os.getpid)
    assert len(pids) == len(client.scheduler_info()["workers"]) == 2


def test_client_wait_for_workers_with_and_without_the_cluster_object(cluster):
    with Client(cluster) as client:                  # through the cluster's own wait
        client.wait_for_workers(2, timeout=30)
        with pytest.raises(TimeoutError, match="3 workers"):
            client.wait_for_workers(3, timeout=0.5)
    with Client(cluster.scheduler_address, token=cluster.token) as client:   # by address
        client.wait_for_workers(2, timeout=30)
        with pytest.raises(TimeoutError, match="2 of 3 workers connected to tcp:"):
            client.wait_for_workers(3, timeout=0.5)

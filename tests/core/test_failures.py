"""The runtime under failure: killed workers, memory limits, retries, retirement, orphans."""
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from jobqueue import Client, KilledWorker, LocalCluster, wait


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def slow_inc(x):
    time.sleep(0.002)
    return x + 1


def worker_pids(cluster):
    """pids of the worker processes (children of the nannies)."""
    pids = []
    for job in cluster.jobs.values():
        try:
            pids += [p.pid for p in psutil.Process(job.proc.pid).children()]
        except psutil.NoSuchProcess:
            pass
    return pids


def test_chaos_graph_survives_killed_workers():
    with LocalCluster(n_workers=3, threads_per_worker=1, allowed_failures=20) as cluster, \
            Client(cluster) as client:
        stop = threading.Event()
        kills = []

        def chaos():
            rng = random.Random(0)
            # every ~2 s while the graph runs; at most 8 kills, so that a slow machine (each
            # kill costs recomputation) still converges
            while len(kills) < 8 and not stop.wait(2.0):
                pids = worker_pids(cluster)
                if pids:
                    pid = rng.choice(pids)
                    try:
                        os.kill(pid, signal.SIGKILL)
                        kills.append(pid)
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=chaos, daemon=True)
        thread.start()
        n = 10_000
        xs = client.map(slow_inc, range(n))  # ~7 s of work: a few kills while it runs
        ys = [client.submit(add, xs[i], xs[(i + 1) % n]) for i in range(n)]
        del xs  # only the ys are wanted: lost xs are recomputed from lineage when needed
        try:
            result = sum(client.gather(ys))
        finally:
            stop.set()
            thread.join()
        assert result == sum((i + 1) + ((i + 1) % n + 1) for i in range(n))
        assert len(kills) >= 2, "the chaos thread should have killed workers while it ran"
        logs = "\n".join(cluster.get_logs().values())
        assert "killed by signal 9; restarting it" in logs


def test_memory_limit_kills_task_not_cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="400MB") as cluster, \
            Client(cluster) as client:
        def hog():
            data = b"x" * (2 << 30)
            time.sleep(5)
            return len(data)

        bad = client.submit(hog)
        good = client.map(inc, range(100))
        with pytest.raises(KilledWorker) as info:
            bad.result(timeout=120)
        assert bad.key in str(info.value)
        assert client.gather(good) == list(range(1, 101))
        assert client.submit(inc, 41).result(timeout=30) == 42  # still serving
        logs = "\n".join(cluster.get_logs().values())
        assert "over 95% of its memory limit" in logs


def test_crashing_task_is_retried_on_other_workers_then_killed_worker():
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        f = client.submit(os._exit, 1)
        with pytest.raises(KilledWorker) as info:
            f.result(timeout=60)
        assert len(info.value.workers) == 4  # allowed-failures (3) + 1
        assert client.submit(inc, 1).result(timeout=30) == 2


def test_retries(tmp_path, client):
    counter = tmp_path / "attempts"

    def flaky():
        with open(counter, "a") as f:
            f.write("x")
        if len(counter.read_text()) < 3:
            raise RuntimeError("not yet")
        return "ok"

    assert client.submit(flaky, retries=2).result() == "ok"
    counter.unlink()
    with pytest.raises(RuntimeError, match="not yet"):
        client.submit(flaky, retries=1, key="flaky-no-luck").result()


def test_unpicklable_result_errs_clearly(client):
    f = client.submit(lambda: threading.Lock())
    with pytest.raises(TypeError, match="cannot be pickled"):
        f.result()
    g = client.submit(lambda: [threading.Lock()] * 2)  # a container: found when sent
    with pytest.raises(TypeError, match="cannot be pickled"):
        client.gather(g)


def test_unpicklable_function_fails_at_submit(client):
    lock = threading.Lock()
    with pytest.raises(TypeError, match="cannot pickle the function"):
        client.submit(lambda: lock.locked())


def test_retire_moves_results_without_recomputing(tmp_path):
    log = tmp_path / "executions"

    def record(i):
        with open(log, "a") as f:
            f.write(f"{i}\n")
        return bytes(1000) * i

    with LocalCluster(n_workers=3, threads_per_worker=1) as cluster, Client(cluster) as client:
        futures = client.map(record, range(60))
        wait(futures)
        holders = {w: info["stored"] for w, info in client.scheduler_info()["workers"].items()}
        assert sum(1 for n in holders.values() if n) >= 2  # results spread over workers
        cluster.scale(1)
        assert len(client.scheduler_info()["workers"]) == 1
        results = client.gather(futures)
        assert [len(r) for r in results] == [1000 * i for i in range(60)]
        runs = log.read_text().split()
        assert sorted(map(int, runs)) == list(range(60))  # every task ran exactly once


def test_scheduler_killed_workers_exit_within_death_timeout(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    sched = subprocess.Popen([sys.executable, "-m", "jobqueue", "scheduler", "--port", "0",
                              "--host", "127.0.0.1", "--scheduler-file", str(sched_file)],
                             env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.05)
        import json

        info = json.loads(sched_file.read_text())
        assert oct(sched_file.stat().st_mode & 0o777) == "0o600"
        wenv = dict(env, JOBQUEUE_TOKEN=info["token"])
        nanny = subprocess.Popen([sys.executable, "-m", "jobqueue", "worker", info["address"],
                                  "--nworkers", "2", "--death-timeout", "3s", "--name", "orphan"],
                                 env=wenv, stderr=subprocess.DEVNULL)
        with Client(scheduler_file=str(sched_file)) as c:
            deadline = time.time() + 30
            while len(c.scheduler_info()["workers"]) < 2 and time.time() < deadline:
                time.sleep(0.05)
            assert c.submit(sum, [1, 1]).result(timeout=10) == 2
            procs = [psutil.Process(nanny.pid)] + psutil.Process(nanny.pid).children()
            assert len(procs) == 3
            sched.send_signal(signal.SIGKILL)
        gone, alive = psutil.wait_procs(procs, timeout=3 + 15)
        assert not alive, f"still running after the death-timeout: {alive}"
    finally:
        sched.kill()

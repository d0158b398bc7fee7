"""Run ONE benchmark workload on ONE system, in that system's own interpreter.

compare.py starts this script once per (system, workload) with the interpreter where the
system is installed (jobqueue: the current one; dask: benchmarks/.venv-dask) and reads the
last line of its stdout, ``RESULT-JSON: {...}``. Run it by hand to debug one figure:

    python benchmarks/runner.py --system jobqueue --workload roundtrip --quick
    benchmarks/.venv-dask/bin/python benchmarks/runner.py --system dask --workload map

Only the standard library and psutil are imported at module level: dask starts its worker
processes with multiprocessing's "spawn", which imports this main module in every worker.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from workloads import add, getpid, inc, length, make_bytes, noop  # noqa: E402

MiB = 1 << 20
WORKLOADS = ["start", "roundtrip", "map", "tree", "transfer", "rss", "dask-array",
             "dask-groupby", "dask-xxt"]  # dask-*: dask_workloads.py, imported when run
_BASE_RSS = psutil.Process().memory_info().rss  # this process before the system is imported


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the two systems, behind one small interface ------------------------------------------------

class System:
    name = "?"

    def __init__(self):
        t0 = time.perf_counter()
        self.Client, self.LocalCluster, self.wait, self.version = self._import()
        self.import_s = time.perf_counter() - t0
        self.import_rss = psutil.Process().memory_info().rss - _BASE_RSS

    def cluster(self):
        """LocalCluster(n_workers=2, threads_per_worker=1, processes=True), no dashboard."""
        return self.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None)

    def standalone(self, tmp):
        """(scheduler argv, worker argv(address, scheduler_file), env) for separate processes."""
        raise NotImplementedError

    def scheduler_tasks(self, client) -> int:
        """How many tasks the scheduler still knows about."""
        raise NotImplementedError


class JobqueueSystem(System):
    name = "jobqueue"

    def _import(self):
        import jobqueue
        from jobqueue import Client, LocalCluster, wait

        return Client, LocalCluster, wait, jobqueue.__version__

    def standalone(self, tmp):
        import secrets

        env = dict(os.environ, JOBQUEUE_TOKEN=secrets.token_urlsafe(32))
        sched = [sys.executable, "-m", "jobqueue", "scheduler", "--host", "127.0.0.1",
                 "--port", "0", "--scheduler-file", os.path.join(tmp, "scheduler.json")]

        def worker(address, scheduler_file):
            return [sys.executable, "-m", "jobqueue", "worker", address, "--nworkers", "2",
                    "--nthreads", "1", "--name", "bench-rss"]

        return sched, worker, env

    def scheduler_tasks(self, client):
        return sum(client.scheduler_info()["tasks"].values())


class DaskSystem(System):
    name = "dask"

    def _import(self):
        import distributed
        from distributed import Client, LocalCluster, wait

        return Client, LocalCluster, wait, distributed.__version__

    def standalone(self, tmp):
        sched = [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
                 "--no-dashboard", "--scheduler-file", os.path.join(tmp, "scheduler.json")]

        def worker(address, scheduler_file):
            return [sys.executable, "-m", "dask", "worker", "--scheduler-file", scheduler_file,
                    "--nworkers", "2", "--nthreads", "1", "--no-dashboard"]

        return sched, worker, dict(os.environ)

    def scheduler_tasks(self, client):
        return client.run_on_scheduler(_dask_task_count)


def _dask_task_count(dask_scheduler):
    return len(dask_scheduler.tasks)


SYSTEMS = {"jobqueue": JobqueueSystem, "dask": DaskSystem}


class Session:
    """A LocalCluster and a Client on it, closed (and checked) on exit."""

    def __init__(self, system):
        self.system = system

    def __enter__(self):
        self.cluster = self.system.cluster()
        try:
            self.client = self.system.Client(self.cluster)
        except BaseException:
            self.cluster.close()
            raise
        return self.client

    def __exit__(self, *exc):
        try:
            self.client.close()
        finally:
            self.cluster.close()


def worker_addresses(client, n=2, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        workers = sorted(client.scheduler_info()["workers"])
        if len(workers) >= n:
            return workers
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(workers)} of {n} workers connected after {timeout} s")
        time.sleep(0.05)


def quiesce(system, client, timeout=60.0):
    """Wait until the scheduler has forgotten every released task (so that one repetition's
    clean-up does not run into the next one's timing), then a short pause."""
    deadline = time.monotonic() + timeout
    n = system.scheduler_tasks(client)
    while n and time.monotonic() < deadline:
        time.sleep(0.1)
        n = system.scheduler_tasks(client)
    if n:
        log(f"warning: the scheduler still holds {n} tasks after {timeout:g} s")
    time.sleep(0.5)


# -- the workloads --------------------------------------------------------------------------

def w_start(system, quick):
    """LocalCluster(...) + Client + submit(inc, 1).result(); median of fresh starts."""
    reps = 1 if quick else 3
    times, closes = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        cluster = system.cluster()
        try:
            client = system.Client(cluster)
            try:
                r = client.submit(inc, 1, pure=False).result(timeout=60)
                dt = time.perf_counter() - t0
                assert r == 2, r
            finally:
                t1 = time.perf_counter()
                client.close()
        finally:
            cluster.close()
        closes.append(time.perf_counter() - t1)
        times.append(dt)
        log(f"start {i + 1}/{reps}: {dt:.3f} s (close {closes[-1]:.2f} s)")
        time.sleep(0.5)
    return {"start_s": statistics.median(times), "start_all_s": times,
            "close_all_s": closes, "import_s": system.import_s}


def w_roundtrip(system, quick):
    """Sequential submit(inc, i).result(): median latency after warm-up."""
    n = 50 if quick else 200
    with Session(system) as client:
        worker_addresses(client)
        for i in range(20):
            client.submit(inc, i, pure=False).result(timeout=30)
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            r = client.submit(inc, i, pure=False).result(timeout=30)
            lat.append(time.perf_counter() - t0)
            assert r == i + 1
    lat.sort()
    return {"roundtrip_ms": statistics.median(lat) * 1e3, "n": n,
            "min_ms": lat[0] * 1e3, "p10_ms": lat[n // 10] * 1e3,
            "p90_ms": lat[n * 9 // 10] * 1e3, "max_ms": lat[-1] * 1e3,
            "mean_ms": statistics.fmean(lat) * 1e3}


def w_map(system, quick):
    """client.gather(client.map(noop, range(N))): tasks/s, best of reps."""
    n = 2000 if quick else 20000
    reps = 1 if quick else 3
    times = []
    with Session(system) as client:
        worker_addresses(client)
        client.gather(client.map(noop, range(200), pure=False))
        quiesce(system, client)
        for i in range(reps):
            t0 = time.perf_counter()
            futures = client.map(noop, range(n), pure=False)
            results = client.gather(futures)
            dt = time.perf_counter() - t0
            assert len(results) == n and results[0] is None and results[-1] is None
            del futures, results
            times.append(dt)
            log(f"map {i + 1}/{reps}: {n} tasks in {dt:.3f} s = {n / dt:,.0f} tasks/s")
            quiesce(system, client)
    return {"tasks_per_s": n / min(times), "n": n, "all_s": times}


def w_tree(system, quick):
    """Binary tree reduction through futures as arguments: tasks/s, best of reps."""
    leaves = 512 if quick else 4096
    reps = 1 if quick else 3
    ntasks = 2 * leaves - 1
    expected = leaves * (leaves + 1) // 2
    times = []
    with Session(system) as client:
        worker_addresses(client)
        client.submit(add, client.submit(inc, 1, pure=False), 1, pure=False).result(timeout=30)
        quiesce(system, client)
        for i in range(reps):
            t0 = time.perf_counter()
            layer = client.map(inc, range(leaves), pure=False)
            while len(layer) > 1:
                layer = [client.submit(add, layer[j], layer[j + 1], pure=False)
                         for j in range(0, len(layer), 2)]
            total = layer[0].result(timeout=600)
            dt = time.perf_counter() - t0
            assert total == expected, (total, expected)
            del layer
            times.append(dt)
            log(f"tree {i + 1}/{reps}: {ntasks} tasks in {dt:.3f} s = {ntasks / dt:,.0f} tasks/s")
            quiesce(system, client)
    return {"tasks_per_s": ntasks / min(times), "leaves": leaves, "tasks": ntasks,
            "all_s": times}


def w_transfer(system, quick):
    """64 MiB made on worker A, len() of it computed on worker B: MB/s, median."""
    size = 64 * MiB
    reps = 2 if quick else 5
    rates, times = [], []
    with Session(system) as client:
        a, b = worker_addresses(client)[:2]
        # warm-up: open the A -> B connection with a small object
        p = client.submit(make_bytes, 1024, workers=[a], pure=False)
        assert client.submit(length, p, workers=[b], pure=False).result(timeout=60) == 1024
        del p
        quiesce(system, client)
        for i in range(reps):
            producer = client.submit(make_bytes, size, workers=[a], pure=False)
            system.wait([producer], timeout=120)
            assert producer.status == "finished", producer.status
            t0 = time.perf_counter()
            consumer = client.submit(length, producer, workers=[b], pure=False)
            n = consumer.result(timeout=120)
            dt = time.perf_counter() - t0
            assert n == size, (n, size)
            del producer, consumer
            times.append(dt)
            rates.append(size / MiB / dt)
            log(f"transfer {i + 1}/{reps}: 64 MiB in {dt * 1e3:.1f} ms = {rates[-1]:,.0f} MB/s")
            quiesce(system, client)
    return {"mb_per_s": statistics.median(rates), "all_mb_per_s": rates, "all_s": times,
            "bytes": size}


def rss(pid):
    return psutil.Process(pid).memory_info().rss


def uss(pid):
    try:
        return psutil.Process(pid).memory_full_info().uss
    except psutil.Error:
        return None


def w_rss(system, quick):
    """Idle RSS: worker processes and the whole LocalCluster; a standalone scheduler process."""
    wait_s = 1.0 if quick else 3.0
    out = {"import_rss_mb": system.import_rss / MiB}
    me = psutil.Process()
    with Session(system) as client:
        worker_addresses(client)
        assert client.submit(inc, 1, pure=False).result(timeout=60) == 2
        pids = client.run(getpid)
        time.sleep(wait_s)
        workers = sorted(pids.values())
        out["worker_rss_mb_all"] = [rss(p) / MiB for p in workers]
        out["worker_rss_mb"] = statistics.fmean(out["worker_rss_mb_all"])
        out["worker_uss_mb_all"] = [(uss(p) or 0) / MiB for p in workers]
        # What supervises each worker: jobqueue runs a `jobqueue worker` nanny process per job;
        # dask's LocalCluster keeps its nannies inside this (the client) process.
        parents = {psutil.Process(p).ppid() for p in workers}
        out["worker_parent_is_client_process"] = parents == {os.getpid()}
        out["nanny_rss_mb_all"] = [rss(p) / MiB for p in sorted(parents) if p != os.getpid()]
        out["client_process_rss_mb"] = me.memory_info().rss / MiB
        out["client_process_rss_increase_mb"] = (me.memory_info().rss - _BASE_RSS) / MiB
        tree = [me] + me.children(recursive=True)
        total = 0
        for p in tree:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        out["cluster_total_rss_mb"] = total / MiB
        out["cluster_processes"] = len(tree)
    out.update(standalone_scheduler_rss(system, wait_s))
    return out


def standalone_scheduler_rss(system, wait_s):
    """RSS of a separately started `<system> scheduler` with 2 workers and 1 client, idle."""
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        sched_argv, worker_argv, env = system.standalone(tmp)
        path = os.path.join(tmp, "scheduler.json")
        logs = open(os.path.join(tmp, "log.txt"), "w+")
        procs = []
        try:
            sched = subprocess.Popen(sched_argv, env=env, stdout=logs, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
            procs.append(sched)
            deadline = time.monotonic() + 60
            address = None
            while address is None:
                if sched.poll() is not None:
                    raise RuntimeError(f"scheduler exited with {sched.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("standalone scheduler did not write its file in 60 s")
                try:
                    with open(path) as f:
                        address = json.load(f)["address"]
                except (OSError, ValueError, KeyError):
                    time.sleep(0.05)
            workers = subprocess.Popen(worker_argv(address, path), env=env, stdout=logs,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            procs.append(workers)
            client = system.Client(scheduler_file=path)
            try:
                worker_addresses(client, 2, timeout=60)
                assert client.submit(inc, 1, pure=False).result(timeout=60) == 2
                time.sleep(wait_s)
                r = rss(sched.pid)
                u = uss(sched.pid)
            finally:
                client.close()
            return {"scheduler_rss_mb": r / MiB, "scheduler_uss_mb": (u or 0) / MiB}
        except BaseException:
            logs.seek(0)
            log("standalone scheduler/worker output:\n" + logs.read()[-3000:])
            raise
        finally:
            for p in reversed(procs):  # workers first, then the scheduler
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            logs.close()


FUNCS = {"start": w_start, "roundtrip": w_roundtrip, "map": w_map, "tree": w_tree,
         "transfer": w_transfer, "rss": w_rss}


def leftover_children(grace=10.0):
    """Processes this run started that are still alive after everything was closed."""
    me = psutil.Process()
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for p in me.children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
            except psutil.Error:
                continue
            if "resource_tracker" in cmd or "forkserver" in cmd:  # multiprocessing's helpers
                continue
            alive.append((p, cmd))
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out = []
    for p, cmd in alive:
        out.append(f"pid {p.pid}: {cmd[:200]}")
        try:
            p.kill()
        except psutil.Error:
            pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=sorted(SYSTEMS), required=True)
    ap.add_argument("--workload", choices=WORKLOADS, required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="dump all stacks and exit after this many seconds")
    args = ap.parse_args(argv)

    faulthandler.dump_traceback_later(args.timeout, exit=True)
    result = {"system": args.system, "workload": args.workload, "quick": args.quick,
              "python": sys.version.split()[0], "pid": os.getpid()}
    code = 0
    try:
        system = SYSTEMS[args.system]()
        result["version"] = system.version
        log(f"{args.system} {system.version}: {args.workload}"
            f"{' (quick)' if args.quick else ''}")
        t0 = time.perf_counter()
        func = FUNCS.get(args.workload)
        if func is None:
            import dask_workloads

            dask_workloads.runner = sys.modules[__name__]
            func = dask_workloads.FUNCS[args.workload]
        result.update(func(system, args.quick))
        result["elapsed_s"] = time.perf_counter() - t0
    except BaseException as e:
        traceback.print_exc()
        result["error"] = f"{type(e).__name__}: {e}"
        code = 1
    faulthandler.cancel_dump_traceback_later()
    left = leftover_children()
    if left:
        result["leftover_processes"] = left
        log("processes still alive after close (killed): " + "; ".join(left))
    # CPU used by this process and every child it has reaped (workers, nannies, schedulers):
    # compare.py subtracts it from the machine's busy time to estimate foreign load.
    t = os.times()
    result["cpu_s"] = t.user + t.system + t.children_user + t.children_system
    print("RESULT-JSON: " + json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

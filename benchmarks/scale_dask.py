"""dask.distributed's scheduler under the fake-worker load of benchmarks/scale.py.

    benchmarks/.venv-dask/bin/python benchmarks/scale_dask.py             # 1,000 workers; 10k, 100k map; 100k graph
    benchmarks/.venv-dask/bin/python benchmarks/scale_dask.py --quick     # 200 workers
    benchmarks/.venv-dask/bin/python benchmarks/scale_dask.py --million   # also the 1M map, 1M queued tasks

`python benchmarks/scale.py --compare-dask` runs this after its own run and prints both side by
side. The scheduler is a real `dask scheduler` process. Each fake worker speaks dask's real
worker protocol with distributed's own comm code: it registers with the message a real Worker
sends, keeps a batched stream open, heartbeats over its own RPC connection at the interval the
scheduler asks for, answers every `compute-task` at once with the `task-finished` a real worker
sends for an int result, answers `free-keys` with `release-worker-data` for the keys it held (as
a real worker does) and `steal-request` with `steal-response`. It runs nothing and fetches no
dependencies. Prints one line `RESULT-JSON: {...}` with the keys of scale.py's results.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil

from scale import cpu, fakes_cpu, read_scheduler_file  # the same measuring on both sides

# -- fake workers (run in child processes) ------------------------------------------------------

INT_TYPE = pickle.dumps(int)  # what a real worker sends as the type of an int result


def fake_metrics():
    """The fields a real Worker.get_metrics() sends that the scheduler reads, for an idle
    worker holding nothing."""
    now = time.time()
    return {
        "task_counts": {},
        "bandwidth": {"total": 100_000_000, "workers": {}, "types": {}},
        "digests_total_since_heartbeat": {},
        "managed_bytes": 0,
        "spilled_bytes": {"memory": 0, "disk": 0},
        "transfer": {"incoming_bytes": 0, "incoming_count": 0, "incoming_count_total": 0,
                     "outgoing_bytes": 0, "outgoing_count": 0, "outgoing_count_total": 0},
        "event_loop_interval": 0.02,
        "cpu": 0.0, "memory": 60_000_000, "time": now, "num_fds": 20,
        "host_net_io": {"read_bps": 0.0, "write_bps": 0.0},
        "host_disk_io": {"read_bps": 0.0, "write_bps": 0.0},
    }


async def heartbeats(scheduler, me, counters):
    """As Worker.heartbeat: an RPC on a connection of its own, first after 1 s (the Worker's
    default), then at the interval the scheduler's reply asks for (n/200 + 1 s for n >= 200)."""
    from distributed.core import rpc

    interval = 1.0
    with rpc(scheduler) as r:
        while True:
            await asyncio.sleep(interval)
            try:
                reply = await r.heartbeat_worker(address=me, now=time.time(),
                                                 metrics=fake_metrics(), executing={},
                                                 extensions={"spans": {}})
            except OSError:
                counters["heartbeat_errors"] += 1
                continue
            if reply["status"] != "OK":
                counters["heartbeat_" + str(reply["status"])] += 1
                return
            interval = reply["heartbeat-interval"]


async def fake_worker(scheduler, name, port, versions, counters):
    from distributed.batched import BatchedSend
    from distributed.comm import connect

    me = f"tcp://127.0.0.1:{port}"  # nobody listens there: the scheduler must never connect
    comm = await connect(scheduler, timeout=120)  # retries while the scheduler is swamped
    comm.name = "Worker->Scheduler"
    # the fields of Worker._register_with_scheduler
    await comm.write({
        "op": "register-worker", "reply": False, "address": me, "status": "running",
        "nthreads": 1, "name": name, "now": time.time(), "resources": {}, "memory_limit": 0,
        "local_directory": f"/tmp/fake-dask-worker-{name}", "services": {}, "nanny": None,
        "pid": os.getpid(), "versions": versions, "metrics": fake_metrics(), "extra": {},
        "stimulus_id": f"worker-connect-{time.time()}", "server_id": f"Worker-{uuid.uuid4()}",
    }, serializers=["msgpack"])
    reply = await comm.read(deserializers=["msgpack"])
    if reply.get("status") != "OK":
        raise RuntimeError(f"fake worker {name} was refused: {reply}")
    counters["registered"] += 1
    stream = BatchedSend(interval="2ms")  # as the Worker's batched_stream
    stream.start(comm)
    beat = asyncio.ensure_future(heartbeats(scheduler, me, counters))
    held = set()  # keys "in memory" here: what the scheduler may free or try to steal
    thread = threading.get_ident()
    # A real worker times the call around the function; abs() takes about a microsecond.
    # Not zero: dask's work stealing asserts on tasks with an average duration of 0.
    duration = 1e-6
    try:
        while True:
            try:
                msgs = await comm.read()
            except Exception:
                counters["stream_closed"] += 1
                return
            if not isinstance(msgs, (list, tuple)):
                msgs = (msgs,)
            out = []
            now = time.time()
            for m in msgs:
                op = m["op"]
                if op == "compute-task":
                    key = m["key"]
                    held.add(key)
                    out.append({
                        "op": "task-finished", "status": "OK", "key": key,
                        "run_id": m["run_id"], "nbytes": 28, "type": INT_TYPE,
                        "typename": "int", "metadata": {}, "thread": thread,
                        "startstops": [{"action": "compute", "start": now,
                                        "stop": now + duration}],
                        "stimulus_id": f"task-finished-{now}"})
                elif op in ("free-keys", "remove-replicas"):
                    # a real worker releases what it holds and confirms each such key
                    for key in m["keys"]:
                        if key in held:
                            held.discard(key)
                            out.append({"op": "release-worker-data", "key": key,
                                        "stimulus_id": m["stimulus_id"]})
                elif op == "steal-request":
                    out.append({"op": "steal-response", "key": m["key"],
                                "state": "memory" if m["key"] in held else None,
                                "stimulus_id": m["stimulus_id"]})
                elif op == "close":
                    counters["closed_by_scheduler"] += 1
                    return
                elif op in ("cancel-compute", "refresh-who-has", "worker-status-change"):
                    pass  # the task is long finished / nothing to fetch
                else:
                    counters["op_" + op] += 1
            if out:
                stream.send(*out)
                counters["tasks"] += sum(m["op"] == "task-finished" for m in out)
    finally:
        beat.cancel()


def run_fake_workers(scheduler, n, first_port, prefix, started, state_file):
    from collections import Counter

    from distributed.versions import get_versions

    versions = get_versions()  # the real worker sends these; the scheduler compares them
    counters = Counter(startup_s=round(time.time() - started, 2))

    def report():  # the parent reads the last one at the end
        with open(state_file + ".new", "w") as f:
            json.dump(counters, f)
        os.replace(state_file + ".new", state_file)

    report()  # tells the parent that the imports are done
    # Connect only when every process has imported distributed (2 s on this kind of machine),
    # so that the registration time after that is the scheduler's, not the imports'.
    go = os.path.join(os.path.dirname(state_file), "go")
    while not os.path.exists(go):
        time.sleep(0.01)

    async def main():
        async def reports():
            while True:
                await asyncio.sleep(5)
                report()

        asyncio.ensure_future(reports())
        results = await asyncio.gather(
            *(fake_worker(scheduler, f"{prefix}-{i}", first_port + i, versions, counters)
              for i in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        print(f"fake workers {prefix} ended: {len(errors)} errors {errors[:3]!r}",
              file=sys.stderr, flush=True)

    asyncio.run(main())


# -- measurement --------------------------------------------------------------------------------

def start_scheduler(tmp, log_path):
    sched_file = os.path.join(tmp, "dask-scheduler.json")
    if os.path.exists(sched_file):
        os.unlink(sched_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    with open(log_path, "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                                 "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", sched_file],
                                env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    info = read_scheduler_file(sched_file, proc, 60, f"the dask scheduler (log: {log_path})")
    return proc, sched_file, info


# run on the scheduler with client.run_on_scheduler (pickled by value)
def _n_tasks(dask_scheduler):
    return len(dask_scheduler.tasks)


def _n_waiting_for_workers(dask_scheduler):
    return len(dask_scheduler.queued) + len(dask_scheduler.unrunnable)


def _trace_start(dask_scheduler):
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    return tracemalloc.get_traced_memory()[0]


def _trace_stop(dask_scheduler):
    import gc
    import tracemalloc

    gc.collect()
    current = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return current


def wait_forgotten(client, deadline):
    """Until the scheduler has forgotten every task (dask may need more than the 0.5 s that
    the CPU figure includes; what is left would otherwise count towards the next workload)."""
    while client.run_on_scheduler(_n_tasks):
        if time.time() > deadline:
            raise TimeoutError("the scheduler did not forget the tasks")
        time.sleep(0.1)


class Budget:
    def __init__(self, seconds):
        self.deadline = time.time() + seconds
        self.rate = None  # tasks/s of the last workload, to estimate the next one
        self.skipped = []

    def fits(self, what, n):
        left = self.deadline - time.time()
        est = 30 + 1.5 * n / self.rate if self.rate else 30
        if est > left:
            self.skipped.append(f"{what}: needs about {est:.0f} s at {self.rate or 0:.0f} "
                                f"tasks/s, {left:.0f} s of the time budget left")
            return False
        return True

    def left(self):
        return max(10.0, self.deadline - time.time())


def run_map(client, sp, n, budget):
    from distributed import wait

    c0, t0 = cpu(sp), time.perf_counter()
    futures = client.map(abs, range(n), pure=False)
    wait(futures, timeout=budget.left())
    wall = time.perf_counter() - t0
    c1 = cpu(sp)
    del futures
    time.sleep(0.5)
    c2 = cpu(sp)
    wait_forgotten(client, time.time() + budget.left())
    c3 = cpu(sp)
    budget.rate = n / wall
    return {"tasks": n, "wall_s": round(wall, 2), "tasks_per_s": round(n / wall),
            "sched_cpu_us_per_task": round((c2 - c0) / n * 1e6, 1),
            "sched_cpu_us_per_task_until_done": round((c1 - c0) / n * 1e6, 1),
            "sched_cpu_us_per_task_until_forgotten": round((c3 - c0) / n * 1e6, 1)}


def run_graph(client, sp, n, budget):
    """n tasks with dependencies: pairs (x_i, y_i = f(x_i, x_{i+1})), as in scale.py."""
    from distributed import wait

    c0, t0 = cpu(sp), time.perf_counter()
    half = n // 2
    xs = client.map(abs, range(half), pure=False)
    ys = client.map(max, xs, xs[1:] + xs[:1], pure=False)
    del xs
    wait(ys, timeout=budget.left())
    wall = time.perf_counter() - t0
    del ys
    time.sleep(0.5)
    c1 = cpu(sp)
    wait_forgotten(client, time.time() + budget.left())
    c2 = cpu(sp)
    budget.rate = n / wall
    return {"tasks": n, "wall_s": round(wall, 2), "tasks_per_s": round(n / wall),
            "sched_cpu_us_per_task": round((c1 - c0) / n * 1e6, 1),
            "sched_cpu_us_per_task_until_forgotten": round((c2 - c0) / n * 1e6, 1)}


def wait_queued(client, n, deadline):
    while client.run_on_scheduler(_n_waiting_for_workers) < n:
        if time.time() > deadline:
            raise RuntimeError("the tasks did not reach the scheduler's queue")
        time.sleep(0.2)


def queued_memory(client, sproc, n, budget):
    """Scheduler RSS growth per task submitted while no worker is connected (state "queued",
    or "no-worker"), then on the same scheduler, after those are forgotten, the bytes the
    scheduler retains per such task (tracemalloc started in the scheduler process)."""
    r0 = sproc.memory_info().rss
    futures = client.map(abs, range(n), pure=False)
    wait_queued(client, n, time.time() + budget.left())
    r1 = sproc.memory_info().rss
    del futures
    wait_forgotten(client, time.time() + budget.left())
    rss = round((r1 - r0) / n, 1)
    state = None
    m = min(n, 100_000)
    if budget.fits(f"tracemalloc of {m:,} queued tasks", 3 * m):
        before = client.run_on_scheduler(_trace_start)
        futures = client.map(abs, range(m), pure=False)  # held until measured
        wait_queued(client, m, time.time() + budget.left())
        after = client.run_on_scheduler(_trace_stop)
        assert len(futures) == m
        state = round((after - before) / m, 1)
        del futures
    return rss, state


PROBLEM = re.compile(r"ERROR|CRITICAL|WARNING|Traceback|Error|[Rr]emov(e|ing) worker|"
                     r"unresponsive|[Ff]ailed")


def log_problems(path):
    """Lines of the scheduler's log that point at trouble (errors, removed workers, a stalled
    event loop), counted by message with the time stamp and figures blanked out. The "Register
    worker" lines etc. are normal and not counted."""
    counts = {}
    with open(path, errors="replace") as f:
        for line in f:
            if PROBLEM.search(line):
                msg = re.sub(r"\b\d+(\.\d+)?", "N", line.split(" - ", 1)[-1].strip())[:200]
                counts[msg] = counts.get(msg, 0) + 1
    return sorted(counts.items(), key=lambda kv: -kv[1])


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--processes", type=int, default=4, help="fake-worker processes")
    p.add_argument("--quick", action="store_true", help="200 workers, 100k queued tasks")
    p.add_argument("--million", action="store_true",
                   help="also the 1M-task map, and 1M queued tasks for the memory figure")
    p.add_argument("--sizes", help="comma-separated map sizes instead of the default")
    p.add_argument("--graph", type=int, default=100_000, help="tasks in the graph workload")
    p.add_argument("--budget", type=float,
                   help="seconds for the whole run (default 1800, 3600 with --million); "
                   "workloads that would not fit are skipped")
    p.add_argument("--log", help="keep the scheduler's log here")
    p.add_argument("--fake-workers", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fake_workers:
        scheduler, n, first_port, prefix, started, state_file = args.fake_workers
        return run_fake_workers(scheduler, int(n), int(first_port), prefix, float(started),
                                state_file)

    import signal

    import distributed
    from distributed import Client

    # on SIGTERM, still run the finally blocks that end the scheduler and the fake workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    nworkers = 200 if args.quick else args.workers
    sizes = [10_000, 100_000] + ([1_000_000] if args.million else [])
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    queued_n = 1_000_000 if args.million else 100_000
    budget = Budget(args.budget or (3600 if args.million else 1800))
    results = {"system": "dask", "version": distributed.__version__, "workers": nworkers,
               "register_s": None, "sched_rss_mb_with_workers": None, "map": [], "graph": None,
               "queued_tasks": queued_n, "queued_bytes_per_task": None,
               "state_bytes_per_queued_task": None}
    if not args.million and not args.sizes:
        budget.skipped.append("map of 1,000,000 tasks (pass --million)")
    tmp = tempfile.mkdtemp(prefix="scale-dask-")
    log_path = args.log or os.path.join(tmp, "scheduler.log")
    fakes = []
    try:
        sproc, sched_file, info = start_scheduler(tmp, log_path)
        sp = psutil.Process(sproc.pid)
        try:
            with Client(scheduler_file=sched_file) as client:
                t0 = time.perf_counter()
                per = -(-nworkers // args.processes)
                state_files = []
                for i in range(args.processes):
                    n = min(per, nworkers - i * per)
                    if n > 0:
                        state_files.append(os.path.join(tmp, f"fake{i}.json"))
                        fakes.append(subprocess.Popen(
                            [sys.executable, __file__, "--fake-workers", info["address"],
                             str(n), str(20000 + i * per), f"fake{i}", str(time.time()),
                             state_files[-1]], stdin=subprocess.DEVNULL))
                while not all(os.path.exists(f) for f in state_files):
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError("fake-worker processes did not start within 120 s")
                    time.sleep(0.01)
                open(os.path.join(tmp, "go"), "w").close()
                t_go = time.perf_counter()
                while client.scheduler_info(n_workers=0)["n_workers"] < nworkers:
                    if time.perf_counter() - t0 > 300:
                        raise RuntimeError("fake workers did not register within 300 s")
                    time.sleep(0.05)
                t1 = time.perf_counter()
                results["register_s"] = round(t1 - t0, 2)
                results["register_s_after_import"] = round(t1 - t_go, 2)
                results["sched_rss_mb_with_workers"] = round(sp.memory_info().rss / 2**20, 1)
                c0 = cpu(sp)
                time.sleep(5)
                results["sched_idle_cpu_pct"] = round((cpu(sp) - c0) / 5 * 100, 1)
                run_map(client, sp, 2000, budget)  # warm up
                f0 = fakes_cpu(fakes)
                for n in sizes:
                    if not budget.fits(f"map of {n:,} tasks", n):
                        continue
                    print(f"dask: map of {n:,} tasks ...", file=sys.stderr, flush=True)
                    results["map"].append(run_map(client, sp, n, budget))
                if budget.fits(f"graph of {args.graph:,} tasks", args.graph):
                    print(f"dask: graph of {args.graph:,} tasks ...", file=sys.stderr, flush=True)
                    results["graph"] = run_graph(client, sp, args.graph, budget)
                ran = sum(m["tasks"] for m in results["map"]) + (
                    results["graph"]["tasks"] if results["graph"] else 0)
                if ran:
                    results["fake_worker_cpu_us_per_task"] = round(
                        (fakes_cpu(fakes) - f0) / ran * 1e6, 1)
                results["workers_at_end"] = client.scheduler_info(n_workers=0)["n_workers"]
        finally:
            for f in fakes:
                f.kill()
            sproc.kill()
            sproc.wait()
        counters = {}
        for i, f in enumerate(fakes):
            f.wait()
            with open(os.path.join(tmp, f"fake{i}.json")) as fh:
                for k, v in json.load(fh).items():
                    counters[k] = max(counters.get(k, 0), v) if k == "startup_s" else \
                        counters.get(k, 0) + v
        results["fake_worker_startup_s"] = counters.pop("startup_s", None)
        results["fake_worker_counters"] = counters
        # on a scheduler of its own, with no workers: memory per task waiting for a worker
        if budget.fits(f"queued memory with {queued_n:,} tasks", 2 * queued_n):
            print(f"dask: {queued_n:,} queued tasks ...", file=sys.stderr, flush=True)
            sproc, sched_file, info = start_scheduler(tmp, log_path)
            try:
                with Client(scheduler_file=sched_file) as client:
                    rss, state = queued_memory(client, psutil.Process(sproc.pid), queued_n,
                                               budget)
                    results["queued_bytes_per_task"] = rss
                    results["state_bytes_per_queued_task"] = state
            finally:
                sproc.kill()
                sproc.wait()
        results["skipped"] = budget.skipped
        results["scheduler_log_problems"] = log_problems(log_path)[:20]
    finally:
        for f in fakes:
            if f.poll() is None:
                f.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)
    print("RESULT-JSON: " + json.dumps(results), flush=True)


def print_table(r):
    print(f"\ndask.distributed {r['version']} scheduler at scale: {r['workers']} fake workers")
    print(f"  {r['workers']} workers registered in {r['register_s']} s, counted from starting "
          f"the fake-worker processes; {r['register_s_after_import']} s after those had "
          f"imported distributed (which took up to {r['fake_worker_startup_s']} s)")
    print(f"  scheduler RSS then {r['sched_rss_mb_with_workers']} MB; its CPU while idle with "
          f"these workers heartbeating: {r['sched_idle_cpu_pct']} % of a core")
    print(f"  {'workload':<22}{'tasks':>10}{'wall s':>9}{'tasks/s':>10}{'sched CPU us/task':>20}"
          f"{'until forgotten':>17}")
    rows = [("map", m) for m in r["map"]] + ([("graph (deps)", r["graph"])] if r["graph"] else [])
    for name, m in rows:
        print(f"  {name:<22}{m['tasks']:>10}{m['wall_s']:>9}{m['tasks_per_s']:>10}"
              f"{m['sched_cpu_us_per_task']:>20}{m['sched_cpu_us_per_task_until_forgotten']:>17}")
    if r.get("fake_worker_cpu_us_per_task") is not None:
        print(f"  fake workers' CPU per task (all processes): {r['fake_worker_cpu_us_per_task']} us")
    if r["queued_bytes_per_task"] is not None:
        print(f"  scheduler memory per task waiting for a worker ({r['queued_tasks']:,} tasks): "
              f"{r['queued_bytes_per_task']} bytes of RSS growth, "
              f"{r['state_bytes_per_queued_task']} bytes retained (tracemalloc)")
    print(f"  workers still registered at the end: {r.get('workers_at_end')}; fake-worker "
          f"counters: {r.get('fake_worker_counters')}")
    for s in r["skipped"]:
        print(f"  skipped: {s}")
    problems = r["scheduler_log_problems"]
    print(f"  scheduler log: {sum(n for _, n in problems)} lines with errors/warnings of note")
    for msg, n in problems[:10]:
        print(f"    {n:>6} x {msg}")


if __name__ == "__main__":
    main()

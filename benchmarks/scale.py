"""The scheduler at cluster scale: many light fake workers, a million tasks.

    python benchmarks/scale.py                     # 1,000 workers; 10k, 100k, 1M map; 100k graph
    python benchmarks/scale.py --quick             # 200 workers; 10k and 100k
    python benchmarks/scale.py --compare-dask      # then the same fake-worker load on
                                                   # dask.distributed's scheduler, side by side

The scheduler runs as its own process (`jobqueue scheduler`), so its CPU time and memory are
measured alone (psutil). Fake workers speak the real protocol over real sockets, many per
process on one event loop: they register, and answer every `compute` at once with
`task-finished` (batched per read), doing no work. The client (this process) submits and waits.

--compare-dask runs benchmarks/scale_dask.py afterwards with benchmarks/.venv-dask/bin/python
(created by benchmarks/setup.sh when missing): the same workloads and worker count against a
`dask scheduler` process, with fake workers that speak dask's worker protocol through
distributed's own comm code. Its 1M-task map only runs with --dask-million (dask needs far more
scheduler CPU per task); what it skipped is printed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import types

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DASK_PYTHON = os.path.join(HERE, ".venv-dask", "bin", "python")


# -- fake workers (run in child processes) ------------------------------------------------------

async def fake_worker(address, token, name, counters):
    from jobqueue.core.comm import connect

    for attempt in range(20):  # as real workers do: retry while the scheduler is swamped
        try:
            comm = await connect(address, token, timeout=60, role="worker")
            break
        except OSError:
            await asyncio.sleep(0.1 * (attempt + 1))
    else:
        raise RuntimeError(f"fake worker {name} could not connect")
    await comm.write([{"op": "register-worker", "address": f"tcp://fake-{name}:1",
                       "name": name, "nthreads": 1, "memory_limit": 0}])
    (reply,) = await comm.read()
    assert reply["op"] == "welcome", reply
    counters["registered"] += 1

    async def heartbeats():  # as often as a real worker's, with the same fields
        while True:
            await asyncio.sleep(1.0)
            comm.write_nowait([{"op": "heartbeat", "metrics": {
                "memory": 60_000_000, "cpu": 0.0, "executing": 0, "ready": 0, "stored": 0,
                "nbytes": 0, "executed": counters["tasks"]}}])

    beat = asyncio.ensure_future(heartbeats())
    while True:
        try:
            msgs = await comm.read()
        except Exception:
            beat.cancel()
            return
        now = time.time()
        done = [{"op": "task-finished", "key": m["key"], "nbytes": 28, "type": "int",
                 "start": now, "stop": now} for m in msgs if m["op"] == "compute"]
        if done:
            comm.write_nowait(done)
            counters["tasks"] += len(done)


def run_fake_workers(address, n, prefix):
    token = os.environ["JOBQUEUE_TOKEN"]

    async def main():
        counters = {"registered": 0, "tasks": 0}
        tasks = [asyncio.ensure_future(fake_worker(address, token, f"{prefix}-{i}", counters))
                 for i in range(n)]
        await asyncio.gather(*tasks)

    asyncio.run(main())


# -- measurement --------------------------------------------------------------------------------

def start_scheduler(tmp):
    sched_file = os.path.join(tmp, "scheduler.json")
    if os.path.exists(sched_file):  # left by an earlier scheduler of this run
        os.unlink(sched_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "scheduler", "--host",
                             "127.0.0.1", "--port", "0", "--scheduler-file", sched_file],
                            env=env, stderr=subprocess.DEVNULL)
    return proc, sched_file, read_scheduler_file(sched_file, proc, 30, "the scheduler")


def read_scheduler_file(path, proc, timeout, what):
    """The scheduler file's contents, once the scheduler process *proc* has written it."""
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    time.sleep(0.2)  # written in full
    with open(path) as f:
        return json.load(f)


def cpu(proc):
    t = proc.cpu_times()
    return t.user + t.system


def wait_all(futures):
    from jobqueue import wait

    wait(futures)


def run_map(client, sproc, n):
    c0, t0 = cpu(sproc), time.perf_counter()
    futures = client.map(abs, range(n), key=f"abs-{n}")
    wait_all(futures)
    wall = time.perf_counter() - t0
    c1 = cpu(sproc)
    del futures
    time.sleep(0.5)
    c2 = cpu(sproc)
    return {"tasks": n, "wall_s": round(wall, 2), "tasks_per_s": round(n / wall),
            "sched_cpu_us_per_task": round((c2 - c0) / n * 1e6, 1),
            "sched_cpu_us_per_task_until_done": round((c1 - c0) / n * 1e6, 1)}


def queued_memory(client, sproc, n):
    """Scheduler RSS growth per task waiting in its queue: submitted while no worker is
    connected, so every task sits in the scheduler's queue (state "queued")."""
    r0 = sproc.memory_info().rss
    futures = client.map(abs, range(n), key=f"held-{n}")
    deadline = time.time() + 300
    while client.scheduler_info()["tasks"].get("queued", 0) < n:
        if time.time() > deadline:
            raise RuntimeError("the tasks did not reach the scheduler's queue")
        time.sleep(0.2)
    r1 = sproc.memory_info().rss
    del futures
    while client.scheduler_info()["tasks"] and time.time() < deadline:
        time.sleep(0.2)  # forgotten again before the workers arrive
    return round((r1 - r0) / n, 1)


def state_bytes_per_queued_task(n=200_000):
    """Bytes the scheduler's state retains per queued task (tracemalloc, in this process):
    what RSS growth would show without the transient buffers of decoding the message."""
    import gc
    import tracemalloc

    from jobqueue.core.scheduler_state import SchedulerState

    s = SchedulerState()
    s.add_client("c")
    rows = [[f"abs-{n}-0123abcd-{i}", "abs", "f0123456789abcdef012", b"\x80\x05\x95\x0c" * 6,
             [], None, 0] for i in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    s.update_graph("c", rows, {"f0123456789abcdef012": b"F"})
    del rows
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert sum(t.state == "queued" for t in s.tasks.values()) == n
    return round((after - before) / n, 1)


def fakes_cpu(procs):
    """CPU time of the fake-worker processes: they share the machine with the scheduler."""
    total = 0.0
    for p in procs:
        try:
            total += cpu(psutil.Process(p.pid))
        except psutil.NoSuchProcess:
            pass
    return total


def run_graph(client, sproc, n):
    """n tasks with dependencies: pairs (x_i, y_i = f(x_i, x_{i+1}))."""
    c0, t0 = cpu(sproc), time.perf_counter()
    half = n // 2
    xs = client.map(abs, range(half), key=f"gx-{n}")
    ys = client.map(max, xs, xs[1:] + xs[:1], key=f"gy-{n}")
    del xs
    wait_all(ys)
    wall = time.perf_counter() - t0
    del ys
    time.sleep(0.5)
    c1 = cpu(sproc)
    return {"tasks": n, "wall_s": round(wall, 2), "tasks_per_s": round(n / wall),
            "sched_cpu_us_per_task": round((c1 - c0) / n * 1e6, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--processes", type=int, default=4, help="fake-worker processes")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--profile", metavar="FILE",
                   help="py-spy raw profile of the scheduler during the maps (needs py-spy)")
    p.add_argument("--compare-dask", action="store_true",
                   help="then run benchmarks/scale_dask.py (dask.distributed's scheduler, same "
                   "load) and print both side by side")
    p.add_argument("--dask-python", default=DEFAULT_DASK_PYTHON,
                   help="interpreter with dask.distributed (default: benchmarks/.venv-dask, "
                   "created by benchmarks/setup.sh when missing)")
    p.add_argument("--dask-million", action="store_true",
                   help="with --compare-dask: also dask's 1M-task map and 1M queued tasks "
                   "(tens of minutes on 2 cores)")
    p.add_argument("--fake-workers", nargs=3, metavar=("ADDRESS", "N", "PREFIX"),
                   help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.fake_workers:
        address, n, prefix = args.fake_workers
        return run_fake_workers(address, int(n), prefix)

    from jobqueue import Client

    if args.compare_dask:  # before the jobqueue run, so that a missing venv fails fast
        sys.path.insert(0, HERE)
        from compare import ensure_dask

        ensure_dask(types.SimpleNamespace(dask_python=args.dask_python, no_setup=False))
    nworkers = 200 if args.quick else args.workers
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    results = {"workers": nworkers, "state_bytes_per_queued_task": state_bytes_per_queued_task()}
    with tempfile.TemporaryDirectory() as tmp:
        sproc, sched_file, info = start_scheduler(tmp)
        sp = psutil.Process(sproc.pid)
        fakes = []
        try:
            env = dict(os.environ, JOBQUEUE_TOKEN=info["token"])
            with Client(scheduler_file=sched_file) as client:
                t0 = time.perf_counter()
                per = -(-nworkers // args.processes)
                for i in range(args.processes):
                    n = min(per, nworkers - i * per)
                    if n > 0:
                        fakes.append(subprocess.Popen(
                            [sys.executable, __file__, "--fake-workers", info["address"],
                             str(n), f"fake{i}"], env=env))
                while len(client.scheduler_info()["workers"]) < nworkers:
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError("fake workers did not register within 120 s")
                    time.sleep(0.05)
                results["register_s"] = round(time.perf_counter() - t0, 2)
                results["sched_rss_mb_with_workers"] = round(sp.memory_info().rss / 2**20, 1)
                c0 = cpu(sp)
                time.sleep(5)
                results["sched_idle_cpu_pct"] = round((cpu(sp) - c0) / 5 * 100, 1)
                run_map(client, sp, 2000)  # warm up
                profiler = None
                if args.profile:  # sample the scheduler process while the maps run
                    profiler = subprocess.Popen(["py-spy", "record", "--pid", str(sproc.pid),
                                                 "-f", "raw", "-r", "250", "-o", args.profile],
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL)
                    time.sleep(1)
                f0 = fakes_cpu(fakes)
                results["map"] = [run_map(client, sp, n) for n in sizes]
                if profiler is not None:
                    profiler.send_signal(2)
                    profiler.wait(30)
                results["graph"] = run_graph(client, sp, 100_000)
                results["fake_worker_cpu_us_per_task"] = round(
                    (fakes_cpu(fakes) - f0) / (sum(sizes) + 100_000) * 1e6, 1)
        finally:
            for f in fakes:
                f.kill()
            sproc.kill()
        # on a scheduler of its own, with no workers: memory per task waiting in its queue
        sproc, sched_file, info = start_scheduler(tmp)
        results["queued_tasks"] = 100_000 if args.quick else 1_000_000
        try:
            with Client(scheduler_file=sched_file) as client:
                results["queued_bytes_per_task"] = queued_memory(
                    client, psutil.Process(sproc.pid), results["queued_tasks"])
        finally:
            sproc.kill()
    print_table(results)
    if args.compare_dask:
        results["dask"] = run_dask(args, nworkers)
        if results["dask"] is not None:
            print_comparison(results, results["dask"])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def print_table(r):
    print(f"\nscheduler at scale: {r['workers']} fake workers")
    print(f"  {r['workers']} workers registered in {r['register_s']} s, counted from starting "
          f"the fake-worker processes (scheduler RSS then {r['sched_rss_mb_with_workers']} MB; "
          f"its CPU while idle with these workers heartbeating every second: "
          f"{r['sched_idle_cpu_pct']} % of a core)")
    print(f"  {'workload':<22}{'tasks':>10}{'wall s':>9}{'tasks/s':>10}{'sched CPU us/task':>20}")
    for m in r["map"]:
        print(f"  {'map':<22}{m['tasks']:>10}{m['wall_s']:>9}{m['tasks_per_s']:>10}"
              f"{m['sched_cpu_us_per_task']:>20}")
    g = r["graph"]
    print(f"  {'graph (deps)':<22}{g['tasks']:>10}{g['wall_s']:>9}{g['tasks_per_s']:>10}"
          f"{g['sched_cpu_us_per_task']:>20}")
    print(f"  scheduler memory per task waiting in its queue: {r['queued_bytes_per_task']} bytes "
          f"of RSS growth (incl. decoding the message), {r['state_bytes_per_queued_task']} "
          f"bytes retained by the state (tracemalloc)")


# -- the same load on dask.distributed (benchmarks/scale_dask.py) -------------------------------

def run_dask(args, nworkers):
    """Run scale_dask.py in the dask venv, echo its output, return its results (None if it
    failed). Its own process group, so that a timeout also ends its scheduler and workers."""
    import signal
    import threading

    cmd = [args.dask_python, os.path.join(HERE, "scale_dask.py"), "--workers", str(nworkers),
           "--processes", str(args.processes)] + (["--million"] if args.dask_million else [])
    budget = 3600 if args.dask_million else 1800  # scale_dask.py's own default budget
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not k.startswith("JOBQUEUE_")}
    print(f"\n$ {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=env, cwd=HERE, start_new_session=True)

    def kill_group():
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(budget + 600, kill_group)  # it skips what would not fit its budget
    timer.start()
    result = None
    try:
        for line in proc.stdout:
            if line.startswith("RESULT-JSON: "):
                result = json.loads(line[len("RESULT-JSON: "):])
            else:
                print(line, end="", flush=True)
    finally:
        timer.cancel()
        kill_group()  # whatever it may have left behind
        proc.wait()
    if result is None:
        print(f"scale_dask.py failed (exit code {proc.returncode}); no dask figures",
              flush=True)
    return result


def print_comparison(jq, dk):
    """Side by side, ratio = jobqueue / dask; rows dask did not run are left out."""
    rows = [(f"register {jq['workers']:,} workers", "s", jq["register_s"], dk["register_s"]),
            (f"scheduler RSS with {jq['workers']:,} workers", "MB",
             jq["sched_rss_mb_with_workers"], dk["sched_rss_mb_with_workers"])]
    dk_maps = {m["tasks"]: m for m in dk["map"]}
    workloads = [(f"map {m['tasks']:,}", m, dk_maps.get(m["tasks"])) for m in jq["map"]]
    workloads.append((f"graph {jq['graph']['tasks']:,} (deps)", jq["graph"], dk["graph"]))
    for name, a, b in workloads:
        rows.append((f"{name}: sched CPU per task", "us", a["sched_cpu_us_per_task"],
                     b and b["sched_cpu_us_per_task"]))
        rows.append((f"{name}: throughput", "tasks/s", a["tasks_per_s"],
                     b and b["tasks_per_s"]))
    rows.append((f"RSS growth per queued task ({jq['queued_tasks']:,} vs "
                 f"{dk['queued_tasks']:,})", "bytes", jq["queued_bytes_per_task"],
                 dk["queued_bytes_per_task"]))
    rows.append(("state per queued task (tracemalloc)", "bytes",
                 jq["state_bytes_per_queued_task"], dk["state_bytes_per_queued_task"]))
    rows.append(("scheduler CPU while idle, workers heartbeating", "%",
                 jq["sched_idle_cpu_pct"], dk.get("sched_idle_cpu_pct")))
    rows.append(("fake workers' CPU per task (info)", "us", jq["fake_worker_cpu_us_per_task"],
                 dk.get("fake_worker_cpu_us_per_task")))

    print(f"\njobqueue vs dask.distributed {dk['version']}: scheduler at scale, the same "
          f"{jq['workers']:,} fake workers (ratio = jobqueue / dask)")
    print(f"  {'':<46}{'unit':>8}{'jobqueue':>12}{'dask':>12}{'ratio':>10}")
    for label, unit, a, b in rows:
        if a is None or b is None:
            continue
        ratio = a / b if b else float("nan")
        print(f"  {label:<46}{unit:>8}{a:>12,.1f}{b:>12,.1f}{ratio:>9.3f}x")
    print(f"  dask registered its workers {dk['register_s_after_import']} s after its "
          f"fake-worker processes had imported distributed ({dk['fake_worker_startup_s']} s); "
          f"the register row counts from starting the processes on both sides")
    forgotten = [f"{m['tasks']:,}: {m['sched_cpu_us_per_task_until_forgotten']}"
                 for m in dk["map"] + ([dk["graph"]] if dk["graph"] else [])]
    print(f"  dask scheduler CPU us per task until it had forgotten every task (the rows above "
          f"stop 0.5 s after release): {', '.join(forgotten)}")
    print("  tasks/s: scheduler, client and fake workers share this machine's cores; the fake "
          "workers' own CPU per task (last row) weighs on dask's figure more than on jobqueue's")
    for s in dk.get("skipped", []):
        print(f"  dask skipped: {s}")
    lost = jq["workers"] - (dk.get("workers_at_end") or 0)
    if lost:
        print(f"  dask: {lost} fake workers were no longer registered at the end")
    problems = dk.get("scheduler_log_problems") or []
    if problems:
        print(f"  dask scheduler log: {sum(n for _, n in problems)} lines of note, e.g. "
              f"{problems[0][1]} x {problems[0][0][:120]}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""jobqueue vs dask.distributed: the same workloads, one run, one table.

    python benchmarks/compare.py                  # full run (creates benchmarks/.venv-dask once)
    python benchmarks/compare.py --quick          # smoke run, about a minute
    python benchmarks/compare.py --only jobqueue  # skip dask
    python benchmarks/compare.py --json out.json  # also write every figure as JSON

Each (workload, system) pair runs in its own subprocess (benchmarks/runner.py) with that
system's interpreter: jobqueue with benchmarks/.venv-jobqueue/bin/python (this checkout, a
regular install refreshed at every run), dask with benchmarks/.venv-dask/bin/python.
Workloads alternate between the systems so that a change in machine load hits both.
Both use LocalCluster(n_workers=2, threads_per_worker=1, processes=True), no dashboard.
See benchmarks/README.md for what each figure measures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RUNNER = os.path.join(HERE, "runner.py")
DEFAULT_DASK_PYTHON = os.path.join(HERE, ".venv-dask", "bin", "python")
DEFAULT_JOBQUEUE_PYTHON = os.path.join(HERE, ".venv-jobqueue", "bin", "python")
SYSTEMS = ["jobqueue", "dask"]
WORKLOADS = ["start", "roundtrip", "map", "tree", "transfer", "rss", "dask-array",
             "dask-groupby", "dask-xxt"]
DASK_WORKLOADS = [w for w in WORKLOADS if w.startswith("dask-")]  # need dask in both venvs

# Seconds one (workload, system) subprocess may take before its stacks are dumped and it is
# killed. Generous: dask's map of 3 x 20,000 tasks alone takes 100-400 s on a busy 2-core box.
BUDGET = {"start": 240, "roundtrip": 180, "map": 1200, "tree": 900, "transfer": 240, "rss": 240,
          "dask-array": 1200, "dask-groupby": 600, "dask-xxt": 600}
BUDGET_QUICK = {"start": 120, "roundtrip": 120, "map": 300, "tree": 240, "transfer": 120,
                "rss": 120, "dask-array": 240, "dask-groupby": 240, "dask-xxt": 240}


# -- table rows -------------------------------------------------------------------------------
# (workload, field, label, unit, better, target); target: None, ("ratio", op, x) or
# ("abs", op, x) checked on jobqueue's figure. Ratio is always jobqueue / dask.

def rows_for(results):
    def n(w, field, default):
        for s in SYSTEMS:
            v = results.get(s, {}).get(w, {}).get(field)
            if v is not None:
                return v
        return default

    tasks = n("map", "n", 20000)
    leaves = n("tree", "leaves", 4096)
    return [
        ("start", "start_s", "cluster start to first result (median)", "s", "lower",
         ("ratio", "<=", 0.5)),
        ("start", "import_s", "  import Client, LocalCluster (info)", "s", "lower", None),
        ("roundtrip", "roundtrip_ms", "one-task round trip (median)", "ms", "lower",
         ("abs", "<", 1.0)),
        ("roundtrip", "p90_ms", "  round trip, 90th percentile", "ms", "lower", None),
        ("map", "tasks_per_s", f"{tasks:,} no-op tasks, map + gather (best)", "tasks/s",
         "higher", ("ratio", ">=", 10.0)),
        ("tree", "tasks_per_s", f"tree reduction, {leaves:,} leaves (best)", "tasks/s",
         "higher", ("ratio", ">=", 10.0)),
        ("transfer", "mb_per_s", "64 MB worker-to-worker (median)", "MB/s", "higher", None),
        ("rss", "scheduler_rss_mb", "scheduler idle RSS (standalone process)", "MB", "lower",
         None),
        ("rss", "worker_rss_mb", "worker idle RSS (one worker process)", "MB", "lower",
         ("ratio", "<=", 0.5)),
        ("rss", "client_process_rss_increase_mb", "  client process RSS increase, in-process "
         "LocalCluster", "MB", "lower", None),
        ("rss", "cluster_total_rss_mb", "  LocalCluster total RSS, all its processes", "MB",
         "lower", None),
        ("dask-array", "seconds", f"da.random.random({n('dask-array', 'chunks', 20000):,} "
         "chunks).mean()", "s", "lower", ("ratio", "<=", 0.2)),
        ("dask-groupby", "seconds", "dataframe groupby-mean, "
         f"{n('dask-groupby', 'partitions', 200)} partitions (best)", "s", "lower",
         ("ratio", "<=", 0.33)),
        ("dask-xxt", "seconds", f"(x + x.T).mean(axis=1), {n('dask-xxt', 'n', 10000):,}^2 "
         "(best)", "s", "lower", ("ratio", "<=", 1.0)),
        ("dask-xxt", "peak_mb", "  peak cluster RSS during it (sum of workers)", "MB", "lower",
         ("ratio", "<=", 1.0)),
    ]


def fmt(v, unit):
    if v is None:
        return "-"
    if unit in ("tasks/s", "MB/s"):
        return f"{v:,.0f}"
    if unit == "MB":
        return f"{v:.1f}"
    if unit == "ms":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def fmt_ratio(r):
    if r is None:
        return "-"
    return f"{r:.4f}x" if r < 1 else f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def check(target, jq, ratio):
    if target is None:
        return "", ""
    kind, op, x = target
    if kind == "ratio":
        text = f"{op} {x:g}x dask"
        value = ratio
    else:
        text = f"{op} {x:g}"
        value = jq
    if value is None:
        return text, "?"
    ok = {"<=": value <= x, "<": value < x, ">=": value >= x, ">": value > x}[op]
    return text, "met" if ok else "MISSED"


def table(results, systems):
    rows = []
    ran = {w for s in results for w in results[s]}
    for w, field, label, unit, better, target in rows_for(results):
        if w not in ran:
            continue
        jq = results.get("jobqueue", {}).get(w, {}).get(field)
        dk = results.get("dask", {}).get(w, {}).get(field)
        ratio = jq / dk if jq is not None and dk else None
        if target and target[0] == "ratio" and "dask" not in systems:
            target = None
        ttext, status = check(target, jq, ratio)
        rows.append({"workload": w, "field": field, "label": label, "unit": unit,
                     "better": better, "jobqueue": jq, "dask": dk, "ratio": ratio,
                     "target": ttext, "status": status})
    head = ["workload", "unit", "jobqueue", "dask", "jq/dask", "better", "target", "status"]
    lines = [[r["label"], r["unit"], fmt(r["jobqueue"], r["unit"]), fmt(r["dask"], r["unit"]),
              fmt_ratio(r["ratio"]), r["better"],
              r["target"], r["status"]] for r in rows]
    widths = [max(len(str(x[i])) for x in [head] + lines) for i in range(len(head))]
    align = ["<", "<", ">", ">", ">", "<", "<", "<"]
    out = []
    for k, line in enumerate([head] + lines):
        out.append("  ".join(f"{str(c):{a}{wd}}" for c, a, wd in zip(line, align, widths))
                   .rstrip())
        if k == 0:
            out.append("  ".join("-" * wd for wd in widths))
    return "\n".join(out), rows


# -- running one subprocess -------------------------------------------------------------------

def cpu_busy():
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


class Watcher(threading.Thread):
    """Remembers every descendant of a subprocess so that none outlives a timeout or crash."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.seen = {}
        self.stop = threading.Event()

    def run(self):
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.stop.wait(0.5):
            try:
                for p in root.children(recursive=True):
                    self.seen.setdefault(p.pid, p)
            except psutil.Error:
                return

    def kill_survivors(self, grace=5.0):
        """Kill descendants still alive *grace* s after the subprocess ended; report them."""
        import psutil

        self.stop.set()
        alive = []
        for p in self.seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(alive, timeout=grace)  # e.g. exiting workers
        killed = []
        for p in alive:
            try:
                cmd = " ".join(p.cmdline())[:160]
                p.kill()
            except psutil.Error:
                continue
            if "resource_tracker" not in cmd:  # multiprocessing's helper, exits on its own
                killed.append(f"pid {p.pid}: {cmd}")
        return killed


def wait_until_idle(max_wait, threshold=0.3):
    """Wait (at most *max_wait* s) until other processes use less than *threshold* cores."""
    deadline = time.monotonic() + max_wait
    while True:
        b0 = cpu_busy()
        time.sleep(1.0)
        used = cpu_busy() - b0
        if used < threshold or time.monotonic() > deadline:
            return used


def run_one(system, python, workload, args, logdir):
    budget = (BUDGET_QUICK if args.quick else BUDGET)[workload] * args.timeout_scale
    cmd = [python, RUNNER, "--system", system, "--workload", workload,
           "--timeout", str(budget)] + (["--quick"] if args.quick else [])
    env = dict(os.environ)
    # The task functions live in benchmarks/workloads.py: every process must be able to import
    # it. jobqueue keeps the caller's PYTHONPATH (its LocalCluster passes sys.path on anyway);
    # dask's venv gets only this folder, so nothing from this interpreter leaks into it.
    extra = env.get("PYTHONPATH", "") if system == "jobqueue" else ""
    env["PYTHONPATH"] = os.pathsep.join(p for p in [HERE, extra] if p)
    env.pop("PYTHONHOME", None)
    if system == "dask":
        env.pop("VIRTUAL_ENV", None)
    log_path = os.path.join(logdir, f"{workload}-{system}.log")
    import psutil

    if args.wait_idle:
        wait_until_idle(args.wait_idle)
    load = os.getloadavg()[0]
    busy0, t0 = cpu_busy(), time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL, env=env, text=True, cwd=HERE)
        watcher = Watcher(proc.pid)
        watcher.start()
        timed_out = False
        try:
            stdout, _ = proc.communicate(timeout=budget + 30)
        except subprocess.TimeoutExpired:
            timed_out = True
            for p in psutil.Process(proc.pid).children(recursive=True):
                watcher.seen.setdefault(p.pid, p)
            proc.kill()
            stdout, _ = proc.communicate()
        except KeyboardInterrupt:
            proc.kill()
            watcher.kill_survivors()
            raise
    wall = time.monotonic() - t0
    busy = cpu_busy() - busy0
    killed = watcher.kill_survivors()
    result = None
    for line in reversed((stdout or "").splitlines()):
        if line.startswith("RESULT-JSON: "):
            try:
                result = json.loads(line[len("RESULT-JSON: "):])
            except ValueError:
                pass
            break
    if result is None or "error" in result:
        with open(log_path, errors="replace") as f:
            text = f.read()
        tail = text[-2500:]
        tail = tail[tail.find("\n") + 1:] if len(text) > 2500 else tail
    if result is None:
        why = (f"no result within {budget + 30:.0f} s (killed)" if timed_out else
               f"exited with code {proc.returncode} without a result")
        if "Timeout (" in text and not timed_out:
            why = (f"timed out after {budget:.0f} s (faulthandler dumped every thread's "
                   "stack to the log; the main thread is last)")
        result = {"system": system, "workload": workload, "error": why, "log_tail": tail}
    elif "error" in result:
        result["log_tail"] = tail
    result["log"] = log_path
    result["wall_s"] = wall
    result["loadavg_before"] = load
    if result.get("cpu_s") is not None and wall > 0:
        result["other_cpu_cores"] = max(0.0, (busy - result["cpu_s"]) / wall)
    if killed:
        result.setdefault("leftover_processes", []).extend(killed)
    return result


def summary(res, workload):
    if "error" in res:
        return "FAILED: " + res["error"]
    key = {"start": ("start_s", "s"), "roundtrip": ("roundtrip_ms", "ms"),
           "map": ("tasks_per_s", "tasks/s"), "tree": ("tasks_per_s", "tasks/s"),
           "transfer": ("mb_per_s", "MB/s"), "rss": ("worker_rss_mb", "MB per worker"),
           "dask-array": ("seconds", "s"), "dask-groupby": ("seconds", "s"),
           "dask-xxt": ("seconds", "s")}[workload]
    v = res.get(key[0])
    return f"{fmt(v, key[1].split()[0])} {key[1]}" if v is not None else "?"


# -- environment ----------------------------------------------------------------------------

def probe(python, module, env_extra=None):
    """(version, path) of *module* under *python*, or raise with its stderr."""
    code = (f"import {module}, json, psutil; print(json.dumps([{module}.__version__, "
            f"{module}.__file__]))")
    env = dict(os.environ, **(env_extra or {}))
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120,
                       env=env, cwd=HERE)  # as the runners: not the checkout's own jobqueue/
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-1500:] or f"exit code {r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def git_info():
    def git(*a):
        r = subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True, timeout=30)
        return r.stdout.rstrip("\n") if r.returncode == 0 else None

    rev = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "jobqueue")
    return rev, [line[3:] for line in (dirty or "").splitlines()]


def ensure_jobqueue(args, dask_version=None):
    """An interpreter with this checkout installed the way users install it: a regular install,
    as dask is in its venv. An editable install (pip install -e) puts its import hook, and what
    the hook imports, into every process: about 0.5 MB more per idle worker here."""
    python = args.jobqueue_python
    if python != DEFAULT_JOBQUEUE_PYTHON:
        return python
    venv = os.path.dirname(os.path.dirname(python))
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        if not os.path.exists(python):
            if args.no_setup:
                raise SystemExit(f"compare.py: no {venv}; run without --no-setup, or pass "
                                 "--jobqueue-python")
            print(f"creating {venv} (once) ...", flush=True)
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
            subprocess.run(pip + [REPO, "psutil"], check=True, timeout=900)
        else:  # the code of this checkout as it is now, uncommitted changes included
            subprocess.run(pip + ["--no-deps", "--force-reinstall", REPO], check=True,
                           timeout=900)
        if dask_version:  # the dask-* workloads: the same dask as the baseline's venv
            try:
                have = probe(python, "dask")[0]
            except Exception:
                have = None
            if have != dask_version:
                print(f"installing dask {dask_version} into {venv} ...", flush=True)
                subprocess.run(pip + [f"dask[array,dataframe]=={dask_version}"], check=True,
                               timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        raise SystemExit(f"compare.py: installing this checkout into {venv} failed: {e}; "
                         "pass --jobqueue-python to use another interpreter")
    return python


def ensure_dask(args):
    python = args.dask_python
    if not os.path.exists(python):
        if args.dask_python != DEFAULT_DASK_PYTHON or args.no_setup:
            raise SystemExit(f"compare.py: no dask interpreter at {python}; run "
                             f"'bash {os.path.relpath(os.path.join(HERE, 'setup.sh'))}' or "
                             "pass --only jobqueue")
        print(f"creating {os.path.dirname(os.path.dirname(python))} (once) ...", flush=True)
        r = subprocess.run(["bash", os.path.join(HERE, "setup.sh")], timeout=900)
        if r.returncode != 0:
            raise SystemExit("compare.py: benchmarks/setup.sh failed (see above); fix it or "
                             "pass --only jobqueue")
    try:
        return probe(python, "distributed")
    except Exception as e:
        raise SystemExit(f"compare.py: 'import distributed' fails under {python}:\n{e}\n"
                         "recreate it with: rm -rf benchmarks/.venv-dask && bash "
                         "benchmarks/setup.sh")


def main(argv=None):
    ap = argparse.ArgumentParser(description="jobqueue vs dask.distributed on the same "
                                 "workloads; prints one table with both figures and the ratio.")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: fewer tasks and repetitions (figures are rough)")
    ap.add_argument("--only", choices=SYSTEMS, help="run one system only")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--json", metavar="FILE", help="write all figures and metadata here")
    ap.add_argument("--dask-python", default=DEFAULT_DASK_PYTHON,
                    help="interpreter with dask.distributed (default: benchmarks/.venv-dask, "
                    "created by benchmarks/setup.sh when missing)")
    ap.add_argument("--jobqueue-python", default=DEFAULT_JOBQUEUE_PYTHON,
                    help="interpreter with jobqueue (default: benchmarks/.venv-jobqueue, this "
                    "checkout installed there, not editable, at every run)")
    ap.add_argument("--no-setup", action="store_true",
                    help="fail instead of creating benchmarks/.venv-dask or .venv-jobqueue")
    ap.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every per-workload time limit by this")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="before each subprocess, wait up to S seconds for the machine to be "
                    "idle (other processes under 0.3 cores); for shared machines")
    ap.add_argument("--logs", metavar="DIR", help="keep subprocess logs here (default: a "
                    "temporary folder, kept and named when something fails)")
    ap.add_argument("--from-json", metavar="FILE",
                    help="print the table of an earlier --json FILE and exit (no run)")
    args = ap.parse_args(argv)

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        m = saved.get("meta", {})
        print(f"{m.get('date')}: jobqueue {m.get('versions', {}).get('jobqueue')} (git "
              f"{m.get('git_rev')}) vs dask.distributed {m.get('versions', {}).get('dask')}, "
              f"{'quick' if m.get('quick') else 'full'} run on {m.get('cpus_usable')} CPUs")
        print(table(saved["results"], list(saved["results"]))[0])
        return 0

    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in workloads if w not in WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; choose from {WORKLOADS}")
    systems = [args.only] if args.only else SYSTEMS

    try:
        import psutil
    except ImportError:
        raise SystemExit("compare.py needs psutil in this interpreter (a jobqueue dependency): "
                         "pip install -e .")
    dask_version = None
    if "dask" in systems:
        dask_version, _ = ensure_dask(args)
    elif any(w in DASK_WORKLOADS for w in workloads):
        dask_version = os.environ.get("DASK_VERSION", "2026.8.0")  # setup.sh's default
    pythons = {"jobqueue": ensure_jobqueue(args, dask_version) if "jobqueue" in systems
               else sys.executable, "dask": args.dask_python}
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "quick": args.quick,
            "host": platform.node(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "interpreters": {}, "versions": {}}
    try:
        jq_version, jq_path = probe(pythons["jobqueue"], "jobqueue",
                                    {"PYTHONPATH": os.pathsep.join(
                                        p for p in [HERE, os.environ.get("PYTHONPATH")] if p)})
    except Exception as e:
        raise SystemExit(f"compare.py: 'import jobqueue' fails under {pythons['jobqueue']}:"
                         f"\n{e}\ninstall it with: {pythons['jobqueue']} -m pip install {REPO}")
    meta["versions"]["jobqueue"] = jq_version
    meta["jobqueue_path"] = jq_path
    rev, dirty = git_info()
    meta["git_rev"], meta["git_dirty_jobqueue"] = rev, dirty
    if "dask" in systems:
        meta["versions"]["dask"] = dask_version
    meta["interpreters"] = {s: pythons[s] for s in systems}

    logdir = args.logs or tempfile.mkdtemp(prefix="jobqueue-bench-")
    os.makedirs(logdir, exist_ok=True)
    print(f"jobqueue {jq_version} ({os.path.dirname(jq_path)}, git {rev}"
          f"{', uncommitted changes in ' + str(len(dirty)) + ' file(s)' if dirty else ''})"
          + (f" vs dask.distributed {meta['versions']['dask']}" if "dask" in systems else ""))
    print(f"{'quick' if args.quick else 'full'} run on {meta['cpus_usable']} CPUs, "
          f"{meta['memory_gb']} GB; load average {os.getloadavg()[0]:.2f}; logs in {logdir}",
          flush=True)

    results = {s: {} for s in systems}
    failures = []
    t_start = time.monotonic()
    try:
        for w in workloads:
            for s in systems:
                print(f"  {w:<9} {s:<8} ... ", end="", flush=True)
                res = run_one(s, pythons[s], w, args, logdir)
                results[s][w] = res
                note = ""
                if res.get("other_cpu_cores", 0) > 0.25:
                    note = f"  [other load {res['other_cpu_cores']:.1f} cores]"
                print(f"{summary(res, w)}  ({res['wall_s']:.0f} s){note}", flush=True)
                if "error" in res:
                    failures.append(res)
                if res.get("leftover_processes"):
                    print("    left processes behind (killed): "
                          + "; ".join(res["leftover_processes"]), flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted; partial results follow", flush=True)
    meta["elapsed_s"] = time.monotonic() - t_start
    meta["loadavg_end"] = os.getloadavg()

    text, rows = table(results, systems)
    print()
    print(text)
    print()
    print("ratio = jobqueue / dask; 'better' says which direction wins. MB = 2**20 bytes. "
          "Details: benchmarks/README.md")
    busy = [(s, w, r["other_cpu_cores"]) for s in results for w, r in results[s].items()
            if r.get("other_cpu_cores", 0) > 0.25]
    if busy:
        print("machine was not idle (CPU used outside the benchmark, in cores): "
              + ", ".join(f"{w}/{s} {c:.1f}" for s, w, c in busy))
    if dirty:
        print(f"note: jobqueue has uncommitted changes (git {rev}): {', '.join(dirty)}")
    for res in failures:
        print(f"\nFAILED {res['workload']} on {res['system']}: {res['error']}\n"
              f"  log: {res['log']}")
        if res.get("log_tail"):
            tail = res["log_tail"][-1500:]
            tail = tail[tail.find("\n") + 1:] if len(res["log_tail"]) > 1500 else tail
            print("  " + tail.rstrip().replace("\n", "\n  "))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows, "results": results}, f, indent=1)
        print(f"\nwrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

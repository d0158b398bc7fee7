"""What the dashboard's JSON API returns: plain functions of the scheduler, computed on request.

No tornado here: each function takes the Scheduler (or its state) and returns JSON-ready data,
so the pages, /metrics and the tests read the same numbers.
"""
from __future__ import annotations

import re
import time
from collections import Counter

from ..scheduler_state import STATES

LOG_TAIL_CHARS = 256_000     # the logs page shows the end of a log
STREAM_LIMIT = 5_000         # task-stream rectangles per response
PROGRESS_GROUPS = 50         # task groups on the progress page (the most recent ones)


def _natural(text: str):
    """Sort key: 'worker-10' after 'worker-9'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def task_counts(state) -> dict:
    """Tasks the scheduler holds, by state: summed over task groups, not over every task."""
    counts = dict.fromkeys(STATES, 0)
    for group in state.groups.values():
        for name, n in group.states.items():
            if name in counts:
                counts[name] += n
    return counts


def summary(scheduler) -> dict:
    """The numbers in the page header."""
    state = scheduler.state
    workers = list(state.workers.values())
    return {
        "address": scheduler.address,
        "uptime": time.time() - scheduler.started,
        "workers": len(workers),
        "threads": sum(ws.nthreads for ws in workers),
        "memory": sum((ws.metrics or {}).get("memory") or 0 for ws in workers),
        "memory_limit": sum(ws.memory_limit for ws in workers),
        "stored_bytes": sum(ws.nbytes for ws in workers),
        "tasks": task_counts(state),
        "no_worker": state.no_worker(),     # {"resources GPU=1": n}: what no worker offers
        "finished": state.counts["tasks-finished"],
        "erred": state.counts["tasks-erred"],
        "clients": len(state.clients),
        "jobs": _job_counts(scheduler),
    }


def _job_counts(scheduler):
    if scheduler.jobs_provider is None:
        return None
    try:
        return jobs(scheduler)["counts"]
    except Exception:  # a broken provider must not take the header down with it
        return None


def workers(scheduler) -> list:
    """One row per connected worker."""
    now = time.monotonic()
    rows = []
    for ws in scheduler.state.workers.values():
        m = ws.metrics or {}
        rows.append({
            "address": ws.address, "name": ws.name, "host": ws.extra.get("host"),
            "pid": ws.extra.get("pid"), "status": ws.status, "nthreads": ws.nthreads,
            "memory_limit": ws.memory_limit, "memory": m.get("memory"), "cpu": m.get("cpu"),
            "resources": ws.resources, "used_resources": dict(ws.used),
            # the worker counts the tasks queued in its thread pool as executing, too
            "running": None if m.get("executing") is None else min(m["executing"], ws.nthreads),
            "executing": m.get("executing"), "processing": len(ws.processing),
            "stored": len(ws.has_what), "nbytes": ws.nbytes, "executed": m.get("executed"),
            "last_seen": round(now - ws.last_seen, 3),
        })
    rows.sort(key=lambda r: _natural(str(r["name"])))
    return rows


def progress(state, limit: int = PROGRESS_GROUPS) -> list:
    """Per task group: waiting, running, done (finished so far), erred (now), in submit order."""
    rows = []
    for group in list(state.groups.values())[-limit:]:
        s = group.states
        row = {
            "name": group.name,
            "waiting": s["waiting"] + s["queued"] + s["no-worker"],
            "no_worker": s["no-worker"],
            "running": s["processing"],
            "done": group.done,
            "erred": s["erred"],
            "in_memory": s["memory"],
            "nbytes": group.nbytes,
            "average_duration": group.average_duration,
        }
        if row["waiting"] or row["running"] or row["done"] or row["erred"]:
            rows.append(row)
    return rows


def _lanes(tasks, nthreads: int) -> list:
    """Give each (start, stop, ...) of one worker a lane (thread row): the first free one."""
    ends: list = []
    out = []
    for task in sorted(tasks, key=lambda t: t[0]):
        start, stop = task[0], task[1]
        for lane, end in enumerate(ends):
            if end <= start + 1e-4:
                break
        else:
            if len(ends) < max(nthreads, 1):
                ends.append(0.0)
                lane = len(ends) - 1
            else:  # clocks disagree a little: share the lane that frees first
                lane = min(range(len(ends)), key=ends.__getitem__)
        ends[lane] = max(ends[lane], stop)
        out.append((lane, task))
    return out


def task_stream(state, since=None, limit: int = STREAM_LIMIT, now=None) -> dict:
    """Recent tasks as rectangles: ``tasks`` rows are [worker index, lane, start, stop, group,
    key, erred]; ``workers`` lists each worker with its lanes (threads)."""
    now = time.time() if now is None else now
    recent = list(state.task_stream)
    if since is not None:
        recent = [t for t in recent if t[4] >= since]
    recent = recent[-limit:]
    by_worker: dict = {}
    for address, key, group, start, stop, erred in recent:
        by_worker.setdefault(address, []).append((start, stop, group, key, erred))
    order = sorted(set(by_worker) | set(state.workers),
                   key=lambda a: _natural(_worker_name(state, a)))
    rows, tasks = [], []
    for index, address in enumerate(order):
        ws = state.workers.get(address)
        nthreads = ws.nthreads if ws is not None else 1
        placed = _lanes(by_worker.get(address, ()), nthreads)
        lanes = max([nthreads] + [lane + 1 for lane, _ in placed])
        rows.append({"address": address, "name": _worker_name(state, address),
                     "lanes": lanes, "connected": ws is not None})
        for lane, (start, stop, group, key, erred) in placed:
            tasks.append([index, lane, start, stop, group, key, erred])
    return {"now": now, "workers": rows, "tasks": tasks}


def _worker_name(state, address) -> str:
    ws = state.workers.get(address)
    return str(ws.name) if ws is not None else address


def jobs(scheduler) -> dict:
    """The cluster's jobs, from the provider the cluster registered (none: not a cluster's)."""
    provider = scheduler.jobs_provider
    if provider is None:
        return {"available": False, "jobs": [], "counts": {}}
    rows = [dict(job) for job in provider()]
    for row in rows:
        row["state"] = str(row.get("state", "unknown"))
    return {"available": True, "jobs": rows, "counts": dict(Counter(r["state"] for r in rows))}


def log_names(scheduler) -> list:
    names = ["scheduler"]
    if scheduler.logs_provider is not None and scheduler.jobs_provider is not None:
        names += [job["name"] for job in scheduler.jobs_provider() if job.get("logs", True)]
    return names


def log_text(scheduler, name: str):
    """The end of one log, or None when there is no log of that name. May read files: the
    HTTP handler calls it off the event loop."""
    if name == "scheduler":
        text = scheduler.log.text()
    elif scheduler.logs_provider is not None:
        text = scheduler.logs_provider(name)
    else:
        text = None
    if text is None:
        return None
    truncated = len(text) > LOG_TAIL_CHARS
    if truncated:
        text = text[-LOG_TAIL_CHARS:]
        text = text[text.find("\n") + 1:]
    return {"name": name, "text": text, "truncated": truncated}

"""/metrics: the scheduler's counters and gauges in the Prometheus text exposition format.

Counters come from ``SchedulerState.counts`` (monotonic, so a restart shows as a reset); a
counter this module has no help text for is still exported, under its own name.
"""
from __future__ import annotations

import re
import time

from ... import __version__
from ..scheduler_state import STATES
from . import api

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "jobqueue_"

COUNTERS = {
    "tasks-finished": "Tasks that finished and whose result is in worker memory.",
    "tasks-erred": "Tasks that failed (raised, killed too many workers, or had a failed input).",
    "workers-added": "Workers that connected to the scheduler.",
    "workers-removed": "Workers that left or were removed (closed, lost, or missed heartbeats).",
}
WORKER_STATUSES = ("running", "paused", "closing")
JOB_STATES = ("pending", "running", "finished", "failed", "cancelled", "timeout", "unknown")


def _name(text: str) -> str:
    return PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", text)


def _label(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Exposition:
    def __init__(self):
        self.lines: list = []

    def add(self, name, kind, help_text, samples):
        """*samples*: a number, or [(labels dict, number)]."""
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        if not isinstance(samples, list):
            samples = [({}, samples)]
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {_number(value)}" if text
                              else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(scheduler) -> str:
    state = scheduler.state
    out = _Exposition()
    counts = state.counts
    for key in sorted(set(COUNTERS) | set(counts)):
        help_text = COUNTERS.get(key, f"Scheduler counter {key!r}.")
        out.add(_name(key) + "_total", "counter", help_text, counts.get(key, 0))
    workers = list(state.workers.values())
    statuses = dict.fromkeys(WORKER_STATUSES, 0)
    for ws in workers:
        statuses[ws.status] = statuses.get(ws.status, 0) + 1
    out.add(_name("workers"), "gauge", "Workers connected now, by status.",
            [({"status": s}, n) for s, n in statuses.items()])
    out.add(_name("threads"), "gauge", "Worker threads connected now.",
            sum(ws.nthreads for ws in workers))
    tasks = api.task_counts(state)
    out.add(_name("tasks"), "gauge", "Tasks the scheduler holds now, by state.",
            [({"state": s}, tasks[s]) for s in STATES])
    out.add(_name("worker_memory_bytes"), "gauge",
            "Resident memory of all workers (from their last heartbeat).",
            sum((ws.metrics or {}).get("memory") or 0 for ws in workers))
    out.add(_name("worker_memory_limit_bytes"), "gauge",
            "Memory limit summed over workers (0: workers without a limit).",
            sum(ws.memory_limit for ws in workers))
    out.add(_name("stored_bytes"), "gauge", "Bytes of task results held by workers.",
            sum(ws.nbytes for ws in workers))
    out.add(_name("clients"), "gauge", "Clients connected now.", len(state.clients))
    _jobs(out, scheduler)
    out.add(_name("uptime_seconds"), "gauge", "Seconds since the scheduler started.",
            round(time.time() - scheduler.started, 3))
    out.add(_name("info"), "gauge", "The scheduler's version and address (always 1).",
            [({"version": __version__, "address": scheduler.address or ""}, 1)])
    return out.text()


def _jobs(out, scheduler):
    if scheduler.jobs_provider is None:
        return
    try:
        counts = api.jobs(scheduler)["counts"]
    except Exception:  # the cluster's provider broke: /metrics still answers
        return
    counts = {**dict.fromkeys(JOB_STATES, 0), **counts}
    out.add(_name("jobs"), "gauge", "The cluster's jobs (batch jobs, local processes), by state.",
            [({"state": s}, n) for s, n in counts.items()])

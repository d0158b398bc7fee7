"""The nanny: starts and supervises the worker processes of one `jobqueue worker` command.

It restarts a worker that crashed (non-zero exit, signal) or grew past ``terminate`` of its
memory limit, and stops when its workers have exited on their own (closed by the scheduler, or
``death-timeout``). It imports nothing heavy: it is the first process of every batch job.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import replace

from ..node import WorkerCommand

logger = logging.getLogger("jobqueue.nanny")

QUICK_FAILURE = 10      # seconds
MAX_QUICK_FAILURES = 5
EXIT_NO_SCHEDULER = 3  # as in worker.py (not imported: the nanny stays lean)
EXIT_PRELOAD_FAILED = 4


class Child:
    def __init__(self, argv, name, memory_limit, local_directory=None):
        self.argv = argv
        self.name = name
        self.memory_limit = memory_limit
        self.local_directory = local_directory
        self.proc = None
        self.started = 0.0
        self.failures = 0

    def start(self):
        # Give freed memory back to the OS promptly (glibc keeps it otherwise).
        env = {"MALLOC_TRIM_THRESHOLD_": "65536", **os.environ}
        if self.local_directory:
            env["TMPDIR"] = self.local_directory
        self.proc = subprocess.Popen(self.argv, env=env)
        self.started = time.monotonic()
        logger.info("started worker process %s (pid %d)", self.name, self.proc.pid)


class Nanny:
    """Starts ``command.nworkers`` worker processes with the settings of ``command`` (a
    :class:`~jobqueue.node.WorkerCommand`, defaults resolved: see ``WorkerCommand.resolved``)."""

    def __init__(self, command: WorkerCommand):
        self.children: list[Child] = []
        self.terminate = command.memory_terminate or 0.95
        self.stopping = False
        self.exit_code = 0
        base = command.name or f"{os.uname().nodename}-{os.getpid()}"
        nworkers = command.nworkers or 1
        if command.local_directory:
            os.makedirs(command.local_directory, exist_ok=True)
        memory_limit = int(command.memory_limit or 0)
        for i in range(nworkers):
            name = base if nworkers == 1 else f"{base}-{i}"
            argv = replace(command, name=name, nworkers=None, interface=None,
                           local_directory=None).process_argv()
            self.children.append(Child(argv, name, memory_limit, command.local_directory))

    def run(self) -> int:
        import psutil

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        for c in self.children:
            c.start()
        last_memory_check = 0.0
        while self.children and not self.stopping:
            time.sleep(0.1)
            now = time.monotonic()
            for c in list(self.children):
                code = c.proc.poll()
                if code is None:
                    continue
                if code == EXIT_PRELOAD_FAILED:
                    logger.error("worker process %s could not start: its --preload failed "
                                 "(see its error above); not restarting it", c.name)
                if code in (0, EXIT_NO_SCHEDULER, EXIT_PRELOAD_FAILED) or self.stopping:
                    logger.info("worker process %s exited (code %d)", c.name, code)
                    self.exit_code = max(self.exit_code, code)
                    self.children.remove(c)
                else:
                    self._restart(c, f"exited with code {code}" if code > 0
                                  else f"was killed by signal {-code}", code)
            if now - last_memory_check > 0.2:
                last_memory_check = now
                for c in self.children:
                    if not c.memory_limit or c.proc.poll() is not None:
                        continue
                    try:
                        rss = psutil.Process(c.proc.pid).memory_info().rss
                    except psutil.Error:
                        continue
                    if rss > self.terminate * c.memory_limit:
                        logger.warning(
                            "worker process %s uses %d MB, over %d%% of its memory limit "
                            "(%d MB): restarting it", c.name, rss >> 20,
                            int(self.terminate * 100), c.memory_limit >> 20)
                        c.proc.kill()
                        c.proc.wait()
                        self._restart(c, "exceeded its memory limit")
        self._stop_children()
        return self.exit_code

    def _restart(self, c, why, code=None):
        """Restart a worker process; give up on one that keeps failing right at start-up
        (an exit code, not a signal: a broken environment, not a killed task)."""
        quick = time.monotonic() - c.started < QUICK_FAILURE
        c.failures = c.failures + 1 if quick and code is not None and code > 0 else 0
        if c.failures >= MAX_QUICK_FAILURES:
            logger.error("worker process %s %s %d times in a row within %d s of starting; "
                         "giving up on it", c.name, why, c.failures, QUICK_FAILURE)
            self.children.remove(c)
            self.exit_code = max(self.exit_code, 1)
            return
        logger.warning("worker process %s %s; restarting it", c.name, why)
        if quick:
            time.sleep(min(5.0, 0.1 * 2 ** c.failures))
        c.start()

    def _on_signal(self, signum, frame):
        logger.info("nanny got signal %d: stopping workers", signum)
        self.stopping = True

    def _stop_children(self, timeout=5.0):
        live = [c for c in self.children if c.proc.poll() is None]
        for c in live:
            c.proc.terminate()
        deadline = time.monotonic() + timeout
        for c in live:
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.proc.kill()
                c.proc.wait()

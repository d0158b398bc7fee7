"""Task functions shared by the dashboard and progress tests (workers import them by name)."""
import os
import time


def inc(x):
    return x + 1


def slow_inc(x):
    time.sleep(0.02)
    return x + 1


def fails(x):
    raise ValueError(f"bad input {x}")


def wait_for_file(path, timeout=60.0):
    """Runs until the test creates *path*: keeps tasks 'running' meanwhile."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return path


def pid(*_):
    return os.getpid()


def hold(path, markers, i):
    """Leaves a marker when it starts, runs until the test creates *path*; returns
    (start, end, pid) in this worker's clock."""
    start = time.monotonic()
    open(os.path.join(markers, f"started-{i}"), "w").close()
    wait_for_file(path)
    return start, time.monotonic(), os.getpid()

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

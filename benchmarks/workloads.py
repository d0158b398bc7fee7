"""Task functions for benchmarks/compare.py.

They live in their own small module (stdlib only) so that both systems pickle them by
reference and every worker process can import them: compare.py puts this folder on the
PYTHONPATH of each benchmark subprocess, and worker processes inherit it.
"""
import os


def inc(x):
    return x + 1


def add(a, b):
    return a + b


def noop(x):
    return None


def make_bytes(n):
    """``n`` random bytes (incompressible, so no system gains from compression)."""
    return os.urandom(n)


def length(b):
    return len(b)


def getpid():
    return os.getpid()

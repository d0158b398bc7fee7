"""A Monte Carlo estimate of pi: random points in the unit square, the fraction inside the
quarter circle is pi / 4. Each task draws its own seeded batch, so the result is reproducible.

    jobqueue submit --cluster slurm --cores 2 --memory 2GB --jobs 4 examples/monte_carlo.py
    jobqueue submit --cluster local --jobs 2 examples/monte_carlo.py --batches 50
    python examples/monte_carlo.py          # without jobqueue submit: a LocalCluster

Options: --batches N (tasks), --samples N (points per task).
"""
import argparse
import math
import time

from jobqueue import Client

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batches", type=int, default=40)
parser.add_argument("--samples", type=int, default=50_000)
options = parser.parse_args()


def count_inside(seed, samples):
    import random

    rng = random.Random(seed)
    return sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(samples))


def total(counts):
    return sum(counts)


started = time.perf_counter()
client = Client()          # under `jobqueue submit`: its cluster; otherwise a LocalCluster
counts = client.map(count_inside, range(options.batches), samples=options.samples)
inside = client.submit(total, counts).result()       # summed on a worker: a dependency graph
n = options.batches * options.samples
estimate = 4 * inside / n
error = 4 * math.sqrt(inside / n * (1 - inside / n) / n)      # one standard deviation
workers = len(client.scheduler_info()["workers"])
print(f"pi = {estimate:.5f} +/- {error:.5f} from {n} samples in {options.batches} tasks "
      f"on {workers} workers ({time.perf_counter() - started:.1f} s)")
client.close()

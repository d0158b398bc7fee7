"""A LocalCluster demo: no configuration, no `if __name__ == "__main__":` guard needed."""
import time

from jobqueue import Client, as_completed


def simulate(seed):
    import random

    rng = random.Random(seed)
    inside = sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0 for _ in range(20_000))
    return inside


t0 = time.perf_counter()
client = Client()                       # starts a LocalCluster sized to this machine
print(client.cluster)
print("sum([1, 2]) =", client.submit(sum, [1, 2]).result())

futures = client.map(simulate, range(200))
done = 0
for future in as_completed(futures):
    done += 1
inside = sum(client.gather(futures))
print(f"pi is about {4 * inside / (200 * 20_000):.4f} ({done} tasks, "
      f"{time.perf_counter() - t0:.2f} s including cluster start)")
client.close()

"""A parameter sweep: how far does a projectile fly, for each launch angle and drag coefficient?

Each run integrates the equations of motion with quadratic air drag until the projectile lands;
the sweep finds the best angle for each drag (45 degrees without drag, lower with it).

    jobqueue submit --cluster slurm --cores 1 --memory 1GB --jobs 2 examples/parameter_sweep.py
    jobqueue submit --cluster local examples/parameter_sweep.py --angles 30 --drags 6
    python examples/parameter_sweep.py          # without jobqueue submit: a LocalCluster

Options: --angles N (launch angles from 5 to 85 degrees), --drags N (drag coefficients from 0
to 0.02 per metre), --dt SECONDS (integration step; smaller is slower and more accurate).
"""
import argparse
import math

from jobqueue import Client, as_completed

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--angles", type=int, default=17)
parser.add_argument("--drags", type=int, default=4)
parser.add_argument("--dt", type=float, default=1e-3)
options = parser.parse_args()


def flight(angle_deg, drag, speed=50.0, dt=1e-3, g=9.81):
    """Horizontal distance (m) of a projectile launched at speed (m/s) and angle (degrees),
    with deceleration drag * |v| * v."""
    vx = speed * math.cos(math.radians(angle_deg))
    vy = speed * math.sin(math.radians(angle_deg))
    x = y = 0.0
    while True:
        v = math.hypot(vx, vy)
        vx, vy = vx - drag * v * vx * dt, vy - (g + drag * v * vy) * dt
        x_new, y_new = x + vx * dt, y + vy * dt
        if y_new < 0:                       # landed: interpolate to y = 0
            return x + (x_new - x) * y / (y - y_new)
        x, y = x_new, y_new


angles = [5 + 80 * i / max(options.angles - 1, 1) for i in range(options.angles)]
drags = [0.02 * i / max(options.drags - 1, 1) for i in range(options.drags)]
grid = [(a, d) for d in drags for a in angles]

client = Client()          # under `jobqueue submit`: its cluster; otherwise a LocalCluster
futures = client.map(flight, [a for a, _ in grid], [d for _, d in grid], dt=options.dt)
index = {f.key: i for i, f in enumerate(futures)}
distances = [None] * len(grid)
done, step = 0, max(1, len(grid) // 10)
for future in as_completed(futures):
    distances[index[future.key]] = future.result()
    done += 1
    if done == 1 or done % step == 0 or done == len(grid):
        print(f"progress: {done}/{len(grid)} runs", flush=True)

for drag in drags:
    runs = [(dist, a) for (a, d), dist in zip(grid, distances) if d == drag]
    dist, angle = max(runs)
    print(f"drag {drag:.4f}/m: best angle {angle:5.1f} degrees, {dist:7.1f} m")
best_no_drag = max((dist, a) for (a, d), dist in zip(grid, distances) if d == 0)[1]
print(f"parameter sweep: {len(grid)} runs, best angle without drag {best_no_drag:.1f} degrees")
client.close()

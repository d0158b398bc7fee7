"""`jobqueue submit` against the real SLURM that ci/slurm/start.sh runs.

Each test gives its jobs a name of their own, so `squeue -n NAME` shows exactly its jobs (other
tests may share the batch system), and checks that none are left when the command is done.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from _realsystem import slurm_running, wait_until
from conftest import needs_service

pytestmark = pytest.mark.slurm

SWEEP = str(Path(__file__).resolve().parents[2] / "examples" / "parameter_sweep.py")


@pytest.fixture(scope="module")
def service():
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")


@pytest.fixture
def name(service):
    """A job name of this test's own; no job by that name may be left pending or running after
    it (a job that was cancelled may still be completing: SLURM is cleaning up after it)."""
    name = f"jqt-{uuid.uuid4().hex[:8]}"
    yield name
    left = queued(name, completing=False)
    if left:
        subprocess.run(["scancel", *left], capture_output=True)
    assert not left, f"jobs {left} were left in the queue"


def queued(name: str, completing: bool = True) -> list:
    """Ids of the jobs named name that squeue lists as pending, running or (with completing)
    completing."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True,
                         text=True, timeout=30, check=True)
    ended = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT"} | (set() if completing else
                                                                {"COMPLETING"})
    return [line.split()[0] for line in out.stdout.splitlines() if line.split()[1] not in ended]


def command(tmp_path, name, *extra) -> list:
    return [sys.executable, "-m", "jobqueue", "submit", "--cluster", "slurm", "--cores", "1",
            "--memory", "500MB", "--walltime", "10m", "--poll-interval", "0.5", "--job-name",
            name, "--log-directory", str(tmp_path / "logs"), *extra]


def environment(tmp_path) -> dict:
    """This environment without JOBQUEUE_* variables, and a home of the test's own (the
    scheduler file goes there; the token file too, on the filesystem the jobs share)."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env["HOME"] = str(home)
    return env


def test_submit_runs_the_sweep_and_leaves_no_jobs(tmp_path, name):
    started = time.monotonic()
    out = subprocess.run(command(tmp_path, name, "--jobs", "2", SWEEP, "--angles", "9"),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=environment(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "parameter sweep: 36 runs, best angle without drag 45.0 degrees" in out.stdout
    err = out.stderr
    ids = re.search(r"submitted 2 jobs \((\d+_0) (\d+_1)\)", err).groups()
    assert "dashboard: " in err
    assert "parameter_sweep.py exited with code 0" in err
    assert re.search(r"jobs of slurm-\w+: 2 cancelled", err)
    # one worker may have done it all before the other job started (a busy batch system)
    assert any(f"{job_id}: running, 1/1 workers -> cancelled" in err for job_id in ids), err
    assert all(re.search(rf"{job_id}: \w+.*-> cancelled", err) for job_id in ids), err
    wait_until(lambda: not queued(name), 30, "the jobs should leave the queue")
    print(f"submit --jobs 2 with the sweep: {time.monotonic() - started:.1f} s")


def test_sigint_mid_way_cancels_every_job(tmp_path, name):
    proc = subprocess.Popen(command(tmp_path, name, "--jobs", "2", SWEEP, "--angles", "60",
                                    "--drags", "50", "--dt", "1e-4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=environment(tmp_path))
    try:
        line = proc.stdout.readline()            # the first result is in: mid-way
        assert line.startswith("progress: 1/3000 runs"), line
        assert len(queued(name)) == 2
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "SIGINT: stopping the script, then cancelling every job" in err
    assert "parameter sweep:" not in out
    assert re.search(r"jobs of slurm-\w+: 2 cancelled", err)
    wait_until(lambda: not queued(name), 30, "the jobs should leave the queue")


def test_sigterm_before_the_workers_start_cancels_every_job(tmp_path, name):
    proc = subprocess.Popen(command(tmp_path, name, "--jobs", "2", SWEEP),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=environment(tmp_path))
    try:
        wait_until(lambda: len(queued(name)) == 2, 30, "two jobs should be submitted")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    wait_until(lambda: not queued(name), 30, "the jobs should leave the queue")


def test_rejected_submission_exits_1_with_sbatchs_message(tmp_path, name):
    script = tmp_path / "s.py"
    script.write_text("open('ran', 'w')\n")
    out = subprocess.run(command(tmp_path, name, "--queue", "nosuch", str(script)),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=environment(tmp_path))
    assert out.returncode == 1
    assert "sbatch --parsable" in out.stderr
    assert "invalid partition specified: nosuch" in out.stderr
    assert not (tmp_path / "ran").exists()


def test_job_that_can_never_start_fails_the_command_at_once(tmp_path, name):
    script = tmp_path / "s.py"
    script.write_text("from jobqueue import Client\nprint(Client().submit(sum, [1, 2]).result())\n")
    out = subprocess.run(command(tmp_path, name, "--cores", "16", str(script)),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env=environment(tmp_path))
    assert out.returncode == 1, out.stderr
    job_id = re.search(r"submitted 1 job \((\d+)\)", out.stderr).group(1)
    assert f"job {job_id} can never start as submitted: PartitionConfig" in out.stderr
    assert "To fix: ask for fewer cores or less memory" in out.stderr
    assert re.search(rf"{job_id}: failed \(cannot start as submitted: PartitionConfig",
                     out.stderr), out.stderr
    wait_until(lambda: not queued(name), 30, "the job should leave the queue")


def test_jobs_that_keep_failing_are_retried_then_stop_the_script(tmp_path, name):
    out = subprocess.run(command(tmp_path, name, "--jobs", "2", "--python", "/nonexistent/python",
                                 SWEEP), capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=environment(tmp_path))
    assert out.returncode == 1, out.stderr
    # jobs fail in different polls on a busy machine, so their replacements go out one by one
    # or together, and two submissions may fail in one poll: 3 or more in a row, then it stops
    gave_up = re.search(r"(\d+) submissions in a row \(([\d, ]+)\) failed before any worker "
                        r"connected", out.stderr)
    assert gave_up and int(gave_up[1]) >= 3, out.stderr
    submissions = gave_up[2].split(", ")
    assert len(submissions) == int(gave_up[1])
    assert "no more jobs are submitted" in out.stderr
    assert "stopping the script: the cluster cannot run its jobs" in out.stderr
    assert "/nonexistent/python" in out.stderr          # the log tail says why
    # every job of those submissions failed; a replacement submitted while the last of them
    # was failing was cancelled
    summary = out.stderr[out.stderr.index("jobs of slurm-"):]
    final = dict(re.findall(r"^  (\S+): (?:.* -> )?(\w+)", summary, re.M))
    for submission in submissions:
        jobs = [j for j in final if j.split("_")[0] == submission]
        assert jobs and all(final[j] == "failed" for j in jobs), summary
    assert set(final.values()) <= {"failed", "cancelled"}, summary
    wait_until(lambda: not queued(name), 30, "the jobs should leave the queue")


# Four minutes of work for two one-core workers whose jobs have two minutes each: the workers
# retire before the walltime and their jobs are replaced (the replacements are submitted first).
LONG = """
import time
from jobqueue import Client

def square(i):
    time.sleep(10)
    return i * i

client = Client()
print("sum", sum(client.gather(client.map(square, range(48)))), flush=True)
"""


def test_fixed_size_run_outlives_its_jobs_walltime(tmp_path, name):
    script = tmp_path / "long.py"
    script.write_text(LONG)
    argv = command(tmp_path, name, "--jobs", "2", str(script))
    argv[argv.index("--walltime") + 1] = "2"             # minutes, as SLURM reads it
    out = subprocess.run([*argv[:4], "-v", *argv[4:]], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path, env=environment(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"sum {sum(i * i for i in range(48))}" in out.stdout
    err = out.stderr
    assert "walltime 00:02:00" in err
    kept = re.findall(r"submitting (\d): 2 jobs wanted, \d queued or running", err)
    replaced = int(re.search(r"\((\d+) replacements of jobs that ended\)", err).group(1))
    assert replaced >= 2 and replaced == sum(map(int, kept)), err
    # jobs whose workers retired finished; those still there at the end are cancelled;
    # none reached its walltime or failed
    summary = err.split("jobs of slurm-")[-1]
    counts = {state: int(n) for n, state in re.findall(r"(\d+) (\w+)", summary.split("(")[0])}
    assert set(counts) == {"finished", "cancelled"}, summary
    assert counts["finished"] >= 2 and sum(counts.values()) == 2 + replaced, summary
    wait_until(lambda: not queued(name), 30, "the jobs should leave the queue")


def test_adapt_scales_with_the_load_and_cancels_at_the_end(tmp_path, name):
    out = subprocess.run(command(tmp_path, name, "--adapt", "0:2", SWEEP, "--angles", "20",
                                 "--drags", "10", "--dt", "2e-4"),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=environment(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "parameter sweep: 200 runs" in out.stdout
    assert "adaptive: between 0 and 2 jobs" in out.stderr
    assert re.search(r"jobs of slurm-\w+: [12] cancelled", out.stderr), out.stderr
    wait_until(lambda: not queued(name), 30, "the jobs should leave the queue")


def test_detach_runs_to_completion_as_a_batch_job(tmp_path, name):
    out = subprocess.run(command(tmp_path, name, "--jobs", "2", "--detach", "--driver-memory",
                                 "500MB", "--driver-walltime", "10m", SWEEP, "--angles", "9"),
                         capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env=environment(tmp_path))
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert job_id.isdigit(), out.stdout
    log = Path(re.search(r"its output: (\S+)", out.stderr).group(1))
    assert log == tmp_path / "logs" / f"{name}-driver-{job_id}.out"
    assert f"stop it:    scancel {job_id}" in out.stderr
    driver = f"{name}-driver"
    wait_until(lambda: not queued(driver), 240, f"the driver job {job_id} should finish")
    text = log.read_text()
    assert "parameter sweep: 36 runs, best angle without drag 45.0 degrees" in text, text
    assert "parameter_sweep.py exited with code 0" in text
    assert re.search(r"jobs of slurm-\w+: 2 cancelled", text), text
    states = []

    def accounted() -> bool:     # slurmdbd records the end a moment after squeue shows it
        states.append(subprocess.run(["sacct", "-n", "-X", "-j", job_id, "-o", "State"],
                                     capture_output=True, text=True).stdout.strip())
        return states[-1] not in ("PENDING", "RUNNING", "COMPLETING")
    wait_until(accounted, 30, f"sacct should record how the driver job {job_id} ended")
    assert states[-1] in ("COMPLETED", ""), states     # "": sacct may not keep records
    wait_until(lambda: not queued(name), 30, "the worker jobs should leave the queue")


GATED = """
import os, sys, time
from jobqueue import Client
client = Client()
while not os.path.exists(sys.argv[1]):       # the test opens the gate
    time.sleep(0.2)
print("released", client.submit(sum, [1, 2]).result(), flush=True)
"""


def test_detached_driver_is_found_by_its_job_id(tmp_path, name):
    script, gate = tmp_path / "gated.py", tmp_path / "gate"
    script.write_text(GATED)
    env = environment(tmp_path)
    out = subprocess.run(command(tmp_path, name, "--jobs", "1", "--detach", "--driver-memory",
                                 "500MB", str(script), str(gate)),
                         capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    assert f"look in:    jobqueue info {job_id}" in out.stderr
    log = tmp_path / "logs" / f"{name}-driver-{job_id}.out"

    def info():
        return subprocess.run([sys.executable, "-m", "jobqueue", "info", job_id],
                              capture_output=True, text=True, timeout=60, env=env)

    try:
        wait_until(lambda: info().returncode == 0, 120, f"jobqueue info {job_id} should answer")
        shown = info().stdout
        assert "dashboard" in shown and f"{name}-" in shown, shown   # its worker job
        text = log.read_text()
        node = socket.gethostname()
        assert re.search(rf"dashboard: http://127\.0\.0\.1:(\d+)/\S+ on {node}, where job "
                         rf"{job_id} runs; from the login node: ssh -N -L \1:127\.0\.0\.1:\1 "
                         rf"{node}", text), text
        assert f"`jobqueue info {job_id}` shows its workers, tasks and jobs" in text
    finally:
        gate.touch()
    wait_until(lambda: not queued(f"{name}-driver"), 120, f"the driver {job_id} should finish")
    assert "released 3" in log.read_text()
    gone = info()
    assert gone.returncode == 1 and f"no scheduler file of a `jobqueue submit --detach` " \
        f"driver job {job_id}" in gone.stderr
    wait_until(lambda: not queued(name), 30, "the worker jobs should leave the queue")

"""How a batch cluster tracks its jobs, against the in-memory batch systems of _fakebatch.py.

The cluster and its scheduler are real; only the batch commands are answered by a fake, so
each test sets the queue up, runs one poll and checks the cluster's conclusion: states and
reasons, stale marks after a failed poll, back-off, jobs leaving the queue, accounting records
that come late, jobs stuck in an error state. The same code runs against the real daemons in
test_real_slurm.py and test_real_sge.py.
"""
import logging
import os
import subprocess
import sys

import pytest

from _fakebatch import FakeGridEngine, FakeSlurm
from jobqueue import SGECluster, SLURMCluster
from jobqueue.batch.job import GONE_GRACE
from jobqueue.deploy.polling import MAX_BACKOFF, poll_delay
from jobqueue.batch.status import JobState


def make(cls, fake, tmp_path, **settings):
    cluster = cls(**{"cores": 1, "memory": "1GB", "poll_interval": 1,
                     "log_directory": str(tmp_path / "logs"), **settings})
    cluster.runner = fake

    async def stop_polling():            # the test polls, one step at a time
        cluster._poller.cancel()

    cluster._sync(stop_polling())
    return cluster


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def slurm(env):
    fake = FakeSlurm()
    cluster = make(SLURMCluster, fake, env)
    yield cluster, fake
    cluster.close()


@pytest.fixture
def sge(env):
    fake = FakeGridEngine()
    cluster = make(SGECluster, fake, env)
    cluster._clock = Clock()
    yield cluster, fake
    cluster.close()


def poll(cluster) -> float:
    return cluster._sync(cluster._poll_step())


def test_states_and_reasons_follow_the_queue_one_command_per_poll(slurm):
    cluster, fake = slurm
    cluster.scale(jobs=3)
    assert fake.calls["sbatch"] == 1 and "--array=0-2" in fake.history[-1]
    assert sorted(cluster.jobs) == ["40_0", "40_1", "40_2"]
    assert {j.reason for j in cluster.jobs.values()} == {"submitted"}
    fake.set("40_0", "RUNNING")
    fake.set("40_1", "PENDING", "Priority")
    poll(cluster)
    a, b, c = (cluster.jobs[i] for i in ("40_0", "40_1", "40_2"))
    assert (a.state, a.reason) == (JobState.RUNNING, "")
    assert (b.state, b.reason) == (JobState.PENDING, "Priority")
    assert (c.state, c.reason) == (JobState.PENDING, "")
    fake.set("40_0", "COMPLETED")
    poll(cluster)
    assert a.state is JobState.FINISHED and a.done and not b.done
    assert fake.calls["squeue"] == 2
    assert fake.calls["sbatch"] == 2 and "44" in cluster.jobs     # scale(jobs=3) is a target
    assert "3 pending, 0 running" in repr(cluster)


def test_failed_polls_keep_the_states_marked_stale_and_back_off(slurm, caplog):
    caplog.set_level(logging.INFO, logger="jobqueue.batch")
    cluster, fake = slurm
    cluster.scale(jobs=1)
    fake.set("40", "RUNNING")
    assert poll(cluster) == 1
    job = cluster.jobs["40"]
    fake.fail("squeue", times=3, stderr="slurm_load_jobs error: Socket timed out on send/recv")
    assert [poll(cluster) for _ in range(3)] == [2, 4, 8]
    assert job.state is JobState.RUNNING and job.stale and "(stale)" in repr(job)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Socket timed out" in warnings[0]   # said once, not per poll
    assert poll(cluster) == 1
    assert not job.stale
    assert any("current again" in r.getMessage() for r in caplog.records)


def test_poll_delay_doubles_up_to_a_limit():
    assert [poll_delay(2, n) for n in range(7)] == [2, 4, 8, 16, 32, MAX_BACKOFF, MAX_BACKOFF]
    assert poll_delay(120, 3) == 120          # an interval longer than the limit stays


def test_job_that_leaves_the_queue_is_gone_after_a_second_look(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    fake.set("40", "RUNNING")
    poll(cluster)
    job = cluster.jobs["40"]
    fake.purge("40")
    poll(cluster)               # once may be a race with the queue: the state stays
    assert job.state is JobState.RUNNING and not job.done and not job.stale
    poll(cluster)
    assert job.state is JobState.UNKNOWN and job.gone and job.done
    assert job.reason == ("left the queue (no longer listed by squeue; SLURM accounting storage "
                          "is disabled, so sacct cannot say how it ended)")
    assert fake.calls["sacct"] == 1
    assert any("job 40 unknown" in r.getMessage() and "before any of its workers" in
               r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert [j.job_id for j in cluster.live_jobs()] == ["41"]          # its replacement


def test_job_cancelled_by_the_cluster_that_leaves_the_queue_is_cancelled(slurm):
    cluster, fake = slurm
    cluster.scale(jobs=2)
    poll(cluster)
    cluster.scale(jobs=1)                      # the newest pending job is cancelled
    assert fake.calls["scancel"] == 1 and fake.history[-1] == ("scancel", "40_1")
    cancelled = cluster.jobs["40_1"]
    assert cancelled.cancel_requested and len(cluster.live_jobs()) == 1
    fake.purge("40_1")
    poll(cluster)
    poll(cluster)
    assert cancelled.state is JobState.CANCELLED and cancelled.reason == \
        "cancelled by this cluster"
    assert cluster.jobs["40_0"].state is JobState.PENDING


def test_unknown_state_code_is_unknown_and_said_once(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    fake.set("40", "WARPED")
    poll(cluster)
    poll(cluster)
    job = cluster.jobs["40"]
    assert job.state is JobState.UNKNOWN and job.reason == "unknown SLURM state WARPED"
    said = [r for r in caplog.records if "WARPED" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_grid_engine_asks_accounting_how_a_job_ended(sge):
    cluster, fake = sge
    cluster.scale(jobs=3)
    assert fake.calls["qsub"] == 1 and sorted(cluster.jobs) == ["40.1", "40.2", "40.3"]
    for job_id in cluster.jobs:
        fake.set(job_id, "r")
    poll(cluster)
    fake.end("40.1")
    fake.end("40.2", failed="37  : qmaster enforced h_rt, h_cpu, or h_vmem limit",
             exit_status="137")
    fake.end("40.3", account=False)            # its record is written late
    poll(cluster)
    assert not any(j.done for j in cluster.jobs.values())
    poll(cluster)
    done, timeout, late = (cluster.jobs[i] for i in ("40.1", "40.2", "40.3"))
    assert (done.state, done.reason) == (JobState.FINISHED, "exit status 0")
    assert timeout.state is JobState.TIMEOUT and "h_rt" in timeout.reason
    assert late.state is JobState.RUNNING and not late.done      # waits for the record
    fake.account("40.3", exit_status="3")
    poll(cluster)
    assert (late.state, late.reason) == (JobState.FAILED, "exit status 3")


def test_slurm_asks_sacct_how_a_job_that_left_squeue_ended(env):
    fake = FakeSlurm()
    fake.accounting = {}                        # accounting enabled: sacct answers
    cluster = make(SLURMCluster, fake, env)
    cluster._clock = Clock()
    try:
        cluster.scale(jobs=3)
        assert sorted(cluster.jobs) == ["40_0", "40_1", "40_2"]
        for job_id in cluster.jobs:
            fake.set(job_id, "RUNNING")
        poll(cluster)
        fake.end("40_0", "FAILED", "3:0")
        fake.end("40_1", "TIMEOUT", "0:15")
        fake.end("40_2", account=False)         # slurmdbd has not got it yet
        fake.account("40_2", "RUNNING", "0:0")  # ... and still says RUNNING
        poll(cluster)                           # once may be a race: no question asked yet
        assert fake.calls["sacct"] == 0
        poll(cluster)
        assert fake.calls["sacct"] == 1         # one sacct for the array
        failed, timeout, late = (cluster.jobs[i] for i in ("40_0", "40_1", "40_2"))
        assert (failed.state, failed.reason) == (JobState.FAILED, "exit code 3 (sacct)")
        assert (timeout.state, timeout.reason) == (
            JobState.TIMEOUT, "time limit reached, exit code 0, signal 15 (sacct)")
        assert late.state is JobState.RUNNING and not late.done     # waits for the record
        fake.account("40_2", "CANCELLED by 0", "0:15")
        poll(cluster)
        assert (late.state, late.reason) == (
            JobState.CANCELLED, "cancelled by uid 0, exit code 0, signal 15 (sacct)")
    finally:
        cluster.close()


def test_slurm_job_without_a_sacct_record_is_gone_after_the_grace_time(env):
    fake = FakeSlurm()
    fake.accounting = {}
    cluster = make(SLURMCluster, fake, env)
    cluster._clock = Clock()
    try:
        cluster.scale(jobs=1)
        poll(cluster)
        fake.end("40", account=False)
        poll(cluster)
        poll(cluster)
        job = cluster.jobs["40"]
        assert not job.done
        cluster._clock.now += GONE_GRACE + 1
        poll(cluster)
        assert job.done and job.gone and job.state is JobState.UNKNOWN
        assert job.reason == "left the queue (no longer listed by squeue)"
    finally:
        cluster.close()


def test_grid_engine_job_without_a_record_is_gone_after_the_grace_time(sge):
    cluster, fake = sge
    cluster.scale(jobs=1)
    poll(cluster)
    fake.end("40", account=False)
    poll(cluster)
    poll(cluster)
    job = cluster.jobs["40"]
    assert not job.done
    cluster._clock.now += GONE_GRACE + 1
    poll(cluster)
    assert job.done and job.gone and job.state is JobState.UNKNOWN
    assert "no longer listed by qstat" in job.reason


def test_job_stuck_in_an_error_state_is_explained_and_removed(sge, caplog):
    cluster, fake = sge
    cluster.start_retries = 1
    cluster.scale(jobs=1)
    fake.set("40", "Eqw")
    fake.queue["40"].error = "can't open output file \"/nope/x.o40\": No such file"
    poll(cluster)
    job = cluster.jobs["40"]
    assert job.state is JobState.FAILED and "can't open output file" in job.reason
    assert fake.calls["qdel"] == 1 and "40" not in fake.queue
    assert job.cancel_requested and job.reported
    assert any("can't open output file" in r.getMessage() and "cancelling it" in r.getMessage()
               for r in caplog.records)
    with pytest.raises(RuntimeError, match=r"job 40 failed \(can't open output file"):
        cluster.wait_for_workers(1, timeout=60)


def test_jobs_that_keep_failing_are_retried_a_bounded_number_of_times(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=2)
    for _ in range(3):
        for job in cluster.live_jobs():
            fake.set(job.job_id, "FAILED", "NonZeroExitCode")
        poll(cluster)
    assert fake.calls["sbatch"] == 3 and cluster.live_jobs() == []
    assert cluster.failure == ("no more jobs are submitted: 3 submissions in a row (40, 43, 46) "
                               "failed before any worker connected: job 46_0 failed "
                               "(NonZeroExitCode); job 46_1 failed (NonZeroExitCode)")
    assert any(r.levelno == logging.ERROR and cluster.failure in r.getMessage()
               for r in caplog.records)
    poll(cluster)
    assert fake.calls["sbatch"] == 3                     # given up: nothing more is submitted
    with pytest.raises(RuntimeError) as e:
        cluster.wait_for_workers(2, timeout=60)
    assert cluster.failure in str(e.value)
    assert "job 46_1 failed (NonZeroExitCode); it has no output file" in str(e.value)
    cluster.scale(jobs=1)                                # an explicit scale() tries again
    assert fake.calls["sbatch"] == 4 and cluster.failure == ""


@pytest.fixture
def worker_of(slurm):
    """Starts a real `jobqueue worker` under a job's worker name, as the job script would."""
    cluster, _ = slurm
    procs = []

    def start(job):
        env = dict(os.environ, JOBQUEUE_TOKEN=cluster.token)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "worker", cluster.scheduler_address,
             "--nthreads", "1", "--name", job.name], env=env, stderr=subprocess.DEVNULL))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_job_with_a_connected_worker_is_running_whatever_the_last_poll_said(slurm, worker_of):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    job = cluster.jobs["40"]
    polls = fake.calls["squeue"]
    worker_of(job)
    cluster.wait_for_workers(1, timeout=60)
    assert fake.calls["squeue"] == polls           # no poll in between
    assert job.state is JobState.RUNNING and job.workers == {job.name}
    info = job.info()
    assert (info["state"], info["workers"]) == ("running", [job.name])
    poll(cluster)                                  # the queue still says pending: it lags
    assert job.state is JobState.RUNNING and job.reason == ""
    assert job.ever_connected == {job.name}


def test_job_output_goes_to_a_directory_of_the_clusters_own_in_the_cache(env, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    work = env / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    fake = FakeSlurm()
    cluster = make(SLURMCluster, fake, env, log_directory=None)
    try:
        expected = env / "home" / ".cache" / "jobqueue" / "logs" / cluster.name
        assert cluster.log_directory == str(expected) and expected.is_dir()
        cluster.scale(jobs=2)
        assert f"#SBATCH -o {expected}/%x-%j.out" in fake.scripts[0]
        assert cluster.jobs["40_0"].log_paths()[0].startswith(str(expected))
    finally:
        cluster.close()
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_unusable_log_directory_names_the_setting_and_where_it_came_from(env, monkeypatch, how):
    from jobqueue import config

    if how == "argument":
        arguments, where = {"log_directory": "/proc/nope"}, "argument"
    else:
        monkeypatch.setenv("JOBQUEUE_SLURM__LOG_DIRECTORY", "/proc/nope")
        config.refresh()
        arguments, where = {}, "JOBQUEUE_SLURM__LOG_DIRECTORY"
    with pytest.raises(config.ConfigError) as e:
        SLURMCluster(cores=1, memory="1GB", **arguments)
    assert str(e.value).startswith(f"{where}: slurm.log-directory /proc/nope: cannot create or "
                                   f"write it")
    assert "compute nodes share" in str(e.value)

# ----------------------------------------------------------------- jobs that can never start


def test_job_that_can_never_start_is_reported_at_once_and_cancelled(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=2)
    fake.set("40_0", "PENDING", "PartitionConfig")
    fake.set("40_1", "PENDING", "PartitionConfig")
    poll(cluster)
    jobs = list(cluster.jobs.values())
    assert all(j.state is JobState.FAILED and j.done for j in jobs)
    assert jobs[0].reason.startswith("cannot start as submitted: PartitionConfig (no node of the "
                                     "partition has what it asks for")
    assert fake.history[-1] == ("scancel", "40_0", "40_1")
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "job 40_0 40_1 can never start as submitted: PartitionConfig" in warning
    assert "To fix: ask for fewer cores or less memory (cores=, memory=" in warning
    with pytest.raises(RuntimeError) as e:
        cluster.wait_for_workers(2, timeout=60)
    assert "job 40_0 failed (cannot start as submitted: PartitionConfig" in str(e.value)
    assert "sinfo" in str(e.value)            # the remedy, not an empty log file


@pytest.mark.parametrize("reason", ["Priority", "Resources", "None", "BeginTime",
                                    "AssocMaxJobsLimit"])
def test_job_waiting_its_turn_is_not_reported(slurm, caplog, reason):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    fake.set("40", "PENDING", reason)
    poll(cluster)
    assert cluster.jobs["40"].state is JobState.PENDING
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(TimeoutError):
        cluster.wait_for_workers(1, timeout=0.2)


def test_job_blocked_on_something_that_may_not_come_is_reported_once(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    fake.set("40", "PENDING", "ReqNodeNotAvail, UnavailableNodes:node7")
    poll(cluster)
    poll(cluster)
    assert cluster.jobs["40"].state is JobState.PENDING and fake.calls["scancel"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "job 40 is pending: ReqNodeNotAvail, UnavailableNodes:node7 (a node it needs is " \
        "down" in warnings[0] and "sinfo -R" in warnings[0]


def test_grid_engine_asks_once_whether_a_pending_job_could_ever_run(sge, caplog):
    cluster, fake = sge
    cluster.scale(jobs=2)
    poll(cluster)
    poll(cluster)
    assert fake.calls["qalter"] == 1 and fake.history[-2] == ("qalter", "-w", "v", "40")
    assert all(j.state is JobState.PENDING for j in cluster.jobs.values())
    cluster.scale(jobs=4)                          # a new array: asked about once too
    for job_id in ("41.1", "41.2"):
        fake.queue[job_id].never = 'cannot run in PE "smp" because it only offers 8 slots'
    poll(cluster)
    assert fake.calls["qalter"] == 2
    new = [cluster.jobs["41.1"], cluster.jobs["41.2"]]
    assert all(j.state is JobState.FAILED and j.cancel_requested for j in new)
    assert new[0].reason == ('cannot start as submitted: cannot run in PE "smp" because it only '
                             'offers 8 slots')
    assert fake.history[-1] == ("qdel", "41.1", "41.2")
    assert [j.state for j in (cluster.jobs["40.1"], cluster.jobs["40.2"])] == [JobState.PENDING] * 2

# ------------------------------------------------------------ scale(jobs=N) is a kept target


def test_a_job_near_its_walltime_is_replaced_before_its_workers_retire(env):
    import time

    fake = FakeSlurm()
    cluster = make(SLURMCluster, fake, env, walltime=2)      # workers retire from 75 s on
    try:
        cluster.scale(jobs=1)
        fake.set("40", "RUNNING")
        poll(cluster)
        job = cluster.jobs["40"]
        assert fake.calls["sbatch"] == 1 and job.replace_at == job.started + 67.5
        poll(cluster)
        assert fake.calls["sbatch"] == 1
        job.started = time.time() - 70                       # 70 s into its 2 minutes
        poll(cluster)
        assert fake.calls["sbatch"] == 2 and cluster.replacements == 1
        assert [j.job_id for j in cluster.live_jobs()] == ["40", "41"]
        fake.set("40", "COMPLETED")                          # it ended: no second replacement
        poll(cluster)
        assert fake.calls["sbatch"] == 2 and len(cluster.live_jobs()) == 1
    finally:
        cluster.close()


def test_a_job_cancelled_from_outside_is_not_replaced(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=2)
    fake.set("40_0", "CANCELLED")
    poll(cluster)
    poll(cluster)
    assert fake.calls["sbatch"] == 1 and len(cluster.live_jobs()) == 1
    assert cluster._target == 1
    assert any("a job was cancelled outside jobqueue; keeping 1 jobs, not 2" in r.getMessage()
               for r in caplog.records)
    fake.set("40_1", "COMPLETED")                  # the other one is still replaced
    poll(cluster)
    assert fake.calls["sbatch"] == 2 and len(cluster.live_jobs()) == 1


def test_waiting_for_more_workers_than_the_target_can_bring_fails_at_once(slurm):
    cluster, fake = slurm
    cluster.scale(jobs=2)
    with pytest.raises(RuntimeError, match=r"waiting for 3 workers, 0 connected, but the "
                                           r"cluster keeps 2 jobs of 1 workers, 2 at most"):
        cluster.wait_for_workers(3, timeout=60)


def test_adaptive_scaling_does_its_own_replacing(slurm):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    cluster.adapt(minimum_jobs=0, maximum_jobs=0, interval="1h")
    fake.set("40", "COMPLETED")
    poll(cluster)
    assert fake.calls["sbatch"] == 1

# ------------------------------------------------------- files of processes that were killed


def test_a_killed_clusters_token_file_is_removed_by_the_next_one(env):
    from jobqueue.batch import owned

    script = ("import sys, jobqueue\n"
              "c = jobqueue.SLURMCluster(cores=1, memory='1GB', log_directory=sys.argv[1])\n"
              "print(c.token_file, flush=True)\n"
              "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(env / "logs")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("JOBQUEUE_")})
    token_file = proc.stdout.readline().strip()
    assert os.path.basename(token_file).endswith(f".{proc.pid}.token")
    proc.kill()                                   # SIGKILL: no chance to clean up
    proc.wait()
    assert os.path.exists(token_file)
    directory = os.path.dirname(token_file)
    others = [os.path.join(directory, name) for name in
              (f"c1.otherhost.{proc.pid}.token",          # another host's: cannot be checked
               f"c2.{owned._host()}.{os.getpid()}.json",   # this process's own
               "notes.txt")]
    for path in others:
        open(path, "w").close()
    cluster = make(SLURMCluster, FakeSlurm(), env)
    try:
        assert not os.path.exists(token_file)
        assert all(os.path.exists(path) for path in others)
        assert os.path.exists(cluster.token_file)
    finally:
        cluster.close()
    assert not os.path.exists(cluster.token_file)


def test_a_reused_pid_does_not_keep_a_dead_owners_file(tmp_path):
    from jobqueue.batch import owned

    path = tmp_path / f"c.{owned._host()}.1.token"
    path.write_text("x")                  # written now: pid 1, older, may be its owner
    assert owned.remove_stale(str(tmp_path)) == [] and path.exists()
    os.utime(path, (0, 0))                # written before pid 1 started: its pid was reused
    assert owned.remove_stale(str(tmp_path)) == [str(path)] and not path.exists()


def test_the_html_repr_shows_the_jobs_as_the_text_repr_does(slurm):
    cluster, fake = slurm
    cluster.scale(jobs=3)
    fake.set("40_0", "RUNNING")
    poll(cluster)
    assert "jobs: 2 pending, 1 running" in repr(cluster)
    html = cluster._repr_html_()
    assert "<th style='text-align:left'>jobs</th><td>2 pending, 1 running</td>" in html
    assert f"<td>{cluster.log_directory}</td>" in html and html.count("<table>") == 1


def test_a_submit_command_that_keeps_failing_gives_up_after_three_tries(slurm, caplog):
    cluster, fake = slurm
    cluster.scale(jobs=1)
    fake.set("40", "COMPLETED")
    fake.fail("sbatch", times=3, stderr="sbatch: error: Batch job submission failed: "
                                        "Invalid partition name specified")
    for _ in range(3):
        assert poll(cluster) == 1                      # the poll itself went well
    assert fake.calls["sbatch"] == 4 and cluster.live_jobs() == []
    assert cluster.failure.startswith("no more jobs are submitted: the submit command failed "
                                      "3 times in a row: sbatch --parsable")
    assert "Invalid partition name specified" in cluster.failure
    said = [r.getMessage() for r in caplog.records if "could not make a replacement job" in
            r.getMessage()]
    assert len(said) == 2
    poll(cluster)
    assert fake.calls["sbatch"] == 4

"""The keep policy of scale(jobs=N) (deploy/keep.py): pure, no cluster, no clock."""
import pytest

from jobqueue.deploy.keep import JobView, decide, failed_submissions


def job(job_id, order=0, live=True, connected=False, failed=False, outside=False, never=False,
        replace_at=None, submission=None):
    return JobView(job_id, submission or job_id.split("_")[0], order, live=live,
                   ever_connected=connected, failed_to_start=failed, cancelled_outside=outside,
                   never=never, replace_at=replace_at,
                   why=f"job {job_id} failed (NonZeroExitCode)" if failed else "")


def ended(job_id, order=0, **kw):
    return job(job_id, order, live=False, **kw)


@pytest.mark.parametrize("jobs, submit", [
    ([], 3),
    ([job("1_0"), job("1_1")], 1),
    ([job("1_0"), job("1_1"), job("1_2")], 0),
    ([job("1_0"), job("1_1"), job("1_2"), job("2", 1)], 0),         # above target: not cut
    ([ended("1_0", connected=True), job("1_1"), job("1_2")], 1),    # finished: replaced
])
def test_the_target_is_kept(jobs, submit):
    assert decide(3, jobs, now=100.0).submit == submit


def test_jobs_near_their_walltime_are_replaced_before_they_end():
    jobs = [job("1", replace_at=90.0, connected=True), job("2", 1, replace_at=200.0)]
    assert decide(2, jobs, now=80.0).submit == 0
    decision = decide(2, jobs, now=95.0)
    assert decision.submit == 1
    assert decision.reason == "2 jobs wanted, 1 queued or running (1 near their walltime not " \
                              "counted)"
    jobs.append(job("3", 2))                     # the replacement: nothing more
    assert decide(2, jobs, now=95.0).submit == 0


def test_max_jobs_caps_the_submissions():
    jobs = [job("1", replace_at=10.0)]
    assert decide(3, jobs, now=50.0, max_jobs=2).submit == 1
    assert decide(3, jobs + [job("2", 1)], now=50.0, max_jobs=2).submit == 0


def test_no_target_submits_nothing():
    assert decide(None, [ended("1", failed=True)], now=0.0).submit == 0


def test_a_job_cancelled_from_outside_lowers_the_target_once():
    jobs = [ended("1_0", outside=True), job("1_1"), job("1_2")]
    decision = decide(3, jobs, now=0.0)
    assert (decision.submit, decision.target) == (0, 2)
    # the next round starts from the lowered target and that job already counted
    assert decide(2, jobs, now=0.0, cancelled_before=1).target == 2


def test_failed_submissions_count_in_a_row_until_a_worker_connects():
    jobs = [ended("1", 0, failed=True), ended("2", 1, connected=True),
            ended("3", 2, failed=True), ended("4_0", 3, failed=True),
            ended("4_1", 3, failed=True)]
    assert failed_submissions(jobs) == ["3", "4"]
    partly = jobs + [ended("5_0", 4, failed=True), job("5_1", 4)]
    assert failed_submissions(partly) == ["3", "4"]       # 5 has a job that may still start
    assert failed_submissions(jobs, since=3) == ["4"]


def test_three_failed_submissions_give_up_with_the_reasons():
    jobs = [ended(f"{i}", i, failed=True) for i in range(1, 3)]
    decision = decide(1, jobs, now=0.0)
    assert decision.submit == 1 and not decision.give_up
    jobs.append(ended("3", 3, failed=True))
    decision = decide(1, jobs, now=0.0)
    assert decision.submit == 0
    assert decision.give_up == ("3 submissions in a row (1, 2, 3) failed before any worker "
                                "connected: job 3 failed (NonZeroExitCode)")
    assert decide(None, jobs, now=0.0).give_up          # adaptive scaling gives up too
    assert not decide(1, jobs, now=0.0, since=2).give_up  # scale() again: a fresh count


def test_a_job_that_can_never_start_gives_up_at_once():
    jobs = [ended("1_0", failed=True, never=True), ended("1_1", failed=True, never=True)]
    decision = decide(2, jobs, now=0.0)
    assert decision.submit == 0
    assert decision.give_up.startswith("its jobs can never start as submitted: job 1_0 failed")

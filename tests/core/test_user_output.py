"""What a user of a script sees: a task's traceback names their file and line and none of our
frames; closing a cluster on purpose prints nothing. Each test runs a script of its own, so its
functions travel by value (cloudpickle) as a user's script's do."""
import io
import logging
import os
import socket
import subprocess
import sys
import textwrap
import warnings

import pytest

from jobqueue.core import notice

SCRIPT = '''
import sys
from jobqueue import Client, LocalCluster

def helper(x):
    return 1 / x

def bad(x):
    y = x - 1
    return helper(y)

def chained(x):
    try:
        return {}[x]
    except KeyError as e:
        raise ValueError(f"no {x}") from e

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True)
    client = Client(cluster)
    for f in (bad, chained):
        error = client.submit(f, 1).exception()
        print(f"--- {f.__name__}: {error!r}")
        print(error.__cause__)
    print(client.submit(sum, [1, 2]).result())
    cluster.close()              # the client is still open: it must say nothing
'''


def run(tmp_path, text=SCRIPT, **environment):
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(text))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.setdefault("JOBQUEUE_SCHEDULER__DASHBOARD_ADDRESS", "null")   # 8787 may be taken
    env.update(environment)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env=env), script


def test_task_traceback_names_the_users_file_and_line_and_hides_ours(tmp_path):
    out, script = run(tmp_path)
    assert out.returncode == 0, out.stderr
    bad = out.stdout.split("--- chained")[0]
    assert "ZeroDivisionError('division by zero')" in bad
    assert (f'  File "{script}", line 10, in bad\n    return helper(y)\n'
            f'  File "{script}", line 6, in helper\n    return 1 / x\n') in bad
    assert "<dynamic-code>" not in out.stdout and "jobqueue/core" not in out.stdout
    chained = out.stdout.split("--- chained")[1]
    assert f'  File "{script}", line 14, in chained\n    return {{}}[x]\nKeyError: 1' in chained
    assert "The above exception was the direct cause of the following exception" in chained
    assert 'line 16, in chained\n    raise ValueError(f"no {x}") from e\nValueError: no 1' \
        in chained


def test_closing_the_cluster_on_purpose_prints_nothing(tmp_path):
    out, _ = run(tmp_path)
    assert out.returncode == 0 and out.stdout.rstrip().endswith("3")
    assert out.stderr == ""


def test_a_warning_reaches_a_user_who_never_configured_logging(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        out, _ = run(tmp_path, "from jobqueue import LocalCluster\n"
                               "LocalCluster(n_workers=1).close()\n",
                     JOBQUEUE_SCHEDULER__DASHBOARD_ADDRESS=f"127.0.0.1:{port}")
    assert out.returncode == 0, out.stderr
    assert (f"jobqueue.dashboard:0: JobqueueWarning: dashboard port {port} is in use (another "
            f"cluster's dashboard?): using port ") in out.stderr


def test_a_warning_is_issued_only_when_no_log_handler_would_show_it():
    from jobqueue.core.scheduler import LogBuffer

    lone = logging.Logger("jobqueue.lone")             # no parent: only its own handlers
    lone.addHandler(LogBuffer())                       # a scheduler's log: the user sees none
    with pytest.warns(notice.JobqueueWarning, match="job 43 can never start"):
        notice.warn(lone, "job %s can never start", "43")
    lone.addHandler(logging.StreamHandler(io.StringIO()))          # the user's logging
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notice.warn(lone, "job %s can never start", "44")

"""What a user of a script sees: a task's traceback names their file and line and none of our
frames; closing a cluster on purpose prints nothing. Each test runs a script of its own, so its
functions travel by value (cloudpickle) as a user's script's do."""
import subprocess
import sys
import textwrap

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


def run(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path), script


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

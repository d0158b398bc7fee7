"""The `jobqueue` command: help, config, script, info, and submit on a LocalCluster.

Commands that only print run in this process (main(argv)); `submit` runs as a subprocess, as a
user runs it, so that its exit code, signal handling and output streams are the real ones.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write  # the env fixture comes from conftest.py too

from jobqueue import config
from jobqueue.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
COMMANDS = [[], ["submit"], ["script"], ["config"], ["config", "show"], ["config", "validate"],
            ["info"], ["worker"], ["scheduler"]]




def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr); argparse's exits count as exit codes."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def subprocess_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), **extra)
    return env


def submit(tmp_path, *argv, timeout=120, **extra):
    return subprocess.run([sys.executable, "-m", "jobqueue", "submit", *argv], cwd=tmp_path,
                          env=subprocess_env(tmp_path, **extra), capture_output=True, text=True,
                          timeout=timeout)


SITE_YAML = """\
    slurm:
      queue: normal
      cores: 8
      memory: 32GB
      max-jobs: 50
    profiles:
      gpu:
        kind: slurm
        queue: gpu
        cores: 16
        job-extra-directives: [--gres=gpu:1]
    """

# ------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "jobqueue")
def test_help_with_examples(capsys, command):
    code, out, _ = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith("usage: jobqueue")
    assert "examples:\n  jobqueue " in out or "examples:\n  JOBQUEUE_TOKEN" in out


def test_no_command_prints_help_and_exits_2(capsys):
    code, _, err = run(capsys)
    assert code == 2 and "COMMAND" in err
    code, _, err = run(capsys, "config")
    assert code == 2 and "show" in err and "validate" in err


def test_usage_errors_exit_2(capsys, tmp_path):
    script = write(tmp_path / "s.py", "print(1)\n")
    for argv, says in [
            (["submit", "--memory", "lots", str(script)], "cannot read 'lots' as a size"),
            (["submit", "--walltime", "soon", str(script)],
             "cannot read 'soon' as a walltime: give HH:MM:SS, 1h30m, 90m, or a bare number, "
             "which SLURM reads as minutes and PBS and Grid Engine as seconds"),
            (["submit", "--jobs", "0", str(script)], "must be at least 1"),
            (["submit", "--jobs", "2", "--adapt", "1:3", str(script)], "not allowed with"),
            (["submit", "--cluster", "nope", str(script)], "invalid choice"),
            (["script", "lsf"], "invalid choice"),
            (["submit", "--cluster", "local", "--queue", "q", str(script)],
             "--queue does not apply to --cluster local"),
            (["submit", "--cluster", "slurm", "--adapt", "5:2", str(script)], "--adapt 5:2"),
            (["submit", "--cluster", "local", "--detach", str(script)], "--detach"),
            (["submit", "--cluster", "ssh", str(script)], "needs --hosts"),
            (["submit", "--cluster", "local", str(tmp_path / "missing.py")], "no such script")]:
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        assert says in err, (argv, err)


def test_importing_the_cli_stays_lean():
    """`jobqueue worker` starts every batch job: the cli module imports nothing heavy."""
    code = ("import sys, jobqueue.cli; heavy = [m for m in ('yaml', 'jinja2', 'tornado', "
            "'jobqueue.core.scheduler', 'jobqueue.core.client', 'jobqueue.submit', 'psutil') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"

# ---------------------------------------------------------------------------------------- config


def test_config_show_and_sources(env, capsys, monkeypatch):
    site = write(env / "etc" / "jobqueue.yaml", SITE_YAML)
    monkeypatch.setenv("JOBQUEUE_SLURM__QUEUE", "debug")
    config.refresh()
    code, out, _ = run(capsys, "config", "show")
    assert code == 0 and "  queue: debug\n" in out and "  # " not in out
    code, out, _ = run(capsys, "config", "show", "--sources")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"# layers, later wins: default, {site}, environment"

    def source(prefix):             # the first match: slurm comes before pbs and sge
        line = [x for x in lines if x.startswith(prefix)][0]
        return line.rsplit("# ", 1)[1]
    assert source("  cores: 8") == f"{site}:3"
    assert source("  queue: debug") == "JOBQUEUE_SLURM__QUEUE"
    assert source("  job-name: jobqueue-worker") == "default"
    assert source("    job-extra-directives:") == f"{site}:11"


def test_config_show_bad_config_exits_1(env, capsys):
    write(env / "etc" / "site.yaml", "slurm:\n  walltme: 1h\n")
    config.refresh()
    code, out, err = run(capsys, "config", "show")
    assert code == 1 and out == ""
    assert f"{env / 'etc' / 'site.yaml'}:2: slurm.walltme: unknown key; did you mean 'walltime'?" \
        in err


def test_config_validate(env, capsys):
    good = write(env / "good.yaml", SITE_YAML)
    code, out, err = run(capsys, "config", "validate", str(good))
    assert code == 0 and out == f"{good}: ok\n" and err == ""
    bad = write(env / "bad.yaml", """\
        slurm:
          walltme: 1h
          memory: lots
        profiles:
          gpu: {kind: lsf}
        """)
    broken = write(env / "broken.yaml", "slurm:\n  queue: [debug\n")
    code, out, err = run(capsys, "config", "validate", str(good), str(bad), str(broken))
    assert code == 1
    assert out == f"{good}: ok\n"
    assert f"{bad}: 3 problems:" in err
    assert f"{bad}:2: slurm.walltme: unknown key; did you mean 'walltime'?" in err
    assert f"{bad}:3: slurm.memory: cannot read 'lots' as a size" in err
    assert "kind must be one of local, ssh, slurm, pbs, sge, kubernetes, batch, not 'lsf'" in err
    assert f"{broken}: 1 problem:" in err and f"{broken}:3: invalid YAML" in err


def test_readme_site_config_is_valid(env, capsys):
    """The example /etc/jobqueue/jobqueue.yaml in the README validates and means what it says."""
    text = (ROOT / "README.md").read_text().split("## For site admins", 1)[1]
    site = write(env / "etc" / "jobqueue.yaml",
                 re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    code, out, err = run(capsys, "config", "validate", str(site))
    assert code == 0, err
    config.refresh()
    code, out, _ = run(capsys, "config", "show", "--sources")
    assert f"  cores: 8                                        # {site}:4" in out
    code, out, _ = run(capsys, "script", "slurm", "--profile", "gpu")
    assert code == 0
    assert "#SBATCH -p gpu\n" in out and "#SBATCH --gres=gpu:1\n" in out
    assert "#SBATCH --cpus-per-task=16\n" in out and "module load python/3.11\n" in out

# ---------------------------------------------------------------------------------------- script


def test_script_slurm(env, capsys):
    code, out, err = run(capsys, "script", "slurm", "--cores", "2", "--memory", "1GB",
                         "--walltime", "90m", "--queue", "debug", "--account", "proj",
                         "--job-extra=--exclusive", "--prologue", "module load python",
                         "--log-directory", str(env / "logs"), "--job-name", "sweep")
    assert code == 0, err
    assert out.startswith("#!/usr/bin/env bash\n#SBATCH -J sweep\n")
    for line in ["#SBATCH -p debug", "#SBATCH -A proj", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --mem=954M", "#SBATCH -t 01:30:00", "#SBATCH --exclusive",
                 f"#SBATCH -o {env}/logs/%x-%j.out", "module load python",
                 "--nthreads 1 --nworkers 2 --memory-limit 500000000"]:
        assert line in out.splitlines() or line in out, line
    assert re.search(r"-m jobqueue worker tcp://[\d.]+:PORT ", out)


@pytest.mark.parametrize("kind, directive", [("slurm", "#SBATCH -t 01:00:00"),
                                             ("pbs", "#PBS -l walltime=00:01:00"),
                                             ("sge", "#$ -l h_rt=00:01:00")])
def test_bare_walltime_on_the_command_line_is_what_the_system_reads(env, capsys, kind,
                                                                    directive):
    code, out, _ = run(capsys, "script", kind, "--cores", "1", "--memory", "1GB",
                       "--walltime", "60")
    assert code == 0 and f"{directive}\n" in out


def test_script_uses_config_and_profile(env, capsys):
    write(env / "etc" / "site.yaml", SITE_YAML)
    config.refresh()
    code, out, _ = run(capsys, "script", "slurm")
    assert code == 0 and "#SBATCH -p normal\n" in out and "--cpus-per-task=8\n" in out
    code, out, _ = run(capsys, "script", "slurm", "--profile", "gpu", "--cores", "4")
    assert code == 0 and "#SBATCH -p gpu\n" in out and "--cpus-per-task=4\n" in out
    assert "#SBATCH --gres=gpu:1\n" in out
    code, _, err = run(capsys, "script", "slurm", "--profile", "gpux")
    assert code == 1 and "no profile 'gpux'; did you mean 'gpu'?" in err


def test_profile_also_named_config_name(env):
    """SLURMCluster(config_name="gpu") as in dask-jobqueue, or profile="gpu"."""
    from jobqueue import SLURMCluster

    write(env / "etc" / "site.yaml", SITE_YAML)
    config.refresh()
    with SLURMCluster(config_name="gpu", memory="1GB", log_directory=str(env)) as cluster:
        assert cluster.settings["queue"] == "gpu" and cluster.settings["cores"] == 16
        assert "#SBATCH --gres=gpu:1\n" in cluster.job_script()
    with pytest.raises(TypeError, match="profile or config_name"):
        SLURMCluster(config_name="gpu", profile="other", memory="1GB")


def test_script_without_cores_and_memory_says_what_to_give(env, capsys):
    code, out, err = run(capsys, "script", "pbs")
    assert code == 1 and out == ""
    assert "pbs.cores: is required" in err and "pbs.memory: is required" in err
    assert "--cores N --memory SIZE" in err


def test_script_is_what_the_cluster_submits(env, capsys):
    from jobqueue import SLURMCluster

    code, out, _ = run(capsys, "script", "slurm", "--cores", "2", "--memory", "1GB",
                       "--processes", "2", "--log-directory", str(env / "logs"))
    assert code == 0
    with SLURMCluster(cores=2, memory="1GB", processes=2,
                      log_directory=str(env / "logs")) as cluster:
        real = cluster.job_script()
        port = cluster.scheduler_address.rsplit(":", 1)[1]
        token_file = cluster.token_file
    expected = real.replace(f":{port} ", ":PORT ").replace(
        token_file, str(Path(token_file).parent / "CLUSTER.token"))
    assert out == expected

# ------------------------------------------------------------------------------------------ info


def test_info(env, capsys, monkeypatch, cluster):
    monkeypatch.setenv("JOBQUEUE_TOKEN", cluster.token)
    code, out, err = run(capsys, "info", cluster.scheduler_address)
    assert code == 0, err
    assert f"scheduler  {cluster.scheduler_address}" in out
    assert "workers    2, 2 threads" in out
    assert re.search(r"jobs       2: 2 running", out)
    for name in cluster.jobs:
        assert name in out
    code, out, _ = run(capsys, "info", cluster.scheduler_address, "--json")
    info = json.loads(out)
    assert len(info["workers"]) == 2 and {j["name"] for j in info["jobs"]} == set(cluster.jobs)


def test_info_from_scheduler_file(env, capsys, cluster):
    from jobqueue.core.scheduler import write_scheduler_file

    path = env / "scheduler.json"
    write_scheduler_file(str(path), cluster.scheduler_address, cluster.token)
    code, out, _ = run(capsys, "info", "--scheduler-file", str(path))
    assert code == 0 and "workers    2" in out


def test_info_says_what_tasks_in_no_worker_need():
    from jobqueue.cli import format_info

    text = format_info({"address": "tcp://h:1", "workers": {}, "tasks": {"no-worker": 7},
                        "no_worker": {"resources GPU=1": 6, "workers gpu-node": 1}})
    assert "no worker  6 tasks need resources GPU=1, which no connected worker offers" in text
    assert "no worker  1 task needs workers gpu-node" in text


def test_info_errors(env, capsys, monkeypatch):
    code, _, err = run(capsys, "info")
    assert code == 2 and "no scheduler to ask" in err
    code, _, err = run(capsys, "info", "tcp://127.0.0.1:9")
    assert code == 1 and "no token" in err
    monkeypatch.setenv("JOBQUEUE_TOKEN", "x")
    code, _, err = run(capsys, "info", "tcp://127.0.0.1:9", "--timeout", "1")
    assert code == 1 and "cannot get the state of tcp://127.0.0.1:9" in err
    code, _, err = run(capsys, "info", "--scheduler-file", str(env / "nope.json"))
    assert code == 1 and "nope.json" in err

# ---------------------------------------------------------------------------------------- submit


def test_submit_local_runs_monte_carlo(tmp_path):
    out = submit(tmp_path, "--cluster", "local", "--jobs", "2", "--cores", "1", "--memory",
                 "1GB", str(EXAMPLES / "monte_carlo.py"), "--batches", "8", "--samples", "20000")
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("pi = ")]
    estimate, error = map(float, re.match(r"pi = ([\d.]+) \+/- ([\d.]+) from 160000 samples "
                                          r"in 8 tasks on 2 workers", line).groups())
    assert abs(estimate - 3.14159) < 5 * error
    err = out.stderr
    assert "LocalCluster local-" in err and "dashboard: " in err
    assert "2 worker processes on this machine, 1 thread each" in err
    assert "monte_carlo.py exited with code 0" in err
    assert re.search(r"jobs of local-\w+: 2 finished", err)
    assert "jobqueue submit" not in out.stdout            # the command's messages: stderr only
    assert list((tmp_path / "home" / ".jobqueue").glob("*.json")) == []   # scheduler file gone


def test_submit_passes_the_scripts_exit_code_and_arguments(tmp_path):
    script = write(tmp_path / "fail.py", """\
        import os, sys
        from jobqueue import Client
        client = Client()
        assert client.address == os.environ["JOBQUEUE_SCHEDULER_ADDRESS"]
        print("args", sys.argv[1:], "executable", sys.executable == os.environ["EXPECTED"])
        sys.exit(int(sys.argv[1]))
        """)
    out = submit(tmp_path, "--cluster", "local", "--jobs", "1", str(script), "3", "--jobs", "x",
                 EXPECTED=sys.executable)
    assert out.returncode == 3, out.stderr
    assert "args ['3', '--jobs', 'x'] executable True" in out.stdout
    assert "fail.py exited with code 3" in out.stderr
    raising = write(tmp_path / "raise.py", "raise RuntimeError('boom')\n")
    out = submit(tmp_path, "--cluster", "local", "--jobs", "1", str(raising))
    assert out.returncode == 1
    assert "RuntimeError: boom" in out.stderr and "jobs of local-" in out.stderr


def test_submit_config_error_exits_1_before_running_anything(tmp_path):
    script = write(tmp_path / "s.py", "open('ran', 'w')\n")
    out = submit(tmp_path, "--cluster", "slurm", "--jobs", "2", str(script))
    assert out.returncode == 1
    assert "slurm.cores: is required" in out.stderr and "--cores N --memory SIZE" in out.stderr
    assert not (tmp_path / "ran").exists()
    out = submit(tmp_path, "--profile", "gpu", str(script))
    assert out.returncode == 1 and "no profile 'gpu'; the config defines none" in out.stderr


def test_submit_without_cluster_runs_locally_and_says_so(tmp_path):
    script = write(tmp_path / "ok.py", "from jobqueue import Client\n"
                   "print(Client().submit(sum, [1, 2]).result())\n")
    out = submit(tmp_path, "--jobs", "1", str(script))
    assert out.returncode == 0 and out.stdout == "3\n"
    assert "no --cluster given" in out.stderr


def test_submit_sigint_stops_the_script_and_the_workers(tmp_path):
    import psutil

    script = write(tmp_path / "slow.py", """\
        import time
        from jobqueue import Client
        client = Client()
        print("ready", flush=True)
        client.submit(time.sleep, 600).result()
        """)
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "submit", "--cluster", "local",
                             "--jobs", "2", str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(tmp_path))
    try:
        assert proc.stdout.readline() == "ready\n"
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3          # two workers and the script
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "SIGINT: stopping the script, then cancelling every job" in err
    assert "KeyboardInterrupt" in err
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []


def test_submit_dry_run_submits_nothing(tmp_path):
    bin_dir = tmp_path / "bin"
    for command in ("sbatch", "squeue", "scancel"):
        write(bin_dir / command, f"#!/bin/sh\necho {command} >> {tmp_path}/called\n")
        (bin_dir / command).chmod(0o755)
    script = write(tmp_path / "s.py", "print(1)\n")
    out = submit(tmp_path, "--cluster", "slurm", "--cores", "1", "--memory", "500MB",
                 "--jobs", "3", "--queue", "debug", "--dry-run", str(script), "--x",
                 PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("# the job script (slurm)\n#!/usr/bin/env bash\n")
    assert "#SBATCH -p debug\n" in text and "#SBATCH --mem=477M\n" in text
    logs = tmp_path / "home" / ".cache" / "jobqueue" / "logs" / "CLUSTER"
    assert re.search(rf"^sbatch --parsable --array=0-2 --output={logs}/%x-%A_%a.out "
                     rf"\S+/jobqueue-worker\.sh$", text, re.M), text
    assert re.search(rf"^JOBQUEUE_SCHEDULER_ADDRESS=tcp://\S+ JOBQUEUE_TOKEN=<token> "
                     rf"{re.escape(sys.executable)} {script} --x$", text, re.M)
    assert "scancel '<job ids>'" in text
    assert not (tmp_path / "called").exists()
    out = submit(tmp_path, "--cluster", "local", "--jobs", "2", "--dry-run", str(script))
    assert out.returncode == 0 and "LocalCluster(n_workers=2" in out.stdout


def test_detach_dry_run_shows_the_driver_job(tmp_path):
    write(tmp_path / "site" / "jobqueue.yaml", SITE_YAML)
    script = write(tmp_path / "s.py", "print(1)\n")
    out = submit(tmp_path, "--profile", "gpu", "--memory", "4GB", "--jobs", "2", "--detach",
                 "--dry-run", "--driver-walltime", "12h", "--driver-memory", "1GB",
                 "--job-extra=--exclusive", str(script), "--n", "5",
                 JOBQUEUE_CONFIG=str(tmp_path / "site"))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "#SBATCH -J jobqueue-worker-driver\n" in text
    assert "#SBATCH -t 12:00:00\n" in text and "#SBATCH --mem=954M\n" in text
    assert "#SBATCH --cpus-per-task=1\n" in text
    assert "#SBATCH -p normal\n" in text                   # the section's queue, not the profile's
    assert "gres" not in text.split("exec")[0] and "exclusive" not in text.split("exec")[0]
    assert "-m jobqueue worker" not in text
    (command,) = [line for line in text.splitlines() if " -m jobqueue submit " in line]
    assert command == (f"exec {sys.executable} -m jobqueue submit --cluster slurm --jobs=2 "
                       f"--profile=gpu --memory=4GB --job-extra=--exclusive -- {script} --n 5")
    assert f"cd {tmp_path}" in text
    assert re.search(r"^sbatch --parsable \S+/jobqueue-worker-driver\.sh$", text, re.M)


@pytest.mark.ssh
def test_submit_over_ssh(tmp_path):
    """--cluster ssh: the scheduler here, a worker over ssh (the sshd of ci/sshd/start.sh); the
    connection settings come from the config, as a site or user would set them."""
    from conftest import needs_service

    ssh_config = ROOT / "ci" / "state" / "sshd" / "ssh_config"
    up = ssh_config.exists() and subprocess.run(
        ["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "localhost", "true"],
        capture_output=True, timeout=20).returncode == 0
    needs_service(up, "sshd on 127.0.0.1:2222 (ci/sshd/start.sh)")
    out = submit(tmp_path, "--cluster", "ssh", "--hosts", "localhost,localhost", "--cores", "2",
                 str(EXAMPLES / "monte_carlo.py"), "--batches", "4", "--samples", "1000",
                 JOBQUEUE_SSH__CONNECT_OPTIONS=f"{{config_file: {ssh_config}, port: 2222}}")
    assert out.returncode == 0, out.stderr
    assert "from 4000 samples in 4 tasks on 1 workers" in out.stdout
    assert "SSHCluster ssh-" in out.stderr and re.search(r"jobs of ssh-\w+: 1 finished",
                                                         out.stderr)


def _start_scheduler(tmp_path, *flags, **env_extra):
    sched_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "scheduler", "--host", "127.0.0.1",
                             "--port", "0", "--scheduler-file", str(sched_file), *flags],
                            env=subprocess_env(tmp_path, **env_extra), stderr=subprocess.PIPE,
                            text=True)
    for _ in range(300):
        if sched_file.exists() and sched_file.stat().st_size:
            return proc, sched_file
        if proc.poll() is not None:
            raise AssertionError(f"jobqueue scheduler exited: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("jobqueue scheduler did not write its scheduler file")


def test_standalone_scheduler_takes_settings_from_config_and_flags(tmp_path):
    """`jobqueue scheduler` honours scheduler.allowed-failures and scheduler.worker-ttl from the
    site's YAML (a silent worker is removed after worker-ttl), and its flags override them."""
    import asyncio

    from jobqueue import Client
    from jobqueue.core.comm import connect

    site = write(tmp_path / "site.yaml", """\
        scheduler:
          allowed-failures: 5
          worker-ttl: 2s
        """)
    proc, sched_file = _start_scheduler(tmp_path, JOBQUEUE_CONFIG=str(site))
    try:
        with Client(scheduler_file=str(sched_file)) as client:
            info = client.scheduler_info()
            assert info["settings"] == {"allowed_failures": 5, "worker_ttl": 2.0,
                                        "idle_timeout": None}

            async def silent_worker():  # registers, then never sends a heartbeat
                token = json.loads(sched_file.read_text())["token"]
                comm = await connect(info["address"], token)
                await comm.write([{"op": "register-worker", "address": "tcp://silent:1",
                                   "name": "silent", "nthreads": 1, "memory_limit": 0}])
                assert (await comm.read())[0]["op"] == "welcome"
                for _ in range(300):
                    if "tcp://silent:1" not in client.scheduler_info()["workers"]:
                        return True
                    await asyncio.sleep(0.1)
                return False

            assert asyncio.run(silent_worker()), "the silent worker was never removed"
    finally:
        proc.terminate()
        proc.wait(10)
    proc, sched_file = _start_scheduler(tmp_path, "--allowed-failures", "0", "--worker-ttl",
                                        "never", JOBQUEUE_CONFIG=str(site))
    try:
        with Client(scheduler_file=str(sched_file)) as client:
            assert client.scheduler_info()["settings"] == {"allowed_failures": 0,
                                                           "worker_ttl": None,
                                                           "idle_timeout": None}
    finally:
        proc.terminate()
        proc.wait(10)
    code = subprocess.run([sys.executable, "-m", "jobqueue", "scheduler", "--worker-ttl",
                           "soon"], capture_output=True, text=True,
                          env=subprocess_env(tmp_path)).returncode
    assert code == 2  # argparse refuses what config would refuse


def test_standalone_scheduler_closes_after_idle_timeout(tmp_path):
    """scheduler.idle-timeout: with no client and no task for that long, `jobqueue scheduler`
    closes, removes its scheduler file and exits 0."""
    from jobqueue import Client

    site = write(tmp_path / "site.yaml", "scheduler:\n  idle-timeout: 1s\n")
    proc, sched_file = _start_scheduler(tmp_path, JOBQUEUE_CONFIG=str(site))
    try:
        with Client(scheduler_file=str(sched_file)) as client:
            assert client.scheduler_info()["settings"]["idle_timeout"] == 1.0
        assert proc.wait(30) == 0
        assert "no client and no task for 1 s (scheduler.idle-timeout)" in proc.stderr.read()
        assert not sched_file.exists()
    finally:
        proc.kill()
        proc.wait()


def test_unusable_paths_name_the_option_and_the_path(tmp_path):
    script = write(tmp_path / "s.py", "open('ran', 'w')\n")
    out = submit(tmp_path, "--cluster", "slurm", "--cores", "1", "--memory", "500MB",
                 "--log-directory", "/proc/nope", str(script))
    assert out.returncode == 1, out.stderr
    assert "--log-directory /proc/nope: cannot create or write it" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "ran").exists()
    out = submit(tmp_path, "--cluster", "local", "--jobs", "1", "--scheduler-file",
                 "/proc/nope/s.json", str(script))
    assert out.returncode == 1, out.stderr
    assert "--scheduler-file: cannot create /proc/nope/s.json: No such file or directory" \
        in out.stderr and not (tmp_path / "ran").exists()
    out = submit(tmp_path, "--cluster", "slurm", "--cores", "1", "--memory", "500MB",
                 str(script), JOBQUEUE_SLURM__LOG_DIRECTORY="/proc/nope")
    assert out.returncode == 1, out.stderr
    assert ("JOBQUEUE_SLURM__LOG_DIRECTORY: slurm.log-directory /proc/nope: cannot create or "
            "write it") in out.stderr

"""What a dask-jobqueue 0.9 user writes, read as they mean it: its old parameter names (with a
FutureWarning naming ours), ``project`` beside ``account``, its processes x threads split."""
import re
import warnings

import pytest

from jobqueue.batch import script
from jobqueue.config import ConfigError

from test_templates import directives, isolated_config, render, worker_argv  # noqa: F401

pytestmark = pytest.mark.usefixtures("isolated_config")   # package defaults only

OLD_NAMES = [
    ("env_extra", ["module load python"], "job_script_prologue"),
    ("job_extra", ["--exclusive"], "job_extra_directives"),
    ("extra", ["--lifetime", "1h"], "worker_extra_args"),
    ("header_skip", ["--mem"], "job_directives_skip"),
]


@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge"])
@pytest.mark.parametrize("old, value, new", OLD_NAMES)
def test_old_name_is_read_as_the_new_one_with_a_future_warning(kind, old, value, new):
    with pytest.warns(FutureWarning, match=rf"{old} is dask-jobqueue's old name for {new}") as w:
        settings = script.settings(kind, {"cores": 2, "memory": "1GB", old: value})
    assert settings[new] == value
    assert w[0].filename == __file__          # attributed to the caller, not to jobqueue
    assert settings == script.settings(kind, {"cores": 2, "memory": "1GB", new: value})


def test_old_names_land_in_the_job_script():
    with pytest.warns(FutureWarning):
        text = render("slurm", cores=2, memory="2GB", env_extra=["module load python"],
                      job_extra=["--exclusive"], header_skip=["--mem"])
    assert "\nmodule load python\n" in text
    assert "--exclusive" in directives(text, "#SBATCH")
    assert not any("--mem" in d for d in directives(text, "#SBATCH"))


def test_new_name_wins_over_the_old_one_with_a_warning():
    with pytest.warns(FutureWarning, match=r"both are given: job_extra=\['--a'\] is ignored"):
        settings = script.settings("pbs", {"cores": 2, "memory": "1GB", "job_extra": ["--a"],
                                           "job_extra_directives": ["--b"]})
    assert settings["job_extra_directives"] == ["--b"]


def test_job_extra_is_not_taken_for_job_array():
    with pytest.warns(FutureWarning):
        script.settings("slurm", {"cores": 2, "memory": "1GB", "job_extra": ["--x"]})
    with pytest.raises(ConfigError) as e:
        script.settings("slurm", {"cores": 2, "memory": "1GB", "job_extras": ["--x"]})
    assert "job_array" not in str(e.value)


def test_old_names_are_only_batch_settings():
    from jobqueue import config
    with pytest.raises(ConfigError, match=r"argument: local\.extra: unknown setting"):
        config.resolve("local", {"extra": ["--x"]})


def test_account_wins_over_project_with_a_warning():
    with pytest.warns(FutureWarning, match=r"account='a' and project='b' .* account wins"):
        text = render("slurm", cores=2, memory="1GB", account="a", project="b")
    assert "-A a" in directives(text, "#SBATCH")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert script.settings("sge", {"cores": 2, "memory": "1GB", "project": "p"})[
            "account"] == "p"


@pytest.mark.parametrize("cores, workers, threads", [
    (1, 1, 1), (2, 2, 1), (4, 4, 1), (6, 3, 2), (8, 4, 2), (10, 5, 2), (12, 4, 3), (24, 6, 4)])
def test_job_script_splits_cores_as_dask_jobqueue(cores, workers, threads):
    argv = worker_argv(render("pbs", cores=cores, memory="12GB"))
    options = dict(zip(argv[5::2], argv[6::2]))
    assert (int(options["--nworkers"]), int(options["--nthreads"])) == (workers, threads)
    assert re.search(rf"ncpus={cores}\b", render("pbs", cores=cores, memory="12GB"))


# ------------------------------------------------------------------ worker_extra_args, checked

DASK_JOBQUEUE_WORKER_ARGS = [
    "--local-directory", "/scratch/me", "--lifetime", "55m", "--lifetime-stagger", "4m",
    "--memory-limit", "3GB", "--death-timeout", "120", "--interface", "ib0",
    "--resources", "GPU=1,FOO=2", "--preload", "mymod", "--preload", "/site/setup.py",
]


def test_worker_args_dask_jobqueue_users_pass_are_accepted():
    settings = script.settings("slurm", {"cores": 8, "memory": "8GB",
                                         "worker_extra_args": DASK_JOBQUEUE_WORKER_ARGS})
    from jobqueue import node
    options = node.parse_worker_options(settings["worker_extra_args"])
    assert options == {"local_directory": "/scratch/me", "lifetime": 3300.0,
                       "lifetime_stagger": 240.0, "memory_limit": 3_000_000_000,
                       "death_timeout": 120.0, "interface": "ib0",
                       "resources": {"GPU": 1, "FOO": 2},
                       "preload": ["mymod", "/site/setup.py"]}


@pytest.mark.parametrize("args, named", [
    (["--resources", "GPU"], r"argument --resources: 'GPU' is not NAME=AMOUNT"),
    (["--preload-nanny", "mymod"], r"--preload-nanny: the nanny runs no user code"),
    (["--lifetime-restart"], r"--lifetime-restart: a worker that reaches its lifetime retires"),
    (["--no-nanny"], r"--no-nanny: jobqueue worker always supervises"),
    (["--bogus", "1"], r"does not accept --bogus 1; it accepts .*--local-directory"),
    (["--nthreads", "many"], r"argument --nthreads: invalid"),
    (["--name", "w"], r"--name cannot be set here: the cluster names each worker after its job"),
])
def test_worker_args_we_do_not_take_are_refused_at_construction(args, named):
    with pytest.raises(ConfigError, match=r"argument: slurm\.worker-extra-args: .*" + named):
        script.settings("slurm", {"cores": 2, "memory": "1GB", "worker_extra_args": args})
    from jobqueue import SLURMCluster
    with pytest.raises(ConfigError, match=named):       # before any job or scheduler exists
        SLURMCluster(cores=2, memory="1GB", worker_extra_args=args)


@pytest.mark.parametrize("args, workers, threads", [
    (["--nprocs", "2"], 2, 4), (["--nworkers", "8"], 8, 1), (["--nthreads", "1"], 4, 1),
    (["--nworkers", "2", "--nthreads", "2"], 2, 2),
])
def test_worker_count_in_worker_args_is_what_the_cluster_counts(args, workers, threads):
    settings = script.settings("sge", {"cores": 8, "memory": "8GB", "worker_extra_args": args})
    assert script.split_job(settings) == (workers, threads)
    text = render("sge", cores=8, memory="8GB", worker_extra_args=args)
    from jobqueue.node import parse_worker_options
    argv = worker_argv(text)
    seen = parse_worker_options(argv[5:])         # as the worker reads it: the last one wins
    assert (seen["nworkers"], seen["nthreads"]) == (workers, threads)


def test_jobqueue_worker_runs_with_the_worker_args_dask_jobqueue_users_pass(tmp_path):
    """A real `jobqueue worker` with dask-worker's options, as a job script would start it."""
    import os
    import subprocess
    import sys

    from jobqueue import Client, LocalCluster

    scratch = tmp_path / "scratch"
    (tmp_path / "site_setup.py").write_text(
        "import os\n"
        "def dask_setup(worker):\n"
        "    os.environ['SETUP_BY'] = 'site_setup ' + worker.name\n")
    with LocalCluster(n_workers=0, processes=False) as cluster, Client(cluster) as client:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobqueue", "worker", cluster.scheduler_address,
             "--nprocs", "2", "--nthreads", "2", "--local-directory", str(scratch),
             "--lifetime", "1h", "--lifetime-stagger", "1m", "--memory-limit", "1GB",
             "--death-timeout", "30", "--interface", "lo", "--name", "w",
             "--resources", "GPU=1", "--preload", "site_setup"],
            env={**os.environ, "JOBQUEUE_TOKEN": cluster.token,
                 "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
            stderr=subprocess.PIPE, text=True)
        try:
            cluster.wait_for_workers(2, timeout=60)
            workers = cluster.scheduler_info()["workers"]
            assert sorted(w["name"] for w in workers.values()) == ["w-0", "w-1"]
            assert [w["nthreads"] for w in workers.values()] == [2, 2]
            assert {w["memory_limit"] for w in workers.values()} == {1_000_000_000}
            assert all(a.startswith("tcp://127.0.0.1:") for a in workers)
            tmpdirs = client.run(lambda: os.environ["TMPDIR"])
            assert set(tmpdirs.values()) == {str(scratch)} and scratch.is_dir()
            assert [w["resources"] for w in workers.values()] == [{"GPU": 1}, {"GPU": 1}]
            setup = client.run(lambda: os.environ.get("SETUP_BY"))
            assert sorted(setup.values()) == ["site_setup w-0", "site_setup w-1"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)


# --------------------------------------- n_workers=, job_header, adapt() in cores and memory

@pytest.fixture
def slurm(tmp_path):
    from _realsystem import slurm_running
    from conftest import needs_service
    from jobqueue import SLURMCluster

    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")
    clusters = []

    def make(**settings):
        c = SLURMCluster(**{"cores": 1, "memory": "500MB", "walltime": "00:10:00",
                            "log_directory": str(tmp_path), "poll_interval": 0.5, **settings})
        clusters.append(c)
        return c
    yield make
    for c in clusters:
        c.close()


@pytest.mark.slurm
def test_n_workers_at_construction_starts_them(slurm):
    cluster = slurm(cores=2, processes=2, n_workers=3)     # 3 workers: 2 jobs of 2
    assert len(cluster.jobs) == 2
    cluster.wait_for_workers(4, timeout=60)
    assert len(cluster.scheduler_info()["workers"]) == 4


@pytest.mark.slurm
def test_job_header_is_the_directives_of_the_job_script(slurm):
    cluster = slurm(queue="debug", job_extra_directives=["--exclusive"])
    header = cluster.job_header.splitlines()
    assert header and all(line.startswith("#SBATCH ") for line in header)
    assert "#SBATCH -p debug" in header and header[-1] == "#SBATCH --exclusive"
    assert cluster.job_script().startswith("#!/usr/bin/env bash\n" + cluster.job_header + "\n\n")


@pytest.mark.slurm
def test_adapt_takes_bounds_in_cores_and_memory(slurm):
    cluster = slurm(cores=2, processes=1, memory="1GB")
    adaptive = cluster.adapt(minimum_cores=3, maximum_memory="4.5GB", maximum=10)
    assert (adaptive.policy.minimum_jobs, adaptive.policy.maximum_jobs) == (2, 4)
    from _realsystem import wait_until
    wait_until(lambda: len(cluster.jobs) == 2, 30, "adapt() should start the minimum, 2 jobs")
    cluster.wait_for_workers(2, timeout=60)
    adaptive = cluster.adapt(minimum_jobs=1, minimum_memory="2.5GB", maximum_cores=8,
                             maximum_jobs=5)
    assert (adaptive.policy.minimum_jobs, adaptive.policy.maximum_jobs) == (3, 4)


@pytest.mark.parametrize("module, says", [
    ("no_such_module_here", "cannot import it: ModuleNotFoundError"),
    ("broken_setup", "its dask_setup(worker) raised RuntimeError: no GPU driver"),
])
def test_failing_preload_is_a_clear_worker_start_failure(tmp_path, module, says):
    """The worker process exits naming the module, and the nanny gives up at once (it would
    fail again) instead of restarting it: the job ends with a non-zero exit code."""
    import os
    import subprocess
    import sys

    (tmp_path / "broken_setup.py").write_text(
        "def dask_setup(worker):\n    raise RuntimeError('no GPU driver')\n")
    result = subprocess.run(
        [sys.executable, "-m", "jobqueue", "worker", "tcp://127.0.0.1:9", "--name", "w",
         "--preload", module, "--death-timeout", "5"],
        env={**os.environ, "JOBQUEUE_TOKEN": "x",
             "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stderr
    assert f"worker w: --preload {module}: {says}" in result.stderr
    assert "not restarting it" in result.stderr and "restarting it;" not in result.stderr


# ------------------------------------------------------------------------------ worker_command

@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge"])
@pytest.mark.parametrize("value, head", [
    (None, ["-m", "jobqueue", "worker", "tcp://10.1.2.3:8786"]),
    ("distributed.cli.dask_worker", ["-m", "jobqueue", "worker", "tcp://10.1.2.3:8786"]),
    ("mysite.gpu_worker", ["-m", "mysite.gpu_worker", "tcp://10.1.2.3:8786"]),
])
def test_worker_command_names_the_module_the_job_runs(kind, value, head):
    text = render(kind, cores=2, memory="2GB", worker_command=value,
                  worker_extra_args=["--resources", "GPU=1"])
    argv = worker_argv(text)
    assert argv[1:1 + len(head)] == head
    options = argv[1 + len(head):]
    assert options[options.index("--resources") + 1] == "GPU=1"
    assert options[options.index("--name") + 1] == "jobqueue-worker-ID"


@pytest.mark.parametrize("value, says", [
    ("dask_cuda.cli", "starts a dask.distributed worker, which cannot talk to a jobqueue"),
    ("distributed.cli.dask_spec", "starts a dask.distributed worker"),
    ("my module; rm -rf", "is not a Python module name"),
])
def test_worker_command_that_cannot_work_is_refused_at_construction(value, says):
    with pytest.raises(ConfigError, match=r"argument: slurm\.worker-command: .*" + re.escape(says)):
        script.settings("slurm", {"cores": 2, "memory": "1GB", "worker_command": value})


def test_cluster_knows_the_resources_its_workers_declare():
    from jobqueue import SLURMCluster

    with SLURMCluster(cores=2, memory="1GB",
                      worker_extra_args=["--resources", "GPU=1,FOO=0.5"]) as cluster:
        assert cluster.worker_resources == {"GPU": 1, "FOO": 0.5}
        assert "--resources GPU=1,FOO=0.5" in cluster.job_script()


def test_worker_command_module_wraps_the_worker_end_to_end(tmp_path):
    """A site's worker_command module sets up, then runs jobqueue worker with the arguments
    the job script gives it: the line node.WorkerCommand.shell() builds, run by bash."""
    import os
    import subprocess
    import sys

    from jobqueue import Client, LocalCluster, node

    (tmp_path / "site_worker.py").write_text(
        "import os, sys\n"
        "import jobqueue.cli\n"
        "os.environ['WRAPPED_BY'] = 'site_worker'\n"
        "sys.exit(jobqueue.cli.main(['worker', *sys.argv[1:]]))\n")
    with LocalCluster(n_workers=0, processes=False) as cluster, Client(cluster) as client:
        line = node.WorkerCommand(cluster.scheduler_address, nthreads=1, name="wrapped-${N}",
                                  death_timeout=30.0).shell(
            sys.executable, script.worker_module("site_worker"), ["--resources", "GPU=1"])
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            env={**os.environ, "JOBQUEUE_TOKEN": cluster.token, "N": "7",
                 "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
        try:
            cluster.wait_for_workers(1, timeout=60)
            (row,) = cluster.scheduler_info()["workers"].values()
            assert (row["name"], row["resources"]) == ("wrapped-7", {"GPU": 1})
            assert list(client.run(lambda: os.environ["WRAPPED_BY"]).values()) == ["site_worker"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)

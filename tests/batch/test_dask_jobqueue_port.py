"""dask-jobqueue 0.9.0's tests of SLURM, PBS and SGE job scripts, config and parameter checks,
ported to jobqueue's names (dask_jobqueue/tests/test_slurm.py, test_pbs.py, test_sge.py,
test_jobqueue_core.py). Each test is named after the one it ports and asserts what it asserts,
on our classes; where we render the same thing differently the comment says how.

Differences on purpose, which the ported assertions follow:

- The default job name is ``jobqueue-worker`` (theirs: ``dask-worker``); ``name=`` names the
  cluster and, when ``job_name`` is not given, the jobs (as theirs).
- Memory is rounded up to MiB, not to whole GiB: 28GB is ``--mem=26703M`` and
  ``mem=26703mb`` (theirs: ``--mem=27G``, ``mem=27GB``); the worker's ``--memory-limit`` is in
  bytes (theirs: ``6.52GiB``).
- The worker is ``python -m jobqueue worker`` (theirs: ``-m distributed.cli.dask_worker``); the
  script exports ``JOBQUEUE_TOKEN``, read from a private file, so "no export line" becomes "no
  export line but the token's".
- PBS and SGE jobs join stdout and stderr into one file (``#PBS -j oe``, ``#$ -j y`` with ``-o
  DIR/``; theirs: no ``-j oe`` for PBS, ``-e DIR`` for SGE): one log file per job to read.
- ``project`` alone is taken as ``account`` without a warning (SGE's ``-P`` is a project);
  with ``account`` too, account wins with a FutureWarning (as theirs).
- A submit command's output is parsed in its machine-readable form (``sbatch --parsable``,
  ``qsub -terse``), not searched for any number; other output is an error that says which form
  was expected.

- ``worker_command="dask_cuda.cli"`` is refused (a dask.distributed worker cannot talk to our
  scheduler) with an error naming what to give: a module of one's own that runs jobqueue's
  worker after its set-up.
- A worker's command line is read from ``job_script()`` (theirs:
  ``cluster._dummy_job._command_template``).
- A config section of its own name, for ``config_name=``, is read from dask-jobqueue's config
  file as a profile of kind ``batch`` (theirs: ``dask.config.set``); a key with no meaning here
  (``ncpus``) is ignored with a warning naming it.

Ported with a change:

- The real-system tests (test_basic, test_adaptive, test_adaptive_grouped,
  test_adaptive_cores_mem, test_scale_cores_memory, test_scale_grouped,
  test_basic_scale_edge_cases) are at the end of this file, against the SLURM, Grid Engine and
  PBS-compatible commands that ci/ starts, with jobs of 1 GiB, not 2 GiB (the CI nodes are
  small), and SGE's 8-core, 4-process job as 2 cores, 1 process (its node has fewer slots).

Waiting for other branches (strict xfail: the marker fails once the feature lands, so that it
is removed): ``scheduler_options=`` (test_forward_ip, test_scheduler_options,
test_scheduler_options_interface, test_import_scheduler_options_from_config) and
``asynchronous=True`` (test_pbs_adapt) from branch sched.

Not ported, and why:

- test_different_interfaces_on_scheduler_and_workers: needs eth0 with two aliases (theirs
  skips without one); the multi-node interface test is the container cluster's (issue 15).
- test_complex_cancel_command: sets ``cluster.cancel_command``, which we do not have
  (``cancel_command_extra`` adds arguments to the cancel command).
- test_slurm_runner: dask-jobqueue's SLURMRunner (dask-mpi style, scheduler inside the
  allocation) has no equivalent.
- test_worker_name_uses_cluster_name: relies on ``name="test-$MY_ENV_VARIABLE"`` being
  expanded by the shell; we quote every value, so a job name with ``$`` is refused
  (test_job_name_with_a_shell_variable_is_refused checks the error).
- test_job_without_config_name, test_job_id_error_handling's half that sets
  ``job_id_regexp``: dask-jobqueue's extension API (Job subclasses, a job id regexp); ours is
  a BatchSystem with a parser per command (tested in test_status.py). test_errors and
  test_cluster_without_job_cls are ported: a cluster without a batch system is refused.
- test_config_interface: dask-jobqueue's own LocalCluster; ours takes no interface.
- test_security, test_security_temporary, test_security_temporary_defaults: dask's
  ``Security`` object; TLS is configured (``security.protocol: tls``) and tested in
  tests/core/test_tls.py; ``security=`` and ``protocol=`` are refused with an error that says
  so (test_security_argument_is_refused_with_the_config_to_use).
- test_cluster_error_scheduler_arguments_should_use_scheduler_options: ``host=`` and
  ``dashboard_address=`` belong to branch sched's scheduler_options; today they are unknown
  settings (test_wrong_parameter_error's error).
- LSF, HTCondor, Moab (MoabCluster in test_pbs.py's parametrisations), OAR: systems we do not
  run.
"""
import inspect
import os
import re
import shutil
import sys
import warnings

import pytest

from jobqueue import Client, JobQueueCluster, PBSCluster, SGECluster, SLURMCluster, config
from jobqueue.batch.status import parse_pbs_qsub, parse_sbatch, parse_sge_qsub
from jobqueue.config import ConfigError

from conftest import write
from test_templates import directives, worker_argv

pytestmark = pytest.mark.usefixtures("env")        # isolated config, HOME in tmp_path

CLUSTERS = [SLURMCluster, PBSCluster, SGECluster]
WORKER = f"{sys.executable} -m jobqueue worker tcp://"


def takes(cls, name) -> bool:
    """Whether a cluster takes the argument ``name`` (other branches are adding some)."""
    return name in inspect.signature(cls).parameters or any(
        name in inspect.signature(c.__init__).parameters for c in cls.__mro__ if
        "__init__" in vars(c)) or name.replace("_", "-") in config.SCHEMA[cls.system.name]


def pending(cls, name, branch):
    """Strict xfail until ``name`` exists: it turns into a failure once it does, so that the
    marker is removed and the port runs."""
    return pytest.mark.xfail(not takes(cls, name), strict=True,
                             reason=f"{name}= arrives with branch {branch}")


def worker_options(script: str) -> dict:
    argv = worker_argv(script)
    return dict(zip(argv[5::2], argv[6::2]))


# ------------------------------------------------------------------------------ test_slurm.py


def test_slurm_header():
    with SLURMCluster(walltime="00:02:00", processes=4, cores=8, memory="28GB") as cluster:
        header = cluster.job_header
        assert "#SBATCH" in header
        assert "#SBATCH -J jobqueue-worker" in header
        assert "#SBATCH -n 1" in header
        assert "#SBATCH --cpus-per-task=8" in header
        assert "#SBATCH --mem=26703M" in header          # 28e9 bytes, rounded up to MiB
        assert "#SBATCH -t 00:02:00" in header
        assert "#SBATCH -p" not in header
        assert "#SBATCH -A" not in header

    with SLURMCluster(queue="regular", account="DaskOnSlurm", processes=4, cores=8,
                      memory="28GB", job_cpu=16, job_mem="100G") as cluster:
        header = cluster.job_header
        assert "#SBATCH --cpus-per-task=16" in header
        assert "#SBATCH --cpus-per-task=8" not in header
        assert "#SBATCH --mem=102400M" in header         # 100G (GiB) in MiB
        assert "#SBATCH -t " in header
        assert "#SBATCH -A DaskOnSlurm" in header
        assert "#SBATCH -p regular" in header

    with SLURMCluster(cores=4, memory="8GB") as cluster:
        header = cluster.job_header
        assert "#SBATCH" in header
        assert "#SBATCH -J " in header
        assert "#SBATCH -n 1" in header
        assert "#SBATCH -t " in header
        assert "#SBATCH -p" not in header
        assert "#SBATCH -A" not in header


def test_slurm_job_script():
    with SLURMCluster(walltime="00:02:00", processes=4, cores=8, memory="28GB") as cluster:
        script = cluster.job_script()
        assert "#SBATCH" in script
        assert "#SBATCH -J jobqueue-worker" in script
        assert "#SBATCH -n 1" in script
        assert "#SBATCH --cpus-per-task=8" in script
        assert "#SBATCH --mem=26703M" in script
        assert "#SBATCH -t 00:02:00" in script
        assert "#SBATCH -p" not in script
        assert [line for line in script.splitlines() if line.startswith("export ")] == \
            ["export JOBQUEUE_TOKEN"]
        assert WORKER in script
        options = worker_options(script)
        assert (options["--nthreads"], options["--nworkers"]) == ("2", "4")
        assert options["--memory-limit"] == "7000000000"      # 7GB per worker

    prologue = ['export LANG="en_US.utf8"', 'export LANGUAGE="en_US.utf8"',
                'export LC_ALL="en_US.utf8"']
    with SLURMCluster(walltime="00:02:00", processes=4, cores=8, memory="28GB",
                      job_script_prologue=prologue) as cluster:
        script = cluster.job_script()
        assert "#SBATCH -J jobqueue-worker" in script
        assert "#SBATCH --cpus-per-task=8" in script
        assert "#SBATCH --mem=26703M" in script
        assert "#SBATCH -t 00:02:00" in script
        for line in prologue:
            assert line in script.splitlines()
        assert WORKER in script
        options = worker_options(script)
        assert (options["--nthreads"], options["--nworkers"], options["--memory-limit"]) == \
            ("2", "4", "7000000000")


@pytest.mark.parametrize("cls", CLUSTERS)
def test_config_name_takes_custom_config(env, cls):
    """Theirs: dask.config.set({"jobqueue.slurm-config-name": conf}) and config_name=. Ours
    reads the same section from a dask-jobqueue config file, as a profile any batch cluster
    takes; its keys with no meaning here are ignored with a warning naming them."""
    import yaml

    kind = cls.system.name
    conf = {
        "queue": "myqueue", "account": "myaccount", "ncpus": 1, "cores": 1, "memory": "2 GB",
        "walltime": "00:02", "job-extra": None, "job-extra-directives": [], "name": "myname",
        "processes": 1, "interface": None, "death-timeout": None, "local-directory": "/foo",
        "shared-temp-directory": None, "extra": None, "worker-command": None,
        "worker-extra-args": [], "env-extra": None, "job-script-prologue": [],
        "log-directory": None, "shebang": "#!/usr/bin/env bash", "job-cpu": None,
        "job-mem": None, "python": None,
        **({"resource-spec": None} if kind != "slurm" else {}),
    }
    if cls is SGECluster:                     # their SGE test names the project
        conf["project"] = conf.pop("account").replace("account", "project")
    path = env / "home" / ".config" / "dask" / "jobqueue.yaml"
    write(path, yaml.safe_dump({"jobqueue": {f"{kind}-config-name": conf}}))
    config.refresh()
    with pytest.warns(UserWarning, match=rf"jobqueue\.{kind}-config-name\.ncpus: .*ignored"):
        cluster = cls(config_name=f"{kind}-config-name")
    with cluster:
        assert cluster.job_name == "myname"
        assert "myqueue" in cluster.job_header
        assert ("myproject" if cls is SGECluster else "myaccount") in cluster.job_header
    assert "(dask-jobqueue jobqueue.%s-config-name.queue)" % kind in config.show(sources=True)


@pytest.mark.parametrize("cls", CLUSTERS)
def test_deprecation_project(cls):
    prefix = {"slurm": "#SBATCH", "pbs": "#PBS", "sge": "#$"}[cls.system.name]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with cls(cores=1, memory="1 GB", project="project_used", account="account_used") as c:
            script = c.job_script()
    future = [x for x in w if issubclass(x.category, FutureWarning)]
    assert len(future) == 1 and "account wins" in str(future[0].message)
    assert "project_used" not in script and "account_used" in " ".join(directives(script, prefix))

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)    # account or project alone: silent
        with cls(cores=1, memory="1 GB", account="account_used") as c:
            assert "account_used" in c.job_header
        with cls(cores=1, memory="1 GB", project="project_used") as c:
            assert "project_used" in c.job_header


def test_job_name_with_a_shell_variable_is_refused():
    """Theirs (test_worker_name_uses_cluster_name) lets the shell expand a name; ours quotes
    values, so the error says what a job name may hold."""
    with pytest.raises(ConfigError, match=r"job.name: 'test-\$MY_ENV_VARIABLE' is not a job name"
                                          r".*letters, digits, _ \. -"):
        SLURMCluster(cores=1, memory="2GB", job_name="test-$MY_ENV_VARIABLE")


# -------------------------------------------------------------------------------- test_pbs.py


def test_pbs_header():
    with PBSCluster(walltime="00:02:00", processes=4, cores=8, memory="28GB",
                    name="dask-worker") as cluster:
        header = cluster.job_header
        assert "#PBS" in header
        assert "#PBS -N dask-worker" in header            # name= is the job name too
        assert "#PBS -l select=1:ncpus=8:mem=26703mb" in header
        assert "#PBS -l walltime=00:02:00" in header
        assert "#PBS -q" not in header
        assert "#PBS -A" not in header

    with PBSCluster(queue="regular", account="DaskOnPBS", processes=4, cores=8,
                    resource_spec="select=1:ncpus=24:mem=100GB", memory="28GB") as cluster:
        header = cluster.job_header
        assert "#PBS -q regular" in header
        assert "#PBS -N jobqueue-worker" in header
        assert "#PBS -l select=1:ncpus=24:mem=100GB" in header
        assert "#PBS -l select=1:ncpus=8:mem=26703mb" not in header
        assert "#PBS -l walltime=" in header
        assert "#PBS -A DaskOnPBS" in header

    with PBSCluster(cores=4, memory="8GB") as cluster:
        header = cluster.job_header
        assert header.count("#PBS -j oe") == 1           # theirs: none by default
        assert "#PBS -N" in header
        assert "#PBS -l walltime=" in header
        assert "#PBS -A" not in header
        assert "#PBS -q" not in header

    with PBSCluster(cores=4, memory="8GB", job_extra_directives=["-j oe"]) as cluster:
        header = cluster.job_header
        assert "#PBS -j oe" in header
        assert "#PBS -N" in header
        assert "#PBS -l walltime=" in header
        assert "#PBS -A" not in header
        assert "#PBS -q" not in header


def test_pbs_job_script():
    with PBSCluster(walltime="00:02:00", processes=4, cores=8, memory="28GB") as cluster:
        script = cluster.job_script()
        assert "#PBS" in script
        assert "#PBS -N jobqueue-worker" in script
        assert "#PBS -l select=1:ncpus=8:mem=26703mb" in script
        assert "#PBS -l walltime=00:02:00" in script
        assert "#PBS -q" not in script
        assert "#PBS -A" not in script
        assert WORKER in script
        options = worker_options(script)
        assert (options["--nthreads"], options["--nworkers"], options["--memory-limit"]) == \
            ("2", "4", "7000000000")

    with PBSCluster(queue="regular", account="DaskOnPBS", processes=4, cores=8,
                    resource_spec="select=1:ncpus=24:mem=100GB", memory="28GB") as cluster:
        script = cluster.job_script()
        assert "#PBS -q regular" in script
        assert "#PBS -N jobqueue-worker" in script
        assert "#PBS -l select=1:ncpus=24:mem=100GB" in script
        assert "#PBS -l select=1:ncpus=8:mem=26703mb" not in script
        assert "#PBS -l walltime=" in script
        assert "#PBS -A DaskOnPBS" in script
        assert WORKER in script
        options = worker_options(script)
        assert (options["--nthreads"], options["--nworkers"], options["--memory-limit"]) == \
            ("2", "4", "7000000000")


def test_pbs_config(env):
    """Theirs: dask.config.set({"jobqueue.pbs.walltime": ..., "jobqueue.pbs.local-directory":
    ...}). Ours reads the same keys from a dask-jobqueue config file."""
    write(env / "home" / ".config" / "dask" / "jobqueue.yaml", """
        jobqueue:
          pbs:
            walltime: "00:02:00"
            local-directory: /foo
        """)
    config.refresh()
    with PBSCluster(cores=1, memory="2GB") as cluster:
        script = cluster.job_script()
        assert "00:02:00" in script
        # the job's local directory: --local-directory for theirs, TMPDIR for ours
        assert "--local-directory /foo" in script or "export TMPDIR=/foo" in script


def test_pbs_informative_errors():
    with pytest.raises(ValueError) as info:
        PBSCluster(memory=None, cores=4)
    assert "memory" in str(info.value)
    with pytest.raises(ValueError) as info:
        PBSCluster(memory="1GB", cores=None)
    assert "cores" in str(info.value)


@pending(PBSCluster, "asynchronous", "sched")
def test_pbs_adapt():
    import asyncio

    async def main():
        async with PBSCluster(cores=1, memory="1 GB", asynchronous=True) as cluster:
            cluster.adapt()
    asyncio.run(main())


# -------------------------------------------------------------------------------- test_sge.py


def test_sge_job_script(tmp_path):
    log_directory = str(tmp_path)
    with SGECluster(cores=6, processes=2, memory="12GB", queue="my-queue",
                    project="my-project", walltime="02:00:00",
                    job_script_prologue=["export MY_VAR=my_var"],
                    job_extra_directives=["-w e", "-m e"], log_directory=log_directory,
                    resource_spec="h_vmem=12G,mem_req=12G") as cluster:
        script = cluster.job_script()
        options = worker_options(script)
        assert (options["--nworkers"], options["--nthreads"]) == ("2", "3")
        assert options["--memory-limit"] == "6000000000"
        for each in ["-q my-queue", "-P my-project", "-l h_rt=02:00:00",
                     "export MY_VAR=my_var", "#$ -w e", "#$ -m e",
                     f"#$ -o {log_directory}/",               # theirs: -e and -o DIR
                     "-l h_vmem=12G,mem_req=12G", "#$ -cwd", "#$ -j y"]:
            assert each in script


# ---------------------------------------------------------------------- test_jobqueue_core.py


def test_errors():
    with pytest.raises(TypeError, match="JobQueueCluster is a base class: use SLURMCluster"):
        JobQueueCluster(cores=4)


def test_cluster_without_job_cls():
    class MyCluster(JobQueueCluster):
        pass

    with pytest.raises(TypeError, match="base class"):
        MyCluster(cores=1, memory="1GB")


@pytest.mark.parametrize("cls", CLUSTERS)
def test_command_template(cls):
    with cls(cores=2, memory="4GB") as cluster:
        script = cluster.job_script()
        assert f"{sys.executable} -m jobqueue worker" in script
        assert " --nthreads 1" in script
        assert " --memory-limit " in script
        assert " --name " in script

    with cls(cores=2, memory="4GB", death_timeout=60, local_directory="/scratch") as cluster:
        script = cluster.job_script()
        assert " --death-timeout 60" in script
        assert "--local-directory /scratch" in script or "export TMPDIR=/scratch" in script


@pytest.mark.parametrize("cls", CLUSTERS)
def test_command_template_preload(cls):
    with cls(cores=2, memory="4GB", worker_extra_args=["--preload", "mymodule"]) as cluster:
        assert " --preload mymodule" in cluster.job_script()


@pytest.mark.parametrize("cls", CLUSTERS)
def test_command_template_worker_command(cls):
    """Theirs runs dask_cuda.cli; a dask.distributed worker cannot talk to our scheduler, so
    the error says what to give instead, and a module of one's own is run."""
    with pytest.raises(ConfigError, match=r"worker-command: 'dask_cuda.cli' starts a "
                                          r"dask.distributed worker.*name a module of yours"):
        cls(cores=2, memory="4GB", worker_command="dask_cuda.cli")
    with cls(cores=2, memory="4GB", worker_command="mysite.gpu_worker") as cluster:
        assert f"{sys.executable} -m mysite.gpu_worker tcp://" in cluster.job_script()


@pytest.mark.parametrize("cls", CLUSTERS)
def test_shebang_settings(cls):
    python_shebang = "#!/usr/bin/python"
    with cls(cores=2, memory="4GB", shebang=python_shebang) as cluster:
        script = cluster.job_script()
        assert script.startswith(python_shebang)
        assert "bash" not in script.splitlines()[0]
    with cls(cores=2, memory="4GB") as cluster:
        assert cluster.job_script().startswith("#!/usr/bin/env bash")


@pytest.mark.parametrize("cls", CLUSTERS)
def test_dashboard_link(cls):
    with cls(cores=1, memory="1GB") as cluster:
        assert re.match(r"http://\d+\.\d+\.\d+.\d+:\d+/status", cluster.dashboard_link)


@pytest.mark.parametrize("qsub_return_string, parser", [
    ("{job_id}.admin01", parse_pbs_qsub),           # PBS's qsub: ID.SERVER
    ("{job_id}", parse_pbs_qsub),
    ("{job_id};cluster", parse_sbatch),              # sbatch --parsable: ID;CLUSTER
    ("{job_id}", parse_sbatch),
    ("{job_id}", parse_sge_qsub),                    # qsub -terse
    ("{job_id}.1-4:1", parse_sge_qsub),              # qsub -terse -t 1-4: an array
])
def test_job_id_from_qsub(qsub_return_string, parser):
    original_job_id = "654321"
    job_id = parser(qsub_return_string.format(job_id=original_job_id))
    assert job_id.split(".")[0] == original_job_id


@pytest.mark.parametrize("qsub_return_string, parser, expected", [
    ("Request {job_id}.asdf was sumbitted to queue: standard.", parse_pbs_qsub, "qsub"),
    ("sbatch: Submitted batch job {job_id}", parse_sbatch, "sbatch --parsable"),
    ("Job <{job_id}> is submitted to default queue <normal>.", parse_sge_qsub, "qsub -terse"),
])
def test_job_id_from_other_output_says_which_form_it_expects(qsub_return_string, parser,
                                                             expected):
    """Theirs finds a number anywhere (one regexp for every system); ours reads the form it
    asks each command for, and says so."""
    with pytest.raises(ValueError, match=f"expected a job id from {expected}"):
        parser(qsub_return_string.format(job_id="654321"))


@pytest.mark.parametrize("parser", [parse_sge_qsub, parse_sbatch, parse_pbs_qsub])
def test_job_id_error_handling(parser):
    with pytest.raises(ValueError, match="expected a job id"):
        parser("there is no number here")


@pytest.mark.parametrize("cls", CLUSTERS)
def test_log_directory(cls, tmp_path):
    directory = tmp_path / "logs"
    with cls(cores=1, memory="1GB"):
        assert not directory.exists()
    with cls(cores=1, memory="1GB", log_directory=str(directory)):
        assert directory.is_dir()
    shutil.rmtree(directory)


@pytest.mark.parametrize("cls", CLUSTERS)
def test_cluster_has_cores_and_memory(cls):
    kind = cls.system.name
    with pytest.raises(ValueError, match=rf"(?s){kind}\.cores: is required.*cores=\d+"
                                         rf".*{kind}\.memory: is required.*memory='\d+GB'",
                       ) as info:
        cls()
    assert isinstance(info.value, ConfigError)
    with pytest.raises(ValueError, match=rf"{kind}\.cores: is required.*cores=\d+"):
        cls(memory="1GB")
    with pytest.raises(ValueError, match=rf"{kind}\.memory: is required.*memory='\d+GB'"):
        cls(cores=4)


@pytest.mark.parametrize("cls", CLUSTERS)
def test_default_number_of_worker_processes(cls):
    with cls(cores=4, memory="4GB") as cluster:
        assert " --nworkers 4" in cluster.job_script()
        assert " --nthreads 1" in cluster.job_script()
    with cls(cores=6, memory="4GB") as cluster:
        assert " --nworkers 3" in cluster.job_script()
        assert " --nthreads 2" in cluster.job_script()


@pytest.mark.parametrize("cls", CLUSTERS)
def test_wrong_parameter_error(cls):
    with pytest.raises(ValueError, match=rf"argument: {cls.system.name}\.wrong_parameter: "
                                         r"unknown setting.*cores.*memory"):
        cls(cores=1, memory="1GB", wrong_parameter="wrong_parameter_value")


@pytest.mark.parametrize("name", ["security", "protocol"])
def test_security_argument_is_refused_with_the_config_to_use(name):
    with pytest.raises(ConfigError, match=rf"{name}= has no equivalent here: TLS is configured"
                                          r".*security\.protocol: tls"):
        SLURMCluster(cores=1, memory="1GB", **{name: "tls"})


# -- scheduler_options (branch sched): checked through the scheduler's address


def _interface():
    """An interface of this host with an IPv4 address, and that address."""
    import psutil
    import socket

    for name, addresses in psutil.net_if_addrs().items():
        for a in addresses:
            if a.family == socket.AF_INET:
                return name, a.address
    pytest.fail("no network interface with an IPv4 address (not even lo)")


@pytest.mark.parametrize("cls", CLUSTERS)
def test_forward_ip(cls, request):
    request.applymarker(pending(cls, "scheduler_options", "sched"))
    with cls(processes=4, cores=8, memory="28GB", name="dask-worker",
             scheduler_options={"host": "127.0.0.1"}) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")


@pytest.mark.parametrize("cls", CLUSTERS)
def test_scheduler_options(cls, request):
    request.applymarker(pending(cls, "scheduler_options", "sched"))
    interface, address = _interface()
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        port = s.getsockname()[1]
    with cls(cores=1, memory="1GB", scheduler_options={"interface": interface, "port": port}
             ) as cluster:
        assert cluster.scheduler_address == f"tcp://{address}:{port}"


@pytest.mark.parametrize("cls", CLUSTERS)
def test_scheduler_options_interface(cls, request):
    request.applymarker(pending(cls, "scheduler_options", "sched"))
    interface, address = _interface()
    with cls(cores=1, memory="1GB", interface=interface) as cluster:
        assert cluster.scheduler_address.startswith(f"tcp://{address}:")
        assert worker_options(cluster.job_script())["--interface"] == interface
    with cls(cores=1, memory="1GB", interface="worker-interface",
             scheduler_options={"interface": interface}) as cluster:
        assert cluster.scheduler_address.startswith(f"tcp://{address}:")
        assert worker_options(cluster.job_script())["--interface"] == "worker-interface"


@pytest.mark.parametrize("cls", CLUSTERS)
def test_import_scheduler_options_from_config(cls, env, request):
    request.applymarker(pending(cls, "scheduler_options", "sched"))
    interface, address = _interface()
    write(env / "home" / ".config" / "dask" / "jobqueue.yaml", f"""
        jobqueue:
          {cls.system.name}:
            scheduler-options:
              interface: {interface}
        """)
    config.refresh()
    with cls(cores=2, memory="2GB") as cluster:
        assert cluster.scheduler_address.startswith(f"tcp://{address}:")
    with cls(cores=2, memory="2GB", scheduler_options={"host": "127.0.0.1"}) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")


# ----------------------------------------------- the real-system tests, on the systems ci/ runs


@pytest.fixture(params=[pytest.param(SLURMCluster, marks=pytest.mark.slurm),
                        pytest.param(PBSCluster, marks=pytest.mark.pbs),
                        pytest.param(SGECluster, marks=pytest.mark.sge)],
                ids=["slurm", "pbs", "sge"])
def real(request, tmp_path, monkeypatch):
    """make(**settings) -> a cluster of the parametrised kind on its real system; closed, and
    its jobs gone from the queue, after the test."""
    from _realsystem import slurm_running, still_queued, wait_until
    from conftest import needs_service

    cls = request.param
    if cls is SLURMCluster:
        needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")
    elif cls is PBSCluster:
        from test_real_pbs import PBS_BIN, wrappers_work
        needs_service(wrappers_work(), "the PBS-compatible commands (ci/pbs/start.sh)")
        monkeypatch.setenv("PATH", f"{PBS_BIN}:{os.environ['PATH']}")
    else:
        from test_real_sge import grid_engine_running
        needs_service(grid_engine_running(), "Grid Engine (ci/sge/start.sh)")
    clusters = []

    def make(**settings):
        c = cls(**{"walltime": "00:02:00", "log_directory": str(tmp_path / "logs"),
                   "poll_interval": 0.5, **settings})
        clusters.append(c)
        return c
    yield make
    for c in clusters:
        ids = list(c.jobs)
        c.close()
        wait_until(lambda: not still_queued(c, ids), 30, f"{c.name}'s jobs should leave")


def _gone(cluster, client):
    from _realsystem import wait_until

    wait_until(lambda: not client.scheduler_info()["workers"], QUEUE_WAIT,
               "every worker should leave")
    assert not cluster.workers


QUEUE_WAIT = 120        # an upper bound on a loaded machine, not a speed check


def test_basic(real):
    cluster = real(cores=2, processes=1, memory="1GiB")
    with Client(cluster) as client:
        cluster.scale(2)
        client.wait_for_workers(2, timeout=QUEUE_WAIT)
        future = client.submit(lambda x: x + 1, 10)
        assert future.result(QUEUE_WAIT) == 11
        w = list(client.scheduler_info()["workers"].values())[0]
        assert w["memory_limit"] == 1024 ** 3
        assert w["nthreads"] == 2
        cluster.scale(0)
        _gone(cluster, client)


@pytest.mark.parametrize("real", [pytest.param(PBSCluster, marks=pytest.mark.pbs)],
                         indirect=True, ids=["pbs"])
def test_scale_cores_memory(real):
    cluster = real(cores=2, processes=1, memory="1GiB")
    with Client(cluster) as client:
        cluster.scale(cores=2)
        client.wait_for_workers(1, timeout=QUEUE_WAIT)
        assert client.submit(lambda x: x + 1, 10).result(QUEUE_WAIT) == 11
        assert cluster.workers
        w = list(client.scheduler_info()["workers"].values())[0]
        assert (w["memory_limit"], w["nthreads"]) == (1024 ** 3, 2)
        cluster.scale(memory="0GB")
        _gone(cluster, client)


@pytest.mark.parametrize("real", [pytest.param(PBSCluster, marks=pytest.mark.pbs)],
                         indirect=True, ids=["pbs"])
def test_scale_grouped(real):
    from _realsystem import wait_until

    cluster = real(cores=2, processes=2, memory="1GiB")
    with Client(cluster) as client:
        cluster.scale(4)                             # 2 jobs of 2 workers
        cluster.wait_for_workers(4, timeout=QUEUE_WAIT)
        assert client.submit(lambda x: x + 1, 10).result(QUEUE_WAIT) == 11
        workers = list(client.scheduler_info()["workers"].values())
        assert (workers[0]["memory_limit"], workers[0]["nthreads"]) == (1024 ** 3 // 2, 1)
        assert len(workers) == 4
        cluster.scale(1)                             # one job: 2 workers are left
        wait_until(lambda: len(client.scheduler_info()["workers"]) == 2, QUEUE_WAIT,
                   "one job's 2 workers should stay")
        cluster.scale(0)
        _gone(cluster, client)


@pytest.mark.parametrize("real", [pytest.param(SLURMCluster, marks=pytest.mark.slurm),
                                  pytest.param(PBSCluster, marks=pytest.mark.pbs)],
                         indirect=True, ids=["slurm", "pbs"])
@pytest.mark.parametrize("bounds", [{}, {"minimum": 1}, {"minimum_cores": 0,
                                                          "maximum_memory": "4GB"}],
                         ids=["adaptive", "adaptive_grouped", "adaptive_cores_mem"])
def test_adaptive(real, bounds):
    from _realsystem import wait_until

    cluster = real(cores=2, processes=1, memory="1GB")
    cluster.adapt(**bounds, interval=0.5, wait_count=2)
    with Client(cluster) as client:
        if bounds.get("minimum"):
            client.wait_for_workers(1, timeout=QUEUE_WAIT)
        future = client.submit(lambda x: x + 1, 10)
        assert future.result(QUEUE_WAIT) == 11
        wait_until(lambda: len(client.scheduler_info()["workers"]) == cluster.processes,
                   QUEUE_WAIT, "one job's workers should be there")
        del future
        if bounds.get("minimum"):                    # it keeps its minimum
            return
        _gone(cluster, client)


@pytest.mark.parametrize("real", [pytest.param(PBSCluster, marks=pytest.mark.pbs)],
                         indirect=True, ids=["pbs"])
def test_basic_scale_edge_cases(real):
    from _realsystem import wait_until

    cluster = real(cores=2, processes=1, memory="1GB")
    cluster.scale(2)
    cluster.scale(0)
    wait_until(lambda: not cluster.workers and not cluster.live_jobs(), QUEUE_WAIT,
               "scale(2) then scale(0) should leave no worker and no job")

"""SLURM: sbatch, squeue, scancel."""
from .. import params
from .job import JobQueueCluster
from .status import (SACCT_FORMAT, SQUEUE_FORMAT, parse_sacct, parse_sbatch, parse_squeue,
                     sacct_unavailable, slurm_pending)
from .system import BatchSystem


class Slurm(BatchSystem):
    name = "slurm"
    template = "slurm.sh.j2"
    submit_command, status_command, cancel_command = "sbatch", "squeue", "scancel"
    supports_arrays = True

    def submit_argv(self, script, count, extra=(), log_directory=None):
        # The script's "-o DIR/%x-%j.out" would name a task's file after its own SLURM id (task
        # 43_0 runs as job 44): an array's tasks write DIR/NAME-43_0.out instead.
        array = [f"--array=0-{count - 1}"] if count else []
        if count and log_directory:
            array.append(f"--output={log_directory}/%x-%A_%a.out")
        return [self.submit_command, "--parsable", *array, *extra, script]

    def parse_submit(self, stdout):
        return parse_sbatch(stdout)

    def array_ids(self, base, count):
        return [f"{base}_{i}" for i in range(count)]

    def status_argv(self, job_ids):
        # An array's id lists all its tasks (-r: one line each); -t all includes ended jobs,
        # which squeue shows for MinJobAge (300 s by default).
        bases = sorted({i.split("_")[0] for i in job_ids}, key=lambda i: (len(i), i))
        return [self.status_command, "-h", "-r", "-t", "all", "-j", ",".join(bases),
                "-o", SQUEUE_FORMAT]

    def status_ok(self, returncode, stderr):
        # One id that squeue no longer knows: "Invalid job id specified", exit code 1.
        return returncode == 0 or "Invalid job id specified" in stderr

    def parse_status(self, stdout):
        return parse_squeue(stdout)

    def accounting_argv(self, job_id):
        # A job leaves squeue MinJobAge after it ends; sacct (where accounting is enabled)
        # keeps how it ended. -X: the job, not its steps; -P: '|'-separated, -n: no header.
        return ["sacct", "-n", "-P", "-X", "-j", self.submission_id(job_id), "-o", SACCT_FORMAT]

    def parse_accounting(self, stdout):
        return parse_sacct(stdout)

    def accounting_unavailable(self, returncode, stderr):
        return sacct_unavailable(returncode, stderr)

    def pending(self, reason):
        return slurm_pending(reason)

    def submission_id(self, job_id):
        return job_id.split("_")[0]

    def log_paths(self, log_directory, job_name, job_id):
        # "-o DIR/%x-%j.out" for a job, "--output=DIR/%x-%A_%a.out" for an array's tasks
        return [self._join(log_directory, f"{job_name}-{job_id}.out")]


@params.document("slurm")
class SLURMCluster(JobQueueCluster):
    """Workers in SLURM jobs: each job runs ``processes`` worker processes on one node.

    Every setting left at None comes from the ``slurm`` section of the configuration (see
    ``jobqueue config show --sources``); the defaults below are the package's. Everything is
    checked here: a wrong name or value raises ConfigError saying where it came from and what
    is allowed. ``job_script()`` shows the exact script the jobs are submitted with.

    Examples
    --------
    >>> cluster = SLURMCluster(cores=8, memory="32GB", walltime="01:00:00", queue="normal")
    >>> print(cluster.job_script())
    >>> cluster.scale(jobs=10)                        # or cluster.adapt(maximum_jobs=50)
    >>> client = Client(cluster)
    >>> SLURMCluster(cores=4, memory="16GB", job_extra_directives=["--gres=gpu:1"])
    """

    system = Slurm()

    def __init__(self, *,
                 job_name: str | None = None,
                 cores: int | None = None,
                 memory: int | str | None = None,
                 processes: int | None = None,
                 queue: str | None = None,
                 account: str | None = None,
                 walltime: float | str | None = None,
                 job_cpu: int | None = None,
                 job_mem: int | str | None = None,
                 job_extra_directives: list[str] | None = None,
                 job_directives_skip: list[str] | None = None,
                 job_script_prologue: list[str] | None = None,
                 worker_extra_args: list[str] | None = None,
                 worker_command: str | None = None,
                 interface: str | None = None,
                 local_directory: str | None = None,
                 log_directory: str | None = None,
                 python: str | None = None,
                 shebang: str | None = None,
                 death_timeout: float | str | None = None,
                 submit_command_extra: list[str] | None = None,
                 cancel_command_extra: list[str] | None = None,
                 template: str | None = None,
                 job_array: bool | None = None,
                 poll_interval: float | str | None = None,
                 max_jobs: int | None = None,
                 scheduler_options: dict | None = None,
                 shared_temp_directory: str | None = None,
                 n_workers: int | None = None,
                 name: str | None = None,
                 profile: str | None = None,
                 config_name: str | None = None,
                 scheduler_file: str | None = None,
                 asynchronous: bool = False,
                 **kwargs):
        super().__init__(**params.given(locals()))

"""PBS (PBS Pro, OpenPBS, Torque): qsub, qstat, qdel.

Tested against the Torque-compatible qsub/qstat/qdel that SLURM ships (slurm-wlm-torque), not
against OpenPBS. Job arrays are not used: through those commands an array's tasks appear in qstat
under SLURM ids that cannot be mapped back to their task, so each job is submitted on its own.
"""
from .. import params
from .job import JobQueueCluster
from .status import Pending, Verdict, parse_pbs_qstat_f, parse_pbs_qsub
from .system import BatchSystem


class PBS(BatchSystem):
    name = "pbs"
    template = "pbs.sh.j2"
    submit_command, status_command, cancel_command = "qsub", "qstat", "qdel"
    supports_arrays = False
    status_ok_codes = (0, 153)      # 153: some of the ids are unknown (ended); the rest is listed

    def submit_argv(self, script, count, extra=(), log_directory=None):
        if count:
            raise ValueError("PBSCluster does not submit job arrays")
        return [self.submit_command, *extra, script]

    def parse_submit(self, stdout):
        return parse_pbs_qsub(stdout)

    def array_ids(self, base, count):
        raise ValueError("PBSCluster does not submit job arrays")

    def script_name(self, job_name):
        # The output files are NAME.oID in the submit directory: PBS names them after the job,
        # the Torque-compatible wrappers after the script file.
        return job_name

    def submit_cwd(self, log_directory):
        return log_directory

    def status_argv(self, job_ids):
        return [self.status_command, "-f", *job_ids]

    def parse_status(self, stdout):
        return {self.status_key(k): v for k, v in parse_pbs_qstat_f(stdout).items()}

    def pending(self, reason):
        # PBS Pro's comment: "Can Never Run: Insufficient amount of resource: ncpus (R: 16 ...)"
        if reason.startswith("Can Never Run"):
            return Verdict(Pending.NEVER, reason, "ask for fewer cores or less memory (cores=, "
                           "memory=, resource_spec=) or use another queue (queue=)")
        return Verdict(Pending.WAIT, reason)

    def status_key(self, job_id):
        return job_id.split(".")[0]

    def worker_id(self, job_id):
        return self.status_key(job_id)

    def log_paths(self, log_directory, job_name, job_id):
        number = self.status_key(job_id)
        return [self._join(log_directory, f"{job_name}.o{number}"),
                self._join(log_directory, f"{job_name}.e{number}")]


@params.document("pbs")
class PBSCluster(JobQueueCluster):
    """Workers in PBS jobs (PBS Pro, OpenPBS, Torque): each job runs ``processes`` workers.

    Every setting left at None comes from the ``pbs`` section of the configuration (see
    ``jobqueue config show --sources``); the defaults below are the package's. The job's output
    files go to ``log_directory`` (qsub runs there) as ``NAME.oID``. ``job_script()`` shows the
    exact script the jobs are submitted with.

    Examples
    --------
    >>> cluster = PBSCluster(cores=8, memory="32GB", queue="workq", walltime="02:00:00")
    >>> cluster.scale(jobs=4)
    >>> PBSCluster(cores=24, memory="100GB", resource_spec="select=1:ncpus=24:mem=100GB")
    """

    system = PBS()

    def __init__(self, *,
                 job_name: str | None = None,
                 cores: int | None = None,
                 memory: int | str | None = None,
                 processes: int | None = None,
                 queue: str | None = None,
                 account: str | None = None,
                 walltime: float | str | None = None,
                 resource_spec: str | None = None,
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

"""Grid Engine (SGE, Son of Grid Engine, Univa/Altair GE): qsub, qstat, qdel, qacct."""
from .. import params
from .job import JobQueueCluster
from .status import (Pending, Verdict, parse_qacct, parse_sge_errors, parse_sge_qsub,
                     parse_sge_verify, parse_sge_xml)
from .system import BatchSystem


class GridEngine(BatchSystem):
    name = "sge"
    template = "sge.sh.j2"
    submit_command, status_command, cancel_command = "qsub", "qstat", "qdel"
    supports_arrays = True

    def submit_argv(self, script, count, extra=(), log_directory=None):
        array = ["-t", f"1-{count}"] if count else []
        return [self.submit_command, "-terse", *array, *extra, script]

    def parse_submit(self, stdout):
        return parse_sge_qsub(stdout)

    def array_ids(self, base, count):
        return [f"{base}.{i}" for i in range(1, count + 1)]

    def status_argv(self, job_ids):
        # qstat cannot list chosen jobs in one table; without -u it lists the caller's jobs, and
        # the cluster picks out its own. Jobs leave this list as soon as they end.
        return [self.status_command, "-xml"]

    def parse_status(self, stdout):
        return parse_sge_xml(stdout)

    def pending(self, reason):
        if reason == "on hold":
            return Verdict(Pending.BLOCKED, "it is on hold (hqw)", "release it with qrls JOBID")
        return Verdict(Pending.WAIT, reason)

    def verify_argv(self, job_id):
        # checks the job against an empty cluster: "no suitable queues" means never
        return ["qalter", "-w", "v", self.submission_id(job_id)]

    def parse_verify(self, returncode, stdout, stderr):
        why = parse_sge_verify(returncode, stdout + stderr)
        if why is None:
            return None
        return Verdict(Pending.NEVER, why, "ask for fewer cores or less memory (cores=, memory=, "
                       "resource_spec=; --cores, --memory) or use another queue (queue=); "
                       "`qhost -F` and `qconf -sp smp` show what the hosts and the parallel "
                       "environment offer")

    def submission_id(self, job_id):
        return job_id.split(".")[0]

    def accounting_argv(self, job_id):
        return ["qacct", "-j", job_id.split(".")[0]]

    def parse_accounting(self, stdout):
        return parse_qacct(stdout)

    def explain_argv(self, job_ids):
        return ["qstat", "-j", ",".join(sorted({i.split(".")[0] for i in job_ids}))]

    def parse_explain(self, stdout):
        return parse_sge_errors(stdout)

    def log_paths(self, log_directory, job_name, job_id):
        # "#$ -o DIR/" with "-j y": DIR/NAME.oID, DIR/NAME.oID.TASK for array tasks.
        return [self._join(log_directory, f"{job_name}.o{job_id}")]


@params.document("sge")
class SGECluster(JobQueueCluster):
    """Workers in Grid Engine jobs (SGE, Son of Grid Engine, Altair GE).

    Every setting left at None comes from the ``sge`` section of the configuration (see
    ``jobqueue config show --sources``); the defaults below are the package's. ``account`` is
    the project (``-P``). Jobs with more than one core ask for the parallel environment
    ``smp`` (``-pe smp CORES``); where a site names it differently, set
    ``job_directives_skip=["-pe smp"]`` and ``job_extra_directives=["-pe threaded 8"]``.

    Examples
    --------
    >>> cluster = SGECluster(cores=8, memory="32GB", queue="all.q", walltime="01:00:00")
    >>> cluster.scale(jobs=4)
    >>> SGECluster(cores=1, memory="4GB", resource_spec="h_vmem=4G,mem_free=4G")
    """

    system = GridEngine()

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

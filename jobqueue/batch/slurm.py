"""SLURM: sbatch, squeue, scancel."""
from __future__ import annotations

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


class SLURMCluster(JobQueueCluster):
    """Workers in SLURM jobs: ``SLURMCluster(cores=8, memory="32GB", queue="normal")``.

    Settings (arguments or the ``slurm:`` config section) are those of
    :class:`~jobqueue.batch.job.JobQueueCluster`, plus ``job_cpu`` (``--cpus-per-task``, default:
    cores) and ``job_mem`` (``--mem``, default: memory).
    """

    system = Slurm()

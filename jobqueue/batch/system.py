"""What a batch-system adapter says: argv to build, output to parse. Pure: nothing is run here.

An adapter (:class:`BatchSystem` subclass in slurm.py, pbs.py, sge.py) is a text transformer. The
cluster (job.py) renders the template, runs the argv an adapter builds through its one command
runner, and hands the output back to the adapter's parsers.
"""
from __future__ import annotations

import os

from .status import Pending, Verdict


class BatchSystem:
    name = ""                    # config section and template name
    template = ""                # packaged template, in jobqueue/templates/
    submit_command = ""
    status_command = ""
    cancel_command = ""
    supports_arrays = False      # identical jobs can go as ONE array submission
    status_ok_codes = (0,)       # exit codes of the status command whose output is still valid
    not_found_words = ("does not exist", "Unknown Job Id", "Invalid job id")

    # -- submit ---------------------------------------------------------------------------------

    def submit_argv(self, script: str, count: int | None, extra=(), log_directory=None) -> list:
        """argv that submits script once (count None) or as an array of count tasks (whose
        output files go to log_directory, named after each task's id, where that needs an
        option of the submit command)."""
        raise NotImplementedError

    def parse_submit(self, stdout: str) -> str:
        """The job id (for an array: the array's id) from the submit command's output."""
        raise NotImplementedError

    def array_ids(self, base: str, count: int) -> list:
        """Ids of the tasks of array base, as status and cancel commands name them."""
        raise NotImplementedError

    def script_name(self, job_name: str) -> str:
        """File name of the submitted script (some systems name the output file after it)."""
        return f"{job_name}.sh"

    def submit_cwd(self, log_directory: str):
        """Directory to run the submit command in (None: the current one)."""
        return None

    # -- status ---------------------------------------------------------------------------------

    def status_argv(self, job_ids) -> list:
        """ONE command that reports on all of job_ids."""
        raise NotImplementedError

    def status_ok(self, returncode: int, stderr: str) -> bool:
        return returncode in self.status_ok_codes

    def parse_status(self, stdout: str) -> dict:
        """``{job id: JobStatus}``; jobs the output does not mention are simply absent."""
        raise NotImplementedError

    def status_key(self, job_id: str) -> str:
        """The form of an id that the status output uses (PBS drops ``.server``)."""
        return job_id

    def accounting_argv(self, job_id: str):
        """argv asking about a job that left the queue (None: the system keeps finished jobs in
        its status output for a while, so there is nothing more to ask)."""
        return None

    def parse_accounting(self, stdout: str) -> dict:
        return {}

    def accounting_unavailable(self, returncode: int, stderr: str) -> str | None:
        """Why the accounting command cannot answer (e.g. accounting is disabled), or None:
        its jobs are then reported as having left the queue at once, with that reason."""
        return None

    def explain_argv(self, job_ids):
        """argv asking why jobs are stuck in an error state (None: nothing to ask)."""
        return None

    def parse_explain(self, stdout: str) -> dict:
        """``{job id: why}`` from the output of explain_argv."""
        return {}

    def pending(self, reason: str) -> Verdict:
        """What a pending job's reason means (see :class:`~jobqueue.batch.status.Pending`)."""
        return Verdict(Pending.WAIT, reason)

    def verify_argv(self, job_id: str):
        """argv asking whether a pending job could ever run as submitted (None: nothing to ask,
        the reason says it). One command per submission: ``job_id`` is the job's or array's."""
        return None

    def parse_verify(self, returncode: int, stdout: str, stderr: str):
        """A NEVER :class:`~jobqueue.batch.status.Verdict` for the job verify_argv asked about,
        or None if it can run."""
        return None

    def submission_id(self, job_id: str) -> str:
        """The id of the submission a job or array task came from (43 for 43_2, 9 for 9.3)."""
        return job_id

    # -- cancel ---------------------------------------------------------------------------------

    def cancel_argv(self, job_ids, extra=()) -> list:
        return [self.cancel_command, *extra, *job_ids]

    def cancel_ok(self, returncode: int, stdout: str, stderr: str) -> bool:
        """A failed cancel is fine when it only failed for jobs that had already ended."""
        if returncode == 0:
            return True
        lines = [line for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
        complaints = [line for line in lines if "deleted" not in line and "registered" not in line]
        return all(any(w.lower() in line.lower() for w in self.not_found_words)
                   for line in complaints)

    # -- names ----------------------------------------------------------------------------------

    def worker_id(self, job_id: str) -> str:
        """What the job script puts in JOBQUEUE_JOB_ID, and so in the worker names."""
        return job_id

    def log_paths(self, log_directory: str, job_name: str, job_id: str) -> list:
        """The job's output files (they may not exist yet), named after the id that the status
        command shows (``43_2``, ``9.3``)."""
        raise NotImplementedError

    @staticmethod
    def _join(directory, name) -> str:
        return os.path.join(directory, name)

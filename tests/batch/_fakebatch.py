"""Batch systems in memory, for unit tests of the cluster's job-state tracking.

A cluster runs every batch command through ``cluster.runner``; the fakes here take its place
(as submitit's tests replace ``subprocess`` with ``MockedSubprocess``) and answer sbatch/squeue/
scancel or qsub/qstat/qacct/qdel/qalter from a queue kept in a dict. Tests move jobs between
states, purge them from the queue, write accounting records late and make commands fail, then
call one poll (``cluster._sync(cluster._poll_step())``) and look at what the cluster concluded:
no daemon, no waiting, no clock (``cluster._clock`` is the test's).

Only the job tracking is fake: the cluster, its scheduler and any worker a test connects are
real. The output formats are those measured on the real systems (see /work/shared/notes and
tests/batch/test_status.py); the real-system tests check the same code against the daemons.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass

from jobqueue.batch.runner import BatchCommandError, CommandResult


@dataclass
class Entry:
    state: str                   # the system's own code: PENDING, RUNNING, qw, r, Eqw, ...
    reason: str = ""
    error: str = ""              # Grid Engine: why it is in Eqw (qstat -j)
    never: str = ""              # Grid Engine: why it can never run (qalter -w v)


class FakeBatch:
    """The part every fake shares: a CommandRunner's interface, the queue, scripted failures."""

    def __init__(self, first_id: int = 40):
        self.timeout = 60.0
        self.history: collections.deque = collections.deque(maxlen=1000)
        self.calls: collections.Counter = collections.Counter()
        self.queue: dict[str, Entry] = {}       # job id -> entry, as the status command lists
        self.next_id = first_id
        self.scripts: list[str] = []            # text of every submitted script
        self._failures: dict[str, list] = collections.defaultdict(list)

    def fail(self, program: str, times: int = 1, returncode: int = 1, stderr: str = "",
             stdout: str = ""):
        """The next `times` runs of program answer this instead of looking at the queue."""
        self._failures[program] += [(returncode, stdout, stderr)] * times

    def set(self, job_id: str, state: str, reason: str = ""):
        entry = self.queue[job_id]
        entry.state, entry.reason = state, reason

    def purge(self, job_id: str):
        """The job leaves the queue (ended a while ago, or the system forgot it)."""
        del self.queue[job_id]

    async def run(self, argv, *, check=True, timeout=None, cwd=None, env=None) -> CommandResult:
        argv = tuple(str(a) for a in argv)
        self.history.append(argv)
        program = os.path.basename(argv[0])
        self.calls[program] += 1
        if self._failures[program]:
            returncode, out, err = self._failures[program].pop(0)
        else:
            handler = getattr(self, f"_{program}", None)
            if handler is None:
                raise BatchCommandError(argv, None, problem="failed: command not found")
            returncode, out, err = handler(list(argv[1:]), cwd)
        if check and returncode != 0:
            raise BatchCommandError(argv, returncode, out, err)
        return CommandResult(argv, returncode, out, err, 0.0)

    def _new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id - 1)

    def _script(self, path):
        with open(path) as f:
            self.scripts.append(f.read())


class FakeSlurm(FakeBatch):
    """sbatch --parsable [--array=0-N], squeue -h -r -t all -j IDS -o FORMAT, scancel IDS,
    sacct -n -P -X -j ID -o JobID,State,ExitCode (``accounting``: None as with
    AccountingStorageType=accounting_storage/none, else {job id: (State, ExitCode)})."""

    def __init__(self, first_id: int = 40):
        super().__init__(first_id)
        self.accounting: dict[str, tuple] | None = None

    def end(self, job_id: str, state: str = "COMPLETED", exit_code: str = "0:0",
            account=True):
        """The job leaves squeue (MinJobAge after it ended); sacct knows how it ended
        (unless account is False: slurmdbd has not got the record yet)."""
        del self.queue[job_id]
        if account:
            self.account(job_id, state, exit_code)

    def account(self, job_id: str, state: str = "COMPLETED", exit_code: str = "0:0"):
        if self.accounting is None:
            self.accounting = {}
        self.accounting[job_id] = (state, exit_code)

    def _sacct(self, args, cwd):
        if self.accounting is None:
            return 1, "", "sacct: error: Slurm accounting storage is disabled\n"
        base = args[args.index("-j") + 1]
        lines = [f"{job_id}|{state}|{code}" for job_id, (state, code) in self.accounting.items()
                 if job_id.split("_")[0] == base]
        return 0, "".join(line + "\n" for line in lines), ""

    def _sbatch(self, args, cwd):
        self._script(args[-1])
        base = self._new_id()
        array = [a.split("=", 1)[1] for a in args if a.startswith("--array=")]
        if array:
            last = int(array[0].split("-")[1])
            for i in range(last + 1):
                self.queue[f"{base}_{i}"] = Entry("PENDING", "None")
            self.next_id += last + 1           # SLURM gives each task an id of its own too
        else:
            self.queue[base] = Entry("PENDING", "None")
        return 0, f"{base}\n", ""

    def _squeue(self, args, cwd):
        bases = set(args[args.index("-j") + 1].split(","))
        lines = []
        for job_id, e in self.queue.items():
            base, _, task = job_id.partition("_")
            if base in bases:
                lines.append(f"{job_id}|{base}|{task or 'N/A'}|{e.state}|"
                             f"{e.reason or 'None'}")
        if not lines:
            return 1, "", "slurm_load_jobs error: Invalid job id specified\n"
        return 0, "\n".join(lines) + "\n", ""

    def _scancel(self, args, cwd):
        for job_id in args:
            for key, e in self.queue.items():
                if (key == job_id or key.split("_")[0] == job_id) and e.state in (
                        "PENDING", "RUNNING"):
                    e.state, e.reason = "CANCELLED", "None"
        return 0, "", ""                   # as the real scancel, even for unknown ids


class FakeGridEngine(FakeBatch):
    """qsub -terse [-t 1-N], qstat -xml, qstat -j IDS, qacct -j ID, qdel IDS, qalter -w v ID."""

    def __init__(self, first_id: int = 40):
        super().__init__(first_id)
        self.accounting: dict[str, dict] = {}   # job id -> qacct fields (failed, exit_status)

    def end(self, job_id: str, failed: str = "0", exit_status: str = "0", account=True):
        """The job leaves qstat's list; qacct knows how it ended (unless account is False:
        the record is written late)."""
        del self.queue[job_id]
        if account:
            self.account(job_id, failed, exit_status)

    def account(self, job_id: str, failed: str = "0", exit_status: str = "0"):
        self.accounting[job_id] = {"failed": failed, "exit_status": exit_status}

    def _qsub(self, args, cwd):
        self._script(args[-1])
        base = self._new_id()
        if "-t" in args:
            last = int(args[args.index("-t") + 1].split("-")[1])
            for i in range(1, last + 1):
                self.queue[f"{base}.{i}"] = Entry("qw")
            return 0, f"{base}.1-{last}:1\n", ""
        self.queue[base] = Entry("qw")
        return 0, f"{base}\n", ""

    def _qstat(self, args, cwd):
        if "-j" in args:
            return self._qstat_j(args[args.index("-j") + 1].split(","))
        rows = []
        for job_id, e in self.queue.items():
            number, _, task = job_id.partition(".")
            where = "running" if "r" in e.state else "pending"
            rows.append(f"<job_list state='{where}'><JB_job_number>{number}</JB_job_number>"
                        f"<JB_name>jobqueue-wo</JB_name><state>{e.state}</state>"
                        + (f"<tasks>{task}</tasks>" if task else "") + "</job_list>")
        return 0, ("<?xml version='1.0'?>\n<job_info><queue_info></queue_info><job_info>"
                   + "".join(rows) + "</job_info></job_info>\n"), ""

    def _qstat_j(self, numbers):
        blocks = []
        for number in numbers:
            lines = [f"job_number:                 {number}"]
            for job_id, e in self.queue.items():
                if job_id.split(".")[0] == number and e.error:
                    task = job_id.partition(".")[2] or "1"
                    lines.append(f"error reason    {task}:          12/01/2026 10:00:00 "
                                 f"[0:123]: {e.error}")
            blocks.append("\n".join(lines))
        return 0, ("=" * 62 + "\n").join(blocks) + "\n", ""

    def _qacct(self, args, cwd):
        number = args[args.index("-j") + 1]
        blocks = []
        for job_id, record in self.accounting.items():
            if job_id.split(".")[0] == number:
                task = job_id.partition(".")[2] or "undefined"
                blocks.append(f"jobnumber    {number}\ntaskid       {task}\n"
                              f"failed       {record['failed']}\n"
                              f"exit_status  {record['exit_status']}\n")
        if not blocks:
            return 1, "", f"error: job id {number} not found\n"
        return 0, "".join("=" * 62 + "\n" + b for b in blocks), ""

    def _qdel(self, args, cwd):
        out, rc = [], 0
        for job_id in args:
            keys = [k for k in self.queue if k == job_id or k.split(".")[0] == job_id]
            if not keys:
                out.append(f'denied: job "{job_id}" does not exist')
                rc = 1
            for key in keys:
                running = "r" in self.queue.pop(key).state
                if running:
                    self.account(key, "100 : assumedly after job", "137")
                out.append(f"root has deleted job {key}")
        return rc, "\n".join(out) + "\n", ""

    def _qalter(self, args, cwd):
        number = args[-1]
        keys = [k for k in self.queue if k.split(".")[0] == number]
        if not keys:
            return 1, "", f'denied: job "{number}" does not exist\n'
        never = self.queue[keys[0]].never
        if never:
            return 1, f"Job {number} {never}\nverification: no suitable queues\n", ""
        return 0, "verification: found possible assignment with 1 slots\n", ""

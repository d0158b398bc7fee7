"""Job states, and the pure functions that read batch-system output into them.

One vocabulary (:class:`JobState`) for every batch system, with one translation table per system.
Every parser takes the text a command printed and returns ``{job id: JobStatus}``; none runs a
command. A native state code that no table knows becomes ``UNKNOWN`` with the code in the reason,
never an exception: a site with a patched scheduler must not crash a cluster.

Job ids are strings as the user would type them to cancel one job: ``"43"`` or ``"43_2"`` (SLURM
array task), ``"9"`` or ``"9.3"`` (Grid Engine array task), ``"16"`` or ``"16.server"`` (PBS).
"""
from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    UNKNOWN = "unknown"

    def __str__(self):
        return self.value

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT})


@dataclass(frozen=True)
class JobStatus:
    """What the batch system says about one job.

    ``native`` is the system's own code (``PENDING``, ``Eqw``, ``C``); ``reason`` is its explanation
    (``Resources``, ``exit status 127``) or ``""``; ``cancel`` asks the cluster to remove a job
    that has failed but stays in the queue (Grid Engine's ``Eqw``).
    """

    state: JobState
    reason: str = ""
    native: str = ""
    cancel: bool = False


class Pending(str, enum.Enum):
    """What a pending job's reason means for whoever waits for it."""
    WAIT = "wait"          # it starts when its turn comes (Priority, Resources): say nothing
    BLOCKED = "blocked"    # it waits for something that may not come by itself: say so, once
    NEVER = "never"        # it can never start as submitted: say so, cancel it, stop waiting


@dataclass(frozen=True)
class Verdict:
    """Why a job pends, for people: ``kind``, ``why`` (the batch system's reason, explained)
    and ``remedy`` (what to change)."""

    kind: Pending
    why: str
    remedy: str = ""


def expand_ranges(text: str) -> list:
    """'1-4:1,7,9-12:2' -> [1, 2, 3, 4, 7, 9, 11]; SLURM's '4-9%4' (a throttle) -> [4..9]."""
    out = []
    for part in text.split("%")[0].split(","):
        part = part.strip()
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part)
        if match is None:
            raise ValueError(f"cannot read {part!r} as a task range")
        first, last, step = match.groups()
        out.extend(range(int(first), int(last or first) + 1, int(step or 1)))
    return out

# ---------------------------------------------------------------------------------------- SLURM


_SLURM = {
    "PENDING": JobState.PENDING, "REQUEUED": JobState.PENDING, "REQUEUE_HOLD": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "SUSPENDED": JobState.PENDING, "STOPPED": JobState.PENDING,
    "CONFIGURING": JobState.RUNNING, "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING, "SIGNALING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "COMPLETED": JobState.FINISHED,
    "FAILED": JobState.FAILED, "NODE_FAIL": JobState.FAILED, "BOOT_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED, "DEADLINE": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED, "PREEMPTED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
}
# States whose name says more than squeue's reason column (which is often "None" for them).
_SLURM_REASON = {"NODE_FAIL": "node failure", "BOOT_FAIL": "node boot failure",
                 "OUT_OF_MEMORY": "out of memory", "PREEMPTED": "preempted",
                 "DEADLINE": "deadline reached", "SUSPENDED": "suspended", "STOPPED": "stopped",
                 "REQUEUED": "requeued", "COMPLETING": "completing",
                 "TIMEOUT": "time limit reached"}

SQUEUE_FORMAT = "%i|%F|%K|%T|%r"
"""Columns of ``squeue -o``: id, array job id, array task id(s), state, reason."""


def parse_squeue(text: str) -> dict:
    """Lines of ``squeue -h -r -t all -o '%i|%F|%K|%T|%r'``.

    A plain job has task ``N/A`` and the id ``43``; an array task has the id ``43_2``. Pending
    tasks printed as one line (``43_[4-9%4]``, without ``-r``) are expanded to one entry each.
    """
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.strip().split("|")
        if len(fields) < 5:
            continue
        _, array_id, task, native = fields[:4]
        reason = "|".join(fields[4:]).strip()
        state = _SLURM.get(native.upper(), JobState.UNKNOWN)
        if reason in ("None", "(null)"):
            reason = ""
        extra = _SLURM_REASON.get(native.upper())
        if state is JobState.UNKNOWN:
            reason = f"unknown SLURM state {native}" + (f" ({reason})" if reason else "")
        elif extra and extra.lower() not in reason.lower():
            reason = f"{extra}, {reason}" if reason else extra
        if task in ("N/A", "", "4294967294"):
            out[array_id] = JobStatus(state, reason, native)
            continue
        for index in expand_ranges(task.strip("[]")):
            out[f"{array_id}_{index}"] = JobStatus(state, reason, native)
    return out


_SHAPE = ("ask for fewer cores or less memory (cores=, memory=, job_cpu=, job_mem=; "
          "--cores, --memory) or use another partition (queue=, --queue)")
_WALLTIME = "ask for a shorter walltime (walltime=, --walltime) or use another partition (queue=)"
# SLURM's pending reasons (squeue %r, the word before any comma): what each means, what to do.
_SLURM_PENDING = {
    "PartitionConfig": (Pending.NEVER, "no node of the partition has what it asks for (cores, "
                        "memory, GPUs or features)", _SHAPE + "; `sinfo -N -o '%P %N %c %m %G "
                        "%f'` shows what each node has"),
    "PartitionNodeLimit": (Pending.NEVER, "it asks for more nodes than the partition allows",
                           "check -N/--nodes in job_extra_directives, or use another partition "
                           "(queue=)"),
    "PartitionTimeLimit": (Pending.NEVER, "its walltime is longer than the partition allows",
                           _WALLTIME + "; `sinfo -o '%P %l'` shows each partition's limit"),
    "InvalidAccount": (Pending.NEVER, "the account is not valid for it",
                       "give an account you may use (account=, --account); `sacctmgr show "
                       "assoc user=$USER` lists them"),
    "InvalidQOS": (Pending.NEVER, "the QOS is not valid for it",
                   "give a QOS you may use (--qos in job_extra_directives)"),
    "DependencyNeverSatisfied": (Pending.NEVER, "the job it depends on ended in a way that "
                                 "can never satisfy the dependency",
                                 "remove or fix the --dependency in job_extra_directives"),
    "BadConstraints": (Pending.NEVER, "no node has the features it asks for",
                       "fix --constraint in job_extra_directives; `sinfo -o '%N %f'` lists "
                       "the features"),
    "ReqNodeNotAvail": (Pending.BLOCKED, "a node it needs is down, drained or reserved (e.g. "
                        "for maintenance)", "it starts when such a node returns; `sinfo -R` "
                        "says why nodes are unavailable"),
    "NodeDown": (Pending.BLOCKED, "a node it needs is down", "it starts when the node returns; "
                 "`sinfo -R` says why"),
    "PartitionDown": (Pending.BLOCKED, "the partition is down", "it starts when the partition "
                      "is up again, or use another partition (queue=)"),
    "PartitionInactive": (Pending.BLOCKED, "the partition is inactive", "use another "
                          "partition (queue=)"),
    "JobHeldUser": (Pending.BLOCKED, "it is held", "release it with scontrol release JOBID"),
    "JobHeldAdmin": (Pending.BLOCKED, "an administrator holds it", "ask your administrators"),
    "FrontEndDown": (Pending.BLOCKED, "no front-end node is available", "ask your "
                     "administrators"),
}


def slurm_pending(reason: str) -> Verdict:
    """What a SLURM pending reason (``PartitionConfig``, ``ReqNodeNotAvail, UnavailableNodes:n1``,
    ``AssocGrpCpuLimit``) means. Limits per job of an account or QOS (``AssocMax...PerJob...``,
    ``QOSMax...PerJob...``, ``QOSMin...``) can never be met; group limits (``AssocGrp...``,
    ``QOSGrp...``) wait for the group's other jobs to end, which may never be enough."""
    code = re.split(r"[,\s(]", reason.strip(), maxsplit=1)[0]
    if code in _SLURM_PENDING:
        kind, why, remedy = _SLURM_PENDING[code]
        return Verdict(kind, f"{reason} ({why})", remedy)
    scope = "QOS" if code.startswith("QOS") else "account"
    limits = f"`sacctmgr show {'qos' if scope == 'QOS' else 'assoc user=$USER'}` shows them"
    if re.fullmatch(r"(Assoc|QOS)Max\w*Per(Job|Node)\w*|QOSMin\w*", code):
        wall = "WallDuration" in code
        return Verdict(Pending.NEVER, f"{reason} (it asks for more than its {scope} allows "
                       f"one job{', or less than it requires' if 'Min' in code else ''})",
                       f"{_WALLTIME if wall else _SHAPE}; {limits}")
    if re.fullmatch(r"(Assoc|QOS)Grp\w*", code):
        return Verdict(Pending.BLOCKED, f"{reason} (the running jobs of its {scope} use up a "
                       "limit they share)", f"it starts when they end, unless it alone asks "
                       f"for more than the limit; {limits}")
    return Verdict(Pending.WAIT, reason)


SACCT_FORMAT = "JobID,State,ExitCode"
"""Columns of ``sacct -n -P -X -o``: id (43, 43_2), state (``CANCELLED by 1000``), exit code
(``exit status:signal``)."""


def _sacct_status(state_text: str, exit_code: str) -> JobStatus:
    words = state_text.split()
    native = words[0].upper() if words else ""
    state = _SLURM.get(native, JobState.UNKNOWN)
    status, _, signal = exit_code.partition(":")
    ended = [f"exit code {status or '?'}"] + ([f"signal {signal}"] if signal not in ("", "0")
                                               else [])
    if state is JobState.UNKNOWN:
        reason = f"unknown SLURM state {state_text}"
    elif native == "CANCELLED" and len(words) == 3 and words[1] == "by":
        reason = f"cancelled by uid {words[2]}"
    else:
        reason = _SLURM_REASON.get(native, "")
    if state.terminal:
        reason = ", ".join([reason] + ended if reason else ended)
    return JobStatus(state, f"{reason} (sacct)" if reason else "(sacct)", native)


def parse_sacct(text: str) -> dict:
    """Lines of ``sacct -n -P -X -o JobID,State,ExitCode``: ``{job id: JobStatus}`` with the
    job's end state and its exit code (``FAILED``, ``exit code 3``; ``TIMEOUT``, ``time limit
    reached, exit code 0, signal 15``). Array tasks are ``43_2``; pending ones listed as a
    range (``43_[4-9]``) are expanded."""
    out = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or not fields[0]:
            continue
        job_id, state_text, exit_code = (f.strip() for f in fields[:3])
        status = _sacct_status(state_text, exit_code)
        base, _, task = job_id.partition("_")
        if task.startswith("["):
            for index in expand_ranges(task.strip("[]")):
                out[f"{base}_{index}"] = status
        else:
            out[job_id] = status
    return out


def sacct_unavailable(returncode: int, stderr: str) -> str | None:
    """Why sacct can never say how jobs ended (accounting storage is disabled: rc 1, "Slurm
    accounting storage is disabled"), or None (its output is the answer, or it may be later:
    slurmdbd may be restarting)."""
    if returncode != 0 and "accounting storage is disabled" in " ".join(stderr.split()).lower():
        return "SLURM accounting storage is disabled, so sacct cannot say how it ended"
    return None


def parse_sbatch(text: str) -> str:
    """``sbatch --parsable`` prints ``43`` or ``43;cluster``."""
    first = text.strip().splitlines()[-1] if text.strip() else ""
    match = re.fullmatch(r"(\d+)(?:;\S+)?", first.strip())
    if match is None:
        raise ValueError(f"expected a job id from sbatch --parsable, got {text.strip()!r}")
    return match.group(1)

# -------------------------------------------------------------------------------- Grid Engine


def _sge_state(code: str) -> tuple:
    """(JobState, reason, cancel) of an SGE state code such as qw, hqw, r, t, dr, Eqw, s."""
    if "E" in code:
        return JobState.FAILED, "error state (qstat -j shows the reason)", True
    if "d" in code:
        return JobState.CANCELLED, "being deleted", False
    if any(c in code for c in "sST"):
        return JobState.PENDING, "suspended", False
    if "r" in code or "t" in code:
        return JobState.RUNNING, ("restarted" if "R" in code else ""), False
    if "h" in code:
        return JobState.PENDING, "on hold", False
    if "qw" in code:
        return JobState.PENDING, "queued", False
    return JobState.UNKNOWN, f"unknown Grid Engine state {code!r}", False


def parse_sge_xml(text: str) -> dict:
    """``qstat -xml``: running tasks in ``<queue_info>``, pending ones in ``<job_info>``; an array's
    pending tasks come as one entry with ``<tasks>3-12:1</tasks>`` (or ``10,12``)."""
    if not text.strip():
        return {}
    root = ElementTree.fromstring(text.strip())
    out = {}
    for job in root.iter("job_list"):
        number = (job.findtext("JB_job_number") or "").strip()
        code = (job.findtext("state") or "").strip()
        if not number:
            continue
        state, reason, cancel = _sge_state(code)
        tasks = (job.findtext("tasks") or "").strip()
        status = JobStatus(state, reason, code, cancel=cancel)
        if not tasks:
            out[number] = status
        else:
            for index in expand_ranges(tasks):
                out[f"{number}.{index}"] = status
    return out


def parse_sge_qsub(text: str) -> str:
    """``qsub -terse`` prints ``12``, or ``28.1-4:1`` for an array; the id is before the dot."""
    match = re.search(r"^\s*(\d+)(?:\.\S*)?\s*$", text, re.M)
    if match is None:
        raise ValueError(f"expected a job id from qsub -terse, got {text.strip()!r}")
    return match.group(1)


def parse_sge_verify(returncode: int, text: str) -> str | None:
    """``qalter -w v ID`` checks a pending job against an empty cluster: None if it could run
    (``verification: found possible assignment``), else why it never can (``cannot run in PE
    "smp" because it only offers 8 slots``)."""
    if "no suitable queues" not in text:
        return None
    why = [re.sub(r"^Job \d+\s*", "", line.strip()) for line in text.splitlines()
           if line.startswith("Job ")]
    return "; ".join(why) or "no queue can run it (qalter -w v: no suitable queues)"


def _sge_accounting_status(record: dict) -> JobStatus:
    failed = record.get("failed", "0").strip()
    exit_status = record.get("exit_status", "0").split()[0] if record.get("exit_status") else "0"
    code, _, why = failed.partition(":")
    code, why = code.strip(), why.strip()
    if code in ("", "0"):
        if exit_status == "0":
            return JobStatus(JobState.FINISHED, "exit status 0", "qacct")
        return JobStatus(JobState.FAILED, f"exit status {exit_status}", "qacct")
    if code == "37" or "h_rt" in why:
        return JobStatus(JobState.TIMEOUT, f"failed {code}: {why}", "qacct")
    if code == "100" and exit_status in ("137", "143"):
        return JobStatus(JobState.CANCELLED, f"killed (exit status {exit_status}, failed {code}: "
                         f"{why})", "qacct")
    return JobStatus(JobState.FAILED, f"failed {code}: {why}, exit status {exit_status}", "qacct")


def parse_qacct(text: str) -> dict:
    """``qacct -j ID``: one block per job or array task, separated by lines of ``=``."""
    out = {}
    for block in re.split(r"^=+\s*$", text, flags=re.M):
        record = {}
        for line in block.splitlines():
            key, _, value = line.strip().partition(" ")
            if key:
                record[key] = value.strip()
        number = record.get("jobnumber")
        if not number:
            continue
        task = record.get("taskid", "undefined")
        key = number if task in ("undefined", "") else f"{number}.{task}"
        out[key] = _sge_accounting_status(record)
    return out

def parse_sge_errors(text: str) -> dict:
    """``qstat -j ID,...``: ``{job id: error text}`` from its ``error reason`` lines (why a job
    is in the error state Eqw), under the task's id (9.3) and the job's (9)."""
    out, number = {}, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "job_number":
            number = value.strip()
        elif key.strip().startswith("error reason") and number:
            # "error reason    1:      11/27/2026 08:00:07 [0:25704]: error: can't open ..."
            # where 1 is the task (1 for a job that is not an array)
            task = key.split()[-1]
            reason = re.sub(r"^\s*\S+ \S+ \[[^]]*\]:\s*", "", value).strip()
            out[f"{number}.{task}"] = reason
            out.setdefault(number, reason)
    return out

# ---------------------------------------------------------------------------------------- PBS


_PBS = {
    "Q": (JobState.PENDING, "queued"), "H": (JobState.PENDING, "held"),
    "W": (JobState.PENDING, "waiting for its start time"), "T": (JobState.PENDING, "being moved"),
    "S": (JobState.PENDING, "suspended"), "U": (JobState.PENDING, "suspended (workstation busy)"),
    "R": (JobState.RUNNING, ""), "E": (JobState.RUNNING, "exiting"), "B": (JobState.RUNNING, ""),
    "C": (JobState.FINISHED, "completed"), "F": (JobState.FINISHED, "finished"),
    "X": (JobState.FINISHED, "finished"),
}


def _pbs_status(native: str, fields: dict) -> JobStatus:
    state, reason = _PBS.get(native, (JobState.UNKNOWN, f"unknown PBS state {native!r}"))
    comment = fields.get("comment", "")
    exit_status = fields.get("exit_status") or fields.get("Exit_status")
    if state is JobState.FINISHED:
        if exit_status is None:
            reason = "completed; qstat shows no exit status"
        elif exit_status.strip() == "0":
            reason = "exit status 0"
        elif exit_status.strip() in ("-11", "271"):
            state, reason = JobState.TIMEOUT, f"exit status {exit_status.strip()}"
        else:
            state, reason = JobState.FAILED, f"exit status {exit_status.strip()}"
    elif comment and state is JobState.PENDING:
        reason = comment
    return JobStatus(state, reason, native)


def parse_pbs_qstat_f(text: str) -> dict:
    """``qstat -f ID...``: blocks starting ``Job Id: 16`` with ``key = value`` lines (indented by
    tabs or spaces; long values continue on further indented lines)."""
    out, current, fields, last = {}, None, {}, None
    for line in text.splitlines() + ["Job Id: "]:
        match = re.match(r"^Job Id:\s*(\S*)", line)
        if match:
            if current:
                out[current] = _pbs_status(fields.get("job_state", "").strip(), fields)
            current, fields, last = match.group(1), {}, None
            continue
        key, sep, value = line.strip().partition(" = ")
        if sep and re.fullmatch(r"[A-Za-z_][\w.]*", key):
            fields[key], last = value.strip(), key
        elif last and line[:1] in ("\t", " ") and line.strip():
            fields[last] += line.strip()
    return out


def parse_pbs_qstat(text: str) -> dict:
    """The default Torque table (``Job id  Name  Username  Time Use S Queue``)."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or not re.match(r"^\d", fields[0]):
            continue
        out[fields[0]] = _pbs_status(fields[-2], {})
    return out


def parse_pbs_qsub(text: str) -> str:
    """``qsub`` prints ``52`` (the Torque-compatible wrappers) or ``52.server`` (PBS, Torque)."""
    for line in reversed(text.strip().splitlines()):
        match = re.fullmatch(r"\s*(\d+(?:\[\d*\])?(?:\.\S+)?)\s*", line)
        if match:
            return match.group(1)
    raise ValueError(f"expected a job id from qsub, got {text.strip()!r}")

"""Job scripts: checking the settings, the template context, rendering. Pure: no commands run here.

Templates are jinja2 files (``jobqueue/templates/<system>.sh.j2``, or the file the config key
``template`` names) rendered with ``StrictUndefined`` (a misspelt variable is an error, not an
empty string) and two filters:

``q``
    shell-quotes a value (``shlex.quote``). Every value a user gives goes through it.
``skip(words)``
    drops the lines of a block that contain any of ``words`` (the ``job-directives-skip`` setting).

The variables a template sees are listed in :data:`CONTEXT_DOC`.
"""
from __future__ import annotations

import math
import os
import re
import shlex
import sys
from pathlib import Path

from .. import node, templating

CONTEXT_DOC = """\
shebang               first line, e.g. #!/usr/bin/env bash
job_name              the job name (-J, -N), checked: letters, digits, _ . - only
queue, account        partition/queue and account/project, or None
cores, memory         per job (memory in bytes)
memory_mb             memory in MiB, rounded up (for --mem=, mem=)
memory_per_core_mb    memory / cores in MiB, rounded up (SGE counts consumables per slot)
processes, threads    worker processes per job and threads per process (cores = processes * threads)
worker_memory         memory limit per worker process, in bytes
walltime              HH:MM:SS, or None
job_cpu, job_mem_mb   SLURM: --cpus-per-task and --mem (MiB)
resource_spec         PBS/SGE: the -l resource list, or None
job_extra_directives  list of extra directive lines (without the #SBATCH / #PBS / #$ prefix)
job_directives_skip   list of words: generated directive lines containing one are dropped
job_script_prologue   list of shell lines run before the worker starts
log_directory         absolute directory for the job's output file
local_directory       scratch directory on the compute node, or None
token_file            file holding the cluster's token (mode 0600, read by the job)
environment           {NAME: value} the worker needs exported (TLS certificate paths; never a secret)
scheduler_address     tcp://host:port the workers connect to
python                interpreter that runs the worker
death_timeout         seconds a worker waits for an unreachable scheduler before exiting
lifetime              seconds before a worker retires itself (walltime less a margin), or None
lifetime_stagger      seconds of random spread on lifetime
interface             network interface the workers listen on, or None
worker_extra_args     list of extra arguments to `jobqueue worker`
worker_command        the whole worker command line, quoted, from node.WorkerCommand (with the
                      cluster's worker_command module, if any, and worker_extra_args):
                      `exec {{ worker_command }}` starts the workers
"""

_JOB_NAME = r"[A-Za-z_][A-Za-z0-9_.-]{0,63}"
_TEXT_KEYS = ("queue", "account", "resource_spec", "python", "shebang", "log_directory",
              "local_directory", "interface", "template", "job_name", "worker_command")
# Values that go into #SBATCH / #PBS / #$ lines: the batch systems split those lines themselves and
# read '...' quoting, but not the shell's '"'"' trick, so a quote character cannot be expressed.
_DIRECTIVE_KEYS = ("queue", "account", "resource_spec", "log_directory")
_LIST_KEYS = ("job_extra_directives", "job_directives_skip", "job_script_prologue",
              "worker_extra_args", "submit_command_extra", "cancel_command_extra")


class JobScriptError(ValueError):
    """A job-script template could not be rendered; says which file and line."""


# ------------------------------------------------------------------------------------ settings

def split_cores(cores: int, processes: int | None) -> tuple:
    """(processes, threads per process), as dask-jobqueue splits them. Without ``processes``:
    one process per core up to 4 cores, then the smallest divisor of ``cores`` at least its
    square root, so 4 cores -> 4 x 1 thread, 6 -> 3 x 2, 8 -> 4 x 2, 12 -> 4 x 3, 7 -> 7 x 1."""
    if processes is None:
        if cores <= 4:
            processes = cores
        else:
            processes = min(d for d in range(1, cores + 1)
                            if cores % d == 0 and d >= math.sqrt(cores))
    return processes, max(1, cores // processes)


# Worker options the cluster sets itself: it names each worker after its job, which is how it
# knows which job a worker belongs to.
_OWN_WORKER_OPTIONS = {"name": "the cluster names each worker after its job (JOB_NAME-JOBID-N) to "
                               "know which job it belongs to; set job_name instead"}


def split_job(settings: dict) -> tuple:
    """(processes, threads per process) of one job: :func:`split_cores`, unless the settings'
    worker_extra_args give ``--nworkers``/``--nprocs`` or ``--nthreads`` (as a dask-jobqueue
    user may), which win and are what the cluster counts on."""
    from ..node import parse_worker_options

    options = parse_worker_options(settings.get("worker_extra_args") or ())
    processes = options.get("nworkers") or settings.get("processes")
    processes, threads = split_cores(settings["cores"], processes)
    nthreads = options.get("nthreads")
    return processes, (threads if nthreads in (None, "auto") else nthreads)


def settings(section: str, arguments: dict, profile: str | None = None) -> dict:
    """The checked settings of a cluster: config section < profile < arguments.

    ``project`` is another name for ``account``; given both, account wins, with a warning, as in
    dask-jobqueue. dask-jobqueue's old names (``job_extra``...) are read with a FutureWarning.
    Raises ConfigError naming, for each problem, where the value came from (argument,
    file:line, variable), the key and what is allowed.
    """
    from .. import config

    arguments = dict(arguments)
    project = arguments.pop("project", None)
    if project is not None:
        if arguments.get("account") is not None:
            config.warn_user(f"{section}: account={arguments['account']!r} and "
                             f"project={project!r} are two names for one setting: account wins; "
                             "remove project")
        else:
            arguments["account"] = project
    resolved = config.resolve(section, arguments, profile)
    problems = []
    for key, message in check(resolved):
        where = source(section, key, arguments, profile)
        prefix = "" if where == "default" else f"{where}: "
        problems.append(f"{prefix}{section}.{key.replace('_', '-')}: {message}")
    if problems:
        raise config.ConfigError(problems)
    return resolved


def source(section: str, key: str, arguments: dict, profile: str | None = None) -> str:
    """Where a setting's value came from: "argument", "profile NAME" (or the file and line
    that defines it), a config file and line, an environment variable, or "default"."""
    from .. import config

    dashed = key.replace("_", "-")
    if key == "account" and arguments.get("project") is not None:
        return "argument"
    if arguments.get(key) is not None:
        return "argument"
    for name in ([f"profiles.{profile}.{dashed}"] if profile else []) + [f"{section}.{dashed}"]:
        try:
            return config.source(name)
        except KeyError:
            continue
    return "default"


def is_job_name(name: str) -> bool:
    """Whether every batch system takes ``name`` as a job name (-J, -N)."""
    return re.fullmatch(_JOB_NAME, str(name)) is not None


def check(settings: dict) -> list:
    """Problems with resolved settings as ``(key, message)``; [] if none."""
    s, problems = settings, []

    def bad(key, message):
        problems.append((key, message))

    if s.get("cores") is None:
        bad("cores", "is required: the cores of one job, e.g. cores=8 (or cores: 8 in the config)")
    elif s["cores"] < 1:
        bad("cores", f"must be at least 1, not {s['cores']}")
    if s.get("memory") is None:
        bad("memory", "is required: the memory of one job, e.g. memory='32GB'")
    elif s["memory"] < 2 ** 20:
        bad("memory", f"{s['memory']} bytes is too little for a job; give e.g. '4GB'")
    processes = s.get("processes")
    if processes is not None and (processes < 1 or (s.get("cores") or 0) >= 1
                                  and processes > s["cores"]):
        bad("processes", f"must be between 1 and cores ({s.get('cores')}), not {processes}")
    if not is_job_name(s.get("job_name", "")):
        bad("job_name", f"{s.get('job_name')!r} is not a job name every batch system accepts: "
            "start with a letter or _, then letters, digits, _ . - (at most 64)")
    for key in ("walltime", "death_timeout", "poll_interval"):
        if s.get(key) is not None and s[key] <= 0:
            bad(key, f"must be positive, not {s[key]}")
    for key in ("max_jobs", "job_cpu"):
        if s.get(key) is not None and s[key] < 1:
            bad(key, f"must be at least 1, not {s[key]}")
    if s.get("job_mem") is not None and s["job_mem"] < 2 ** 20:
        bad("job_mem", f"{s['job_mem']} bytes is too little for a job")
    if not str(s.get("shebang", "")).startswith("#!"):
        bad("shebang", f"must start with #!, e.g. '#!/usr/bin/env bash', not {s.get('shebang')!r}")
    for key in _TEXT_KEYS:
        if s.get(key) is not None and _has_control(str(s[key])):
            bad(key, f"{s[key]!r} contains a newline or control character")
    for key in _DIRECTIVE_KEYS:
        if s.get(key) is not None and ("'" in str(s[key]) or '"' in str(s[key])):
            bad(key, f"{s[key]!r} contains a quote character, which job-script directives "
                "cannot carry")
    for key in _LIST_KEYS:
        for item in s.get(key) or ():
            if _has_control(item):
                bad(key, f"item {item!r} contains a newline or control character; give one "
                    "line per item")
    problems += _check_worker_args(s.get("worker_extra_args") or ())
    try:
        worker_module(s.get("worker_command"))
    except ValueError as e:
        bad("worker_command", str(e))
    if s.get("template") and not Path(s["template"]).is_file():
        bad("template", f"{s['template']}: no such file (a jinja2 job-script template)")
    return problems


def _check_worker_args(args) -> list:
    from ..node import parse_worker_options

    try:
        options = parse_worker_options(args)
    except ValueError as e:
        return [("worker_extra_args", f"{list(args)}: {e}")]
    return [("worker_extra_args", f"--{name.replace('_', '-')} cannot be set here: {why}")
            for name, why in _OWN_WORKER_OPTIONS.items() if name in options]


# dask-jobqueue's worker_command default (and dask-worker's other names): jobqueue's own worker
_DASK_WORKER = ("distributed.cli.dask_worker", "dask_worker", "dask-worker")
_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def worker_module(value) -> str | None:
    """The module a job runs with ``python -m`` to start its workers, or None for jobqueue's
    own (``python -m jobqueue worker``). dask-jobqueue's default, distributed.cli.dask_worker,
    means ours; another dask worker (dask-cuda's...) speaks dask's protocol and is refused."""
    if value is None or value in _DASK_WORKER or value in ("jobqueue", "jobqueue worker"):
        return None
    value = str(value)
    if not _MODULE.fullmatch(value):
        raise ValueError(f"{value!r} is not a Python module name: the workers start with "
                         f"`python -m WORKER_COMMAND` and jobqueue worker's arguments")
    if value.split(".")[0] in ("distributed", "dask_cuda", "dask"):
        raise ValueError(f"{value!r} starts a dask.distributed worker, which cannot talk to a "
                         "jobqueue scheduler; leave worker_command unset (jobqueue's worker) "
                         "or name a module of yours that runs jobqueue.cli.main(['worker', "
                         "*sys.argv[1:]]) after its own set-up (or use --preload)")
    return value


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 and c != "\t" or c == "\x7f" for c in text)


# ------------------------------------------------------------------------------------- context

def _mib(nbytes: int) -> int:
    return max(1, math.ceil(nbytes / 2 ** 20))


def worker_lifetime(walltime) -> dict:
    """How long workers stay before retiring themselves: config worker.lifetime, or, for a job
    with a walltime, the walltime less a margin (10%, between 30 s and 10 min) to move results
    and start replacements; staggered over half the margin so workers do not leave together."""
    from .. import config

    lifetime = config.get("worker.lifetime", None)
    stagger = config.get("worker.lifetime-stagger", 0.0) or 0.0
    if lifetime is None and walltime:
        margin = min(max(0.1 * walltime, 30.0), 600.0)
        lifetime, stagger = max(walltime - margin, 0.5 * walltime), margin / 2
    if not lifetime:
        return {"lifetime": None, "lifetime_stagger": None}
    return {"lifetime": f"{lifetime:g}", "lifetime_stagger": f"{stagger:g}"}


def default_log_directory(cluster_name: str) -> str:
    """Where a cluster's job output goes when no log_directory is set: a directory of its own
    under the user's cache ($XDG_CACHE_HOME, else ~/.cache), never the working directory."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "jobqueue", "logs", cluster_name)


def job_defaults(settings: dict, cluster_name: str) -> dict:
    """The jobs' python, log directory and worker death timeout: the settings' values, else this
    python, :func:`default_log_directory` and the config's worker.death-timeout."""
    from .. import config

    return {"python": settings.get("python") or sys.executable,
            "log_directory": os.path.abspath(settings.get("log_directory")
                                             or default_log_directory(cluster_name)),
            "death_timeout": settings.get("death_timeout") or config.get("worker.death-timeout")}


def job_script(settings: dict, default_template: str, *, overrides=None, extra=None,
               **variables) -> str:
    """The script a cluster submits: the settings' template (else default_template) rendered
    with :func:`context` of settings and variables (scheduler_address, token_file, python,
    log_directory, death_timeout, environment; see :func:`job_defaults`). ``overrides``
    replaces included templates by name (``{"worker.sh.j2": text}``); ``extra`` adds variables."""
    ctx = context(settings, **variables)
    ctx.update(extra or {})
    return render(settings.get("template") or default_template, ctx, overrides)


def context(settings: dict, *, scheduler_address: str, token_file: str, python: str,
            log_directory: str, death_timeout: float, environment: dict | None = None) -> dict:
    """The variables a template sees (see CONTEXT_DOC), from checked settings."""
    from ..config import format_walltime

    s = settings
    processes, threads = split_job(s)
    walltime = s.get("walltime")
    lifetime = worker_lifetime(walltime)
    command = node.WorkerCommand(
        scheduler_address, nthreads=threads, nworkers=processes,
        memory_limit=s["memory"] // processes, name=f"{s['job_name']}-${{JOBQUEUE_JOB_ID}}",
        death_timeout=float(death_timeout), interface=s.get("interface"),
        lifetime=float(lifetime["lifetime"]) if lifetime["lifetime"] else None,
        lifetime_stagger=float(lifetime["lifetime_stagger"]) if lifetime["lifetime"] else None)
    return {
        "shebang": s["shebang"], "job_name": s["job_name"], "queue": s.get("queue"),
        "account": s.get("account"), "cores": s["cores"], "memory": s["memory"],
        "memory_mb": _mib(s["memory"]), "memory_per_core_mb": _mib(s["memory"] / s["cores"]),
        "processes": processes, "threads": threads, "worker_memory": s["memory"] // processes,
        "walltime": format_walltime(walltime) if walltime else None,
        "job_cpu": s.get("job_cpu") or s["cores"],
        "job_mem_mb": _mib(s.get("job_mem") or s["memory"]),
        "resource_spec": s.get("resource_spec"),
        "job_extra_directives": list(s.get("job_extra_directives") or ()),
        "job_directives_skip": list(s.get("job_directives_skip") or ()),
        "job_script_prologue": list(s.get("job_script_prologue") or ()),
        "log_directory": log_directory, "local_directory": s.get("local_directory"),
        "token_file": token_file, "scheduler_address": scheduler_address, "python": python,
        "death_timeout": f"{death_timeout:g}", "interface": s.get("interface"),
        **lifetime,
        "worker_extra_args": list(s.get("worker_extra_args") or ()),
        "worker_command": command.shell(python, worker_module(s.get("worker_command")),
                                        s.get("worker_extra_args") or ()),
        "environment": dict(sorted((environment or {}).items())),
    }


# ----------------------------------------------------------------------------------- rendering

def quote(value) -> str:
    return shlex.quote(str(value))


def skip(text: str, words) -> str:
    """Drop the lines of text that contain any of words."""
    words = [w for w in (words or ()) if w]
    return "".join(line for line in str(text).splitlines(keepends=True)
                   if not any(w in line for w in words))


def render(template: str, ctx: dict, overrides=None) -> str:
    """Render a packaged template by name (``slurm.sh.j2``) or a site template by path.

    A site template can ``{% include "worker.sh.j2" %}`` to start the worker the standard way.
    ``overrides`` (``{name: template text}``) replaces templates it includes.
    """
    return templating.render(template, ctx, what="job-script template", variables=CONTEXT_DOC,
                             error=JobScriptError, filters={"q": quote, "skip": skip},
                             overrides=overrides)

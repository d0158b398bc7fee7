"""One description per parameter, and the numpydoc docstrings assembled from them.

Where each parameter is described, once:

- a configuration key, in ``jobqueue/jobqueue.yaml``: the comment after the key is its
  description (comment lines just below it, starting in the same column, continue it); its type
  is :data:`jobqueue.config.SCHEMA`'s, its default the file's value. ``cores=`` of
  ``SLURMCluster`` is described by ``slurm.cores``.
- an argument that is not configuration (``Client(address=)``, ``scale(n=)``, a cluster's
  ``name=``), in :data:`ARGUMENTS` below, by name, when one meaning serves every function that
  takes it; otherwise in the function's own docstring, under ``Parameters``.

:func:`document` completes a class's or function's docstring with a ``Parameters`` section
listing every parameter of its signature in order: the ones its docstring describes itself,
then the config key's or the ARGUMENTS entry's description. A new cluster setting is one entry
in SCHEMA, one commented line in jobqueue.yaml and one keyword parameter in the cluster classes
that take it; ``tests/test_params.py`` fails while any of the three is missing.

Reading the comments needs no YAML parser (this runs when a cluster module is imported): the
file's key lines are ``KEY: VALUE  # DESCRIPTION`` at two spaces per level.
"""
from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, NamedTuple

from . import config

__all__ = ["ARGUMENTS", "ANNOTATIONS", "config_entries", "document", "given", "documented",
           "type_text"]


class Entry(NamedTuple):
    """A documented configuration key: its dotted key, default (as written in jobqueue.yaml),
    schema type and description."""
    key: str
    default: str
    spec: str
    description: str


# ---------------------------------------------------------------------- the config descriptions

_KEY_LINE = re.compile(r"(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(?P<rest>.*)")


def _split_comment(rest: str) -> tuple[str, str | None, int]:
    """``' "#!/bin/bash"  # first line'`` -> ('"#!/bin/bash"', 'first line', 14): a comment
    starts at a '#' after whitespace, outside quotes; -1: no comment."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i + 1:].strip(), i
    return rest.strip(), None, -1


def _parse(text: str) -> dict[tuple, tuple[str, str]]:
    """{key path: (value text, description)} of every key line of a commented YAML file."""
    out: dict[tuple, tuple[str, str]] = {}
    path: list[str] = []
    last: tuple | None = None
    comment_column = -1
    for line in text.splitlines():
        match = _KEY_LINE.fullmatch(line)
        if match is None:
            stripped = line.lstrip()
            if last is not None and stripped.startswith("#") and \
                    len(line) - len(stripped) == comment_column:
                value, description = out[last]
                out[last] = value, f"{description} {stripped[1:].strip()}".strip()
            else:
                last = None
            continue
        depth = len(match["indent"]) // 2
        path = path[:depth] + [match["key"]]
        value, comment, at = _split_comment(match["rest"])
        last = tuple(path)
        out[last] = value, comment or ""
        comment_column = match.start("rest") + at if at >= 0 else -1
    return out


@functools.lru_cache(maxsize=None)
def config_entries() -> dict[str, Entry]:
    """{dotted key: Entry} of every key in the package's jobqueue.yaml that SCHEMA types."""
    parsed = _parse(config.DEFAULTS_FILE.read_text(encoding="utf-8"))
    out = {}
    for path, (value, description) in parsed.items():
        spec: Any = config.SCHEMA
        for part in path:
            spec = spec.get(part) if isinstance(spec, dict) else None
        if isinstance(spec, str):
            key = ".".join(path)
            out[key] = Entry(key, value, spec, description)
    return out


# The type a user reads in a docstring, and the annotation a keyword parameter carries in the
# source, for each SCHEMA type. Every config parameter defaults to None: the configured value.
_TYPES = {
    "int": ("int", "int"), "float": ("float", "float"), "bool": ("bool", "bool"),
    "str": ("str", "str"), "path": ("str (a path; ~ is expanded)", "str"),
    "list": ("list of str", "list[str]"), "mapping": ("dict", "dict"),
    "size": ("int or str (bytes, or a size such as 32GB, 4GiB, 512M)", "int | str"),
    "size|auto": ("int or str (a size such as 4GB, or 'auto')", "int | str"),
    "time": ("float or str (seconds, or a duration such as 45s, 1h30m, 01:00:00)", "float | str"),
    "minutes": ("float or str (a duration such as 01:30:00 or 90m; a bare number is minutes)",
                "float | str"),
}
ANNOTATIONS = {spec: annotation for spec, (_, annotation) in _TYPES.items()}


def type_text(spec: str) -> str:
    """The docstring type of a SCHEMA type: 'time?' -> 'float or str (seconds, ...), or None'."""
    base = spec.rstrip("?")
    text = _TYPES[base][0] if base in _TYPES else base
    return f"{text}, or None" if spec.endswith("?") else text


def annotation(spec: str) -> str:
    """The annotation of a keyword parameter that a SCHEMA type is given through."""
    return f"{ANNOTATIONS[spec.rstrip('?')]} | None"


# ------------------------------------------------------------------- arguments not in the config

# name -> (type, description) when a name means the same in every function that takes it; or
# "section.key" when a config key (of another name) describes it. Descriptions are numpydoc
# text: a sentence or a few, no trailing period needed.
ARGUMENTS: dict[str, tuple[str, str] | str] = {
    # cluster constructors
    "profile": ("str, optional",
                "Name of a profile in the config (``profiles:``) whose settings apply before "
                "these arguments, e.g. ``profile=\"gpu\"``. Its ``kind`` must be this cluster's."),
    "config_name": ("str, optional", "dask-jobqueue's name for ``profile``."),
    "name": ("str, optional",
             "Name of the cluster, in its repr, logs and dashboard (default: KIND-RANDOM). "
             "Batch clusters also take it as the job name when ``job_name`` is not given, as "
             "dask-jobqueue does, if it is one (letters, digits, _ . -)."),
    "n_workers": ("int, optional",
                  "Workers to start with, as ``scale(n_workers)`` right after construction "
                  "(it returns without waiting for batch jobs to start)."),
    "token": ("str, optional",
              "The cluster's secret: workers and clients prove they know it (default: a new "
              "random one). Give it only to share a token with processes you start yourself."),
    "scheduler_file": ("str, optional",
                       "Write the scheduler's address and token to this file (mode 0600), for "
                       "``Client(scheduler_file=...)`` and ``jobqueue worker --scheduler-file``."),
    "asynchronous": ("bool, default False",
                     "Run in the caller's event loop, as dask's ``asynchronous=True``: "
                     "``await cluster`` (or ``async with``) starts it, and the methods that wait "
                     "return awaitables (``await cluster.close()``)."),
    "scheduler_options": ("dict, optional",
                          "Where the scheduler listens, with dask's keys: ``host``, "
                          "``interface``, ``port``, ``dashboard_address``, ``protocol`` "
                          "(tcp/tls), ``security``. Any other key is refused."),
    "scheduler_port": "scheduler.port",
    "host": ("str, default '127.0.0.1'",
             "Address the scheduler listens on: the one workers and clients connect to."),
    "kwargs": ("",
               "dask-jobqueue's old names, read with a FutureWarning naming the new one: "
               "``env_extra`` (job_script_prologue), ``job_extra`` (job_extra_directives), "
               "``extra`` (worker_extra_args), ``header_skip`` (job_directives_skip) and "
               "``project`` (account; if both are given, account wins). Any other name is an "
               "error that says which names exist."),
    # cluster methods
    "n": ("int, optional", "Number of workers. Batch clusters round up to whole jobs."),
    "jobs": ("int, optional", "Number of jobs (each starts ``processes`` workers)."),
    "cores": ("int, optional", "Enough jobs for this many cores (threads) in all."),
    "memory": ("int or str, optional", "Enough jobs for this much memory in all, e.g. '1TB'."),
    "wait": ("bool, optional",
             "Wait until the new jobs have started (batch clusters: submitted) before "
             "returning."),
    "minimum": ("int, optional", "Fewest workers adaptive keeps (rounded up to whole jobs)."),
    "maximum": ("int, optional", "Most workers adaptive starts (rounded down to whole jobs)."),
    "minimum_jobs": ("int, optional", "Fewest jobs adaptive keeps."),
    "maximum_jobs": ("int, optional", "Most jobs adaptive keeps queued or running."),
    "minimum_cores": ("int, optional", "Fewest cores adaptive keeps, as dask-jobqueue's."),
    "maximum_cores": ("int, optional", "Most cores adaptive starts, as dask-jobqueue's."),
    "minimum_memory": ("int or str, optional", "Least memory adaptive keeps, e.g. '64GB'."),
    "maximum_memory": ("int or str, optional", "Most memory adaptive starts, e.g. '1TB'."),
    "target_duration": "adaptive.target-duration",
    "wait_count": "adaptive.wait-count",
    "interval": "adaptive.interval",
    # client
    "futures": ("Future or collection of Futures",
                "Futures, or lists, tuples, sets or dicts of them (nested as you like)."),
    "key": ("str or list of str, optional",
            "The task's key (``map``: a list with one per input, or a prefix for them); by "
            "default a hash of the function and arguments (``pure=True``) or a random one."),
    "workers": ("str or list of str, optional",
                "Run only on these workers (addresses or names); by default, on any."),
    "retries": ("int, optional",
                "Run the task again up to this many times if it raises."),
    "pure": ("bool, default True",
             "As in dask: the key is a hash of the function and arguments, so the same call, "
             "from any client, shares one task and result. ``pure=False`` for functions whose "
             "every call differs (random numbers, clocks, side effects)."),
    "allow_other_workers": ("bool, optional",
                            "With ``workers=``: a preference, not a restriction: the tasks may "
                            "run on other workers too."),
    "priority": ("int, default 0", "Tasks with a higher priority run first."),
    "resources": ("dict, optional",
                  "Abstract resources each task needs, e.g. ``{\"GPU\": 1}``: it runs only on "
                  "a worker that declares them (``jobqueue worker --resources GPU=2``), "
                  "holding them while it runs, as in dask."),
    "optimize_graph": ("bool, default True", "Let dask optimise the graph first."),
    "sync": ("bool", "Return the results rather than Futures."),
    "func": ("callable", "The function to run; it is pickled once per client."),
    "timeout": ("float, optional", "Seconds to wait before raising TimeoutError (None: no limit)."),
    "collections": ("dask collection or list of them",
                    "dask collections (arrays, dataframes, bags, delayed); a list in, a list out."),
    "args": ("", "Positional arguments of ``func``; Futures stand for their results."),
    "fn": ("callable", "Called with the Future as its only argument."),
}


def _argument_entry(name: str) -> tuple[str, str] | None:
    entry = ARGUMENTS.get(name)
    if isinstance(entry, str):
        described = config_entries()[entry]
        return type_text(described.spec.rstrip("?")) + ", optional", _config_text(described)
    return entry


def _config_text(entry: Entry) -> str:
    text = entry.description.rstrip(".")
    if text:
        text = text[0].upper() + text[1:] + "."
    return f"{text}\nConfig key ``{entry.key}``, package default ``{entry.default}``."


# --------------------------------------------------------------------------------- docstrings

_HEADER = re.compile(r"^(\S[^\n]*)\n-{3,}\n", re.MULTILINE)


def _sections(doc: str) -> tuple[str, list[tuple[str, str]]]:
    """A dedented numpydoc docstring -> (summary text, [(section title, body)])."""
    matches = list(_HEADER.finditer(doc))
    if not matches:
        return doc.strip("\n"), []
    head = doc[:matches[0].start()].strip("\n")
    sections = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(doc)
        sections.append((m.group(1).strip(), doc[m.end():end].strip("\n")))
    return head, sections


def _dedent(doc: str | None) -> str:
    return inspect.cleandoc(doc) if doc else ""


def _wrap(text: str, width: int = 92) -> list[str]:
    """Greedy word wrap (textwrap.fill costs more than all the rest of this module at
    import)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


def _entries(doc: str | None) -> dict[str, str]:
    """{name: its whole entry} of a numpydoc docstring's Parameters section (an entry for
    ``*args, **kwargs`` is listed under both names)."""
    _, sections = _sections(_dedent(doc))
    out: dict[str, str] = {}
    for title, body in sections:
        if title != "Parameters":
            continue
        names: list[str] = []
        for line in body.splitlines():
            if line and not line[0].isspace():
                names = [n.strip().lstrip("*") for n in line.split(" : ")[0].split(",")]
                for name in names:
                    out[name] = line
            else:
                for name in names:
                    out[name] += "\n" + line
    return out


def documented(doc: str | None) -> set[str]:
    """The parameter names a numpydoc docstring's Parameters section describes."""
    return set(_entries(doc))


def _entry_text(name: str, kind, type_: str, text: str) -> str:
    star = {inspect.Parameter.VAR_POSITIONAL: "*",
            inspect.Parameter.VAR_KEYWORD: "**"}.get(kind, "")
    head = f"{star}{name} : {type_}" if type_ else f"{star}{name}"
    body = "\n".join("    " + line for part in text.split("\n") for line in _wrap(part))
    return f"{head}\n{body}"


def _from_config(param: inspect.Parameter, sections: tuple[str, ...]) -> str | None:
    """The entry of a parameter that is a key of one of ``sections`` (first first)."""
    for section in sections:
        entry = config_entries().get(f"{section}.{param.name.replace('_', '-')}")
        if entry is not None:
            return _entry_text(param.name, param.kind,
                               type_text(entry.spec.rstrip("?")) + ", optional",
                               _config_text(entry))
    return None


def _from_arguments(param: inspect.Parameter) -> str | None:
    """The entry of a parameter described in ARGUMENTS."""
    name = param.name
    described = _argument_entry(name)
    if described is None:
        return None
    type_, text = described
    if param.default is not inspect.Parameter.empty and type_ and "default" not in type_ \
            and "optional" not in type_:
        type_ += f", default {param.default!r}"
    return _entry_text(name, param.kind, type_, text)


def _complete(doc: str | None, signature: inspect.Signature, sections: tuple[str, ...],
              inherited: dict[str, str] | None = None) -> str:
    """The docstring with a Parameters section in the signature's order: each parameter's
    entry from the docstring itself, else from ``sections``, ``inherited`` or ARGUMENTS."""
    head, parts = _sections(_dedent(doc))
    own = _entries(doc)
    inherited = inherited or {}
    entries: list[str] = []
    for p in signature.parameters.values():
        if p.name in ("self", "cls"):
            continue
        text = (own.get(p.name) or _from_config(p, sections) or inherited.get(p.name)
                or _from_arguments(p))
        if text is not None and text not in entries:
            entries.append(text)
    entries += [text for text in own.values() if text not in entries]
    if not entries:
        return _dedent(doc)
    titles = [t for t, _ in parts]
    if "Parameters" in titles:
        parts[titles.index("Parameters")] = ("Parameters", "\n".join(entries))
    else:
        parts.insert(0, ("Parameters", "\n".join(entries)))
    out = [head] + [f"{t}\n{'-' * len(t)}\n{body}" for t, body in parts]
    return "\n\n".join(out) + "\n"


def _signature(function) -> inspect.Signature:
    """The signature, with annotations written as text under ``from __future__ import
    annotations`` evaluated, so that help() shows ``int | None``, not ``'int | None'``."""
    signature = inspect.signature(function)
    if not any(isinstance(p.annotation, str) for p in signature.parameters.values()):
        return signature
    try:
        signature = inspect.signature(function, eval_str=True)
    except (NameError, TypeError, SyntaxError):
        return signature
    if not inspect.isclass(function):
        function.__signature__ = signature
    return signature


def document(*sections: str) -> Callable:
    """Class or function decorator: complete the docstring's Parameters section from the config
    keys of ``sections`` (a parameter ``job_name`` <- key ``job-name``, first section first),
    then from a base class's docstring (for a class) and from ARGUMENTS. On a class, its
    ``__init__``'s parameters go into the class docstring, and each public method it defines is
    completed too, from the description of the same parameter of the method it overrides, then
    from ARGUMENTS."""
    def decorate(obj):
        if not inspect.isclass(obj):
            obj.__doc__ = _complete(obj.__doc__, _signature(obj), sections)
            return obj
        init = obj.__dict__.get("__init__")
        if init is not None:             # a base class's description of a parameter first
            bases = {}
            for base in reversed(obj.__mro__[1:]):
                bases.update(_entries(base.__doc__))
            obj.__doc__ = _complete(obj.__doc__, _signature(init), sections, bases)
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not inspect.isfunction(value):
                continue
            base = next((getattr(b, attr) for b in obj.__mro__[1:] if attr in vars(b)), None)
            value.__doc__ = _complete(value.__doc__ or getattr(base, "__doc__", None),
                                      _signature(value), (), _entries(getattr(base, "__doc__", "")))
        return obj
    return decorate


def given(local_vars: dict) -> dict:
    """A constructor's arguments from its ``locals()``: every named parameter, and the contents
    of ``**kwargs``, for handing on to the base class unchanged."""
    out = {k: v for k, v in local_vars.items() if k not in ("self", "kwargs", "__class__")}
    out.update(local_vars.get("kwargs") or {})
    return out

"""The one configuration resolver: layered YAML, validated once, every value knowing its source.

Layers, later wins::

    package jobqueue/jobqueue.yaml                 source "default"
    dask-jobqueue's jobqueue.yaml  (DASK_FILES)    source "path:line (dask-jobqueue KEY)"
    /etc/jobqueue/*.yaml, sorted    (SITE_DIRS)    source "path:line"
    ~/.config/jobqueue/*.yaml       (USER_DIRS)    source "path:line"
    $JOBQUEUE_CONFIG, a file or a directory        source "path:line"
    JOBQUEUE_<SECTION>__<KEY>=value                source the variable's name
    constructor arguments, through resolve()       source "argument"

dask-jobqueue's files (/etc/dask/jobqueue.yaml, ~/.config/dask/jobqueue.yaml; DASK_FILES) come
just above the package defaults, their ``jobqueue.slurm.*`` keys read as ``slurm.*`` with its old
names translated (see jobqueue/compat.py); a value they set that we cannot honour is warned about.

Environment: ``JOBQUEUE_SLURM__QUEUE=debug`` sets ``slurm.queue``; ``__`` separates levels, ``_`` in
a key becomes ``-`` and values are read as YAML (``7`` is an int, ``[a, b]`` a list, ``30s`` a string).
A name without ``__`` sets a top-level key only if one exists (``JOBQUEUE_SCHEDULER_ADDRESS``); others
such as ``JOBQUEUE_TOKEN`` and ``JOBQUEUE_CONFIG`` are not configuration.

Nothing is read at import time: the first get/source/resolve/show reads every layer, checks the merged
result against SCHEMA and caches it; refresh() drops the cache. YAML keys use dashes, Python names use
underscores; resolve() accepts both and returns underscores.
"""

from __future__ import annotations

import copy
import math
import os
import re
from typing import Any
from pathlib import Path


__all__ = ["ConfigError", "get", "source", "resolve", "show", "validate_file", "refresh", "warn_user",
           "parse_bytes", "format_bytes", "parse_timedelta", "format_walltime", "SCHEMA"]

DEFAULTS_FILE = Path(__file__).with_name("jobqueue.yaml")
SITE_DIRS = ["/etc/jobqueue"]            # tests point these at temporary directories
USER_DIRS = ["~/.config/jobqueue"]       # "~" is expanded when the files are read
# dask-jobqueue's config files: read below ours, their keys translated (jobqueue/compat.py)
DASK_FILES = ["/etc/dask/jobqueue.yaml", "~/.config/dask/jobqueue.yaml"]
ENV_PREFIX = "JOBQUEUE_"

# Types: int, float, bool, str, size (-> int bytes), time (-> float seconds), list (of str),
# mapping (free form, not key-checked), path (str, "~" expanded), size|auto. A trailing "?" allows null.
_BATCH: dict[str, str] = {
    "job-name": "str", "cores": "int?", "memory": "size?", "processes": "int?", "queue": "str?",
    "account": "str?", "walltime": "time?", "job-extra-directives": "list",
    "job-directives-skip": "list", "job-script-prologue": "list", "worker-extra-args": "list",
    "worker-command": "str?",
    "interface": "str?", "local-directory": "path?", "log-directory": "path?", "python": "str?",
    "shebang": "str", "death-timeout": "time?", "submit-command-extra": "list",
    "cancel-command-extra": "list", "template": "path?", "job-array": "bool", "poll-interval": "time",
    "max-jobs": "int?", "scheduler-options": "mapping", "shared-temp-directory": "path?",
}
SCHEMA: dict[str, Any] = {
    "scheduler-address": "str?",
    "scheduler": {"allowed-failures": "int", "worker-ttl": "time?", "port": "int",
                  "dashboard-address": "str?", "dashboard-token-required": "bool?",
                  "idle-timeout": "time?"},
    "worker": {"death-timeout": "time", "heartbeat-interval": "time",
               "memory": {"pause": "float", "terminate": "float"},
               "lifetime": "time?", "lifetime-stagger": "time", "same-machine-transfers": "bool"},
    "local": {"n-workers": "int?", "threads-per-worker": "int?", "processes": "bool",
              "memory-limit": "size|auto", "resources": "mapping", "interface": "str?",
              "scheduler-options": "mapping"},
    "slurm": {**_BATCH, "walltime": "minutes?", "job-cpu": "int?", "job-mem": "size?"},
    "pbs": {**_BATCH, "resource-spec": "str?"},
    "sge": {**_BATCH, "resource-spec": "str?"},
    "ssh": {"connect-options": "mapping", "remote-python": "str?", "worker-options": "mapping",
            "scheduler-options": "mapping"},
    "kubernetes": {"image": "str?", "namespace": "str?", "context": "str?", "resources": "mapping",
                   "threads": "int?", "env": "mapping", "image-pull-policy": "str?", "python": "str?",
                   "worker-extra-args": "list", "interface": "str?", "death-timeout": "time?",
                   "template": "path?", "poll-interval": "time", "max-pods": "int?"},
    "adaptive": {"target-duration": "time", "wait-count": "int", "interval": "time"},
    "security": {"protocol": "str", "tls-ca-file": "path?", "tls-cert": "path?",
                 "tls-key": "path?"},
    "profiles": "mapping",   # checked by _check_profiles against the section each profile names
}
# A profile of kind "batch" serves any batch cluster (dask-jobqueue's config_name= sections are
# read as such): its keys are checked against all three sections, its values by the one in use.
PROFILE_KINDS = ("local", "ssh", "slurm", "pbs", "sge", "kubernetes", "batch")
BATCH_SECTIONS = ("slurm", "pbs", "sge")
# dask-jobqueue's old names of batch settings (it still accepts them, with a warning): accepted
# as arguments and in its config files, with a FutureWarning naming the new name.
RENAMED = {"env-extra": "job-script-prologue", "job-extra": "job-extra-directives",
           "extra": "worker-extra-args", "header-skip": "job-directives-skip"}


class ConfigError(ValueError):
    """The configuration is wrong; each problem names where (file:line, variable, argument), the key
    and what is allowed."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = "\n  ".join([f"{len(self.problems)} problems in the jobqueue configuration:"]
                               + self.problems)
        super().__init__(text)


class _Missing:
    def __repr__(self):
        return "<no default>"


_missing = _Missing()

# ---------------------------------------------------------------------------------------------- sizes

# Decimal units are powers of 1000 and binary units (KiB...) powers of 1024. Bare K, M, G, T, P mean
# binary, as in SLURM's --mem=4G and PBS/SGE's 4g, so a value copied from a batch script means the same.
_BYTE_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtp", start=1):
    _BYTE_UNITS.update({f"{_p}b": 1000 ** _i, f"{_p}ib": 1024 ** _i, _p: 1024 ** _i})
# Regular expressions are kept as text: re compiles (and caches) them on first use, not at import.
_SIZE = r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*"
_SIZE_FORMS = ("use a number of bytes or a number and a unit: 32GB, '32 GB', 32GiB, 1.5T, 512M, 100kB "
               "(kB MB GB TB PB are powers of 1000; KiB MiB GiB TiB and K M G T powers of 1024)")


def parse_bytes(value) -> int:
    """'32GB' -> 32_000_000_000, '32GiB' or '32G' -> 32 * 2**30, 512 -> 512."""
    if _is_number(value):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"cannot read {value!r} as a size: it must be positive; {_SIZE_FORMS}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"cannot read {value!r} as a size: expected text or a number; {_SIZE_FORMS}")
    match = re.fullmatch(_SIZE, value)
    if match is None:
        raise ValueError(f"cannot read {value!r} as a size: expected a number and a unit; "
                         f"{_SIZE_FORMS}")
    number, unit = match.groups()
    if unit.lower() not in _BYTE_UNITS:
        raise ValueError(f"cannot read {value!r} as a size: unknown unit {unit!r}; {_SIZE_FORMS}")
    return int(round(float(number) * _BYTE_UNITS[unit.lower()]))


def format_bytes(n: int) -> str:
    """32_000_000_000 -> '32.00 GB' (decimal units, the same ones parse_bytes reads)."""
    for prefix, factor in (("PB", 1000 ** 5), ("TB", 1000 ** 4), ("GB", 1000 ** 3), ("MB", 1000 ** 2),
                           ("kB", 1000)):
        if n >= factor * 0.9:
            return f"{n / factor:.2f} {prefix}"
    return f"{int(n)} B"

# ------------------------------------------------------------------------------------------ durations


_TIME_UNITS = {"ms": 0.001, "millisecond": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60,
               "minute": 60, "h": 3600, "hr": 3600, "hour": 3600, "d": 86400, "day": 86400,
               "w": 604800, "week": 604800}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_TIME_PART = rf"\s*({_NUMBER})\s*([A-Za-z]+)\s*,?"
_TIME_PARTS = rf"(?:\s*{_NUMBER}\s*[A-Za-z]+\s*,?)+\s*"
_CLOCK = r"(?:(\d+)-)?(\d+(?::\d+){0,2}(?:\.\d+)?)"
_TIME_FORMS = ("use seconds (30, 1.5), a number and a unit (45s, 90m, 1h30m, '2 days', 500ms) "
               "or a clock time (MM:SS, HH:MM:SS, D-HH, D-HH:MM:SS as in SLURM)")
_TIME_FORMS_MINUTES = ("use minutes (90, as SLURM reads --time=90), a number and a unit (45s, "
                       "90m, 1h30m, '2 days') or a clock time (MM:SS, HH:MM:SS, D-HH, "
                       "D-HH:MM:SS as in SLURM)")


def parse_timedelta(value, unit: float = 1) -> float:
    """'01:00:00', '1h', '60m', '3600s', '0-01:00:00' and 3600 all give 3600.0 seconds.

    A bare number (or numeric text) counts ``unit`` seconds: 1 by default; 60 for a SLURM
    walltime, as SLURM reads ``--time=60`` as 60 minutes.
    """
    forms = _TIME_FORMS if unit == 1 else _TIME_FORMS_MINUTES
    if _is_number(value):
        seconds = float(value) * unit
    elif isinstance(value, str):
        seconds = _parse_time_text(value, unit, forms)
    else:
        raise ValueError(f"cannot read {value!r} as a duration: expected text or a number; {forms}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot read {value!r} as a duration: it must be positive; {forms}")
    return seconds


def _parse_time_text(text: str, bare: float = 1, forms: str = _TIME_FORMS) -> float:
    stripped = text.strip()
    if re.fullmatch(rf"[+-]?{_NUMBER}", stripped):
        return float(stripped) * bare
    if re.fullmatch(_CLOCK, stripped):
        return _parse_clock(text, stripped, forms)
    if re.fullmatch(_TIME_PARTS, stripped):
        total = 0.0
        for number, unit in re.findall(_TIME_PART, stripped):
            factor = _TIME_UNITS.get(unit.lower()) or _TIME_UNITS.get(unit.lower().removesuffix("s"))
            if factor is None:
                raise ValueError(f"cannot read {text!r} as a duration: unknown unit {unit!r}; "
                                 f"{forms}")
            total += float(number) * factor
        return total
    raise ValueError(f"cannot read {text!r} as a duration; {forms}")


def _parse_clock(text: str, stripped: str, forms: str = _TIME_FORMS) -> float:
    match = re.fullmatch(_CLOCK, stripped)
    assert match is not None     # _parse_time_text checked it
    days, clock = match.groups()
    fields = [float(f) for f in clock.split(":")]
    if days is not None:                       # D-HH, D-HH:MM, D-HH:MM:SS
        fields += [0.0] * (3 - len(fields))
        fields[0] += float(days) * 24
    elif len(fields) == 2:                     # MM:SS
        fields.insert(0, 0.0)
    elif len(fields) != 3:                     # HH:MM:SS
        raise ValueError(f"cannot read {text!r} as a duration; {forms}")
    hours, minutes, seconds = fields
    leading_minutes = days is None and clock.count(":") == 1
    if seconds >= 60 or minutes >= 60 and not leading_minutes:
        raise ValueError(f"cannot read {text!r} as a duration: minutes and seconds must be below 60 "
                         f"(only the first field may be larger); {forms}")
    return hours * 3600 + minutes * 60 + seconds


def format_walltime(seconds) -> str:
    """3600 -> '01:00:00'; hours go past 24 ('48:00:00'); partial seconds round up."""
    total = math.ceil(parse_timedelta(seconds))
    return f"{total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}"

# ----------------------------------------------------------------------------------- value conversion


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_text(value) -> bool:
    return isinstance(value, str) or _is_number(value)


def _typed(accepts, convert, expected: str):
    def check(value):
        if accepts(value):
            return convert(value)
        raise ValueError(f"{value!r} is not {expected}")
    return check


def _to_memory_limit(value):
    if value == "auto":
        return value
    try:
        return parse_bytes(value)
    except ValueError as e:
        raise ValueError(f"{e}; or auto") from None


_CONVERT = {
    "int": _typed(lambda v: isinstance(v, int) and not isinstance(v, bool), int, "a whole number"),
    "float": _typed(_is_number, float, "a number"),
    "bool": _typed(lambda v: isinstance(v, bool), bool, "true or false"),
    "str": _typed(_is_text, str, "a string"),
    "list": _typed(lambda v: isinstance(v, list) and all(map(_is_text, v)),
                   lambda v: [str(i) for i in v],
                   "a list of strings; write [a, b] or one '- item' per line"),
    "mapping": _typed(lambda v: isinstance(v, dict), copy.deepcopy, "a mapping of 'key: value'"),
    "path": _typed(lambda v: isinstance(v, str), os.path.expanduser, "a path"),
    "size": parse_bytes,
    "time": parse_timedelta,
    "minutes": lambda value: parse_timedelta(value, unit=60),
    "size|auto": _to_memory_limit,
}
_EXPECT = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string",
           "size": "a size such as 32GB", "time": "a duration such as 30s", "list": "a list of strings",
           "minutes": "a duration such as 01:30:00 or 90m (a bare number is minutes)",
           "mapping": "a mapping", "path": "a path", "size|auto": "a size such as 32GB, or auto"}


def _convert(spec: str, value):
    kind = spec.rstrip("?")
    if value is None:
        if spec.endswith("?"):
            return None
        raise ValueError(f"null is not allowed here; give {_EXPECT[kind]}")
    return _CONVERT[kind](value)

# ------------------------------------------------------------------------------------------- checking


def _dotted(path) -> str:
    return ".".join(str(part) for part in path)


def _underscore(key: str) -> str:
    return key.replace("-", "_")


def _did_you_mean(word: str, candidates) -> str:
    import difflib  # only on the error path
    candidates = [str(c) for c in candidates]
    close = difflib.get_close_matches(str(word), candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; allowed: {', '.join(candidates)}" if candidates else ""


def _walk(tree: dict, schema: dict, path: tuple, where, problems: list, rename=str) -> dict:
    """Check `tree` against `schema` and return it converted; problems are appended, not raised."""
    out = {}
    for key, value in tree.items():
        p = path + (key,)
        spec = schema.get(key) if isinstance(key, str) else None
        if spec is None:
            problems.append(f"{where(p)}: {_dotted(p)}: unknown key{_did_you_mean(key, schema)}")
        elif isinstance(spec, dict) and isinstance(value, dict):
            out[rename(key)] = _walk(value, spec, p, where, problems, rename)
        elif isinstance(spec, dict) and value is not None:
            problems.append(f"{where(p)}: {_dotted(p)}: {value!r} is not a mapping; "
                            f"expected keys: {', '.join(spec)}")
        elif not isinstance(spec, dict):
            try:
                out[rename(key)] = _convert(spec, value)
            except ValueError as e:
                problems.append(f"{where(p)}: {_dotted(p)}: {e}")
    return out


def _check_profiles(profiles, where) -> list:
    problems: list[str] = []
    for name, body in (profiles if isinstance(profiles, dict) else {}).items():
        p = ("profiles", name)
        if not isinstance(body, dict):
            problems.append(f"{where(p)}: {_dotted(p)}: a profile is a mapping with kind: and the keys "
                            f"it overrides")
        elif body.get("kind") not in PROFILE_KINDS:
            at = where(p + ("kind",)) if "kind" in body else where(p)
            problems.append(f"{at}: {_dotted(p)}: kind must be one of {', '.join(PROFILE_KINDS)}, "
                            f"not {body.get('kind')!r}")
        else:
            rest = {k: v for k, v in body.items() if k != "kind"}
            _walk(rest, _profile_schema(body["kind"]), p, where, problems)
    return problems


def _profile_schema(kind: str) -> dict:
    if kind == "batch":
        return {k: v for section in reversed(BATCH_SECTIONS) for k, v in SCHEMA[section].items()}
    return SCHEMA[kind]


def _check(tree: dict, sources: dict) -> list:
    def where(p):
        return sources.get(p, "default")
    problems: list[str] = []
    _walk(tree, SCHEMA, (), where, problems)
    return problems + _check_profiles(tree.get("profiles"), where)

# -------------------------------------------------------------------------------------------- reading


def _loader(text: str):
    """A safe YAML loader over ``text`` (yaml is imported here, on first use: parse_bytes and
    parse_timedelta serve every worker process, which reads no YAML)."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)


def _parse_yaml(text: str, name: str):
    """Return (data, {key path: line}) of one YAML document; errors name the file and line."""
    import yaml

    loader = _loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_yaml_error(e, name)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:{node.start_mark.line + 1}: a config file is a mapping of "
                          f"'key: value' lines, not a {type(data).__name__}")
    lines: dict[tuple, int] = {}
    _key_lines(node, (), lines, name)
    return data, lines


def _yaml_error(e, name: str) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"{name}:{mark.line + 1}" if mark else name
    text = f"{where}: invalid YAML: {e.problem or e.context}"
    if mark:
        text += f" (column {mark.column + 1})"
    if e.context and e.problem and e.context_mark:
        text += f", {e.context} at line {e.context_mark.line + 1}"
    return text


def _key_lines(node, path: tuple, lines: dict, name: str):
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        p, line = path + (key_node.value,), key_node.start_mark.line + 1
        if p in lines:
            raise ConfigError(f"{name}:{line}: {_dotted(p)}: duplicate key (first at line {lines[p]})")
        lines[p] = line
        _key_lines(value_node, p, lines, name)


def _read_yaml(path):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise ConfigError(f"{path}: cannot read the config file: {reason}") from None
    return _parse_yaml(text, str(path))


def _yaml_files(directory) -> list:
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _layer_files() -> list:
    files = [f for d in [*SITE_DIRS, *USER_DIRS] for f in _yaml_files(d)]
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.exists():
            raise ConfigError(f"{ENV_PREFIX}CONFIG={explicit}: no such file or directory")
        files += _yaml_files(path) if path.is_dir() else [path]
    return files


def _env_path(name: str):
    """JOBQUEUE_SLURM__JOB_NAME -> ("slurm", "job-name"); None if the variable is not configuration."""
    if not name.startswith(ENV_PREFIX):
        return None
    rest = name[len(ENV_PREFIX):]
    if "__" in rest:
        return tuple(part.lower().replace("_", "-") for part in rest.split("__"))
    key = rest.lower().replace("_", "-")
    return (key,) if key in SCHEMA and not isinstance(SCHEMA[key], dict) else None


def _env_value(text: str):
    import yaml

    try:
        loader = _loader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return text


def _env_layer():
    data, names = {}, {}
    for name in sorted(os.environ):
        path = _env_path(name)
        if path is None:
            continue
        node = data
        for i, key in enumerate(path[:-1]):
            if not isinstance(node.get(key), dict):
                node[key] = {}
            names.setdefault(path[:i + 1], name)
            node = node[key]
        node[path[-1]] = _env_value(os.environ[name])
        names[path] = name
    return data, names


def _file_where(path, lines):
    return lambda p: f"{path}:{lines[p]}" if p in lines else str(path)


def _dask_layer(path: Path):
    """A dask-jobqueue config file as a layer: keys translated, each note warned about once
    per load, every value's source its file and line under dask-jobqueue's key."""
    from . import compat

    data, lines = _read_yaml(path)
    tree, origin, notes = compat.translate(data, SCHEMA, RENAMED)
    for key_path, text, old_name in notes:
        line = lines.get(key_path)
        warn_user(f"{path}:{line}: {text}" if line else f"{path}: {text}",
                  FutureWarning if old_name else UserWarning)

    def where(p):
        theirs = origin.get(p)
        if theirs is None:
            return f"{path} (dask-jobqueue)"
        return f"{path}:{lines.get(theirs, '?')} (dask-jobqueue {_dotted(theirs)})"
    return tree, where


def _layers():
    """Yield (data, where, label) for each layer, lowest first; where(key path) -> source text."""
    data, _ = _read_yaml(DEFAULTS_FILE)
    yield data, lambda p: "default", "default"
    for name in DASK_FILES:
        path = Path(name).expanduser()
        if path.is_file():
            data, where = _dask_layer(path)
            yield data, where, f"{path} (dask-jobqueue, translated)"
    for path in _layer_files():
        data, lines = _read_yaml(path)
        yield data, _file_where(path, lines), str(path)
    data, names = _env_layer()
    if data:
        yield data, lambda p: names.get(p, "environment"), "environment"


def _merge(dst: dict, src: dict, sources: dict, path: tuple, where):
    """Deep-merge src into dst, recording where(p) in sources for every key path src sets."""
    for key, value in src.items():
        p, old = path + (key,), dst.get(key)
        if value is None and isinstance(old, dict):
            continue    # an empty section (`slurm:` with everything commented out) changes nothing
        sources[p] = where(p)
        if isinstance(old, dict) and not isinstance(value, dict):
            for stale in [k for k in sources if len(k) > len(p) and k[:len(p)] == p]:
                del sources[stale]
        if isinstance(value, dict):
            if not isinstance(old, dict):
                dst[key] = {}
            _merge(dst[key], value, sources, p, where)
        else:
            dst[key] = copy.deepcopy(value)

# ---------------------------------------------------------------------------------------------- state


class _State:
    def __init__(self, tree: dict, sources: dict, layers: list):
        self.tree, self.sources, self.layers = tree, sources, layers


_STATE: _State | None = None


def _load() -> _State:
    tree: dict = {}
    sources: dict = {}
    layers: list = []
    for data, where, label in _layers():
        _merge(tree, data, sources, (), where)
        layers.append(label)
    problems = _check(tree, sources)
    if problems:
        raise ConfigError(problems)
    return _State(tree, sources, layers)


def _state() -> _State:
    global _STATE
    if _STATE is None:
        _STATE = _load()
    return _STATE


def refresh() -> None:
    """Forget the cached configuration; the next use re-reads every file and the environment."""
    global _STATE
    _STATE = None

# ------------------------------------------------------------------------------------------ the API


def _find(tree: dict, key: str):
    for parts in (key.split("."), key.replace("_", "-").split(".")):
        node = tree
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return tuple(parts)
    return None


def _all_keys(tree: dict, path=()):
    for key, value in tree.items():
        yield _dotted(path + (key,))
        if isinstance(value, dict):
            yield from _all_keys(value, path + (key,))


def _path_or_raise(tree: dict, key: str) -> tuple:
    path = _find(tree, key)
    if path is None:
        raise KeyError(f"no jobqueue config key {key!r}{_did_you_mean(key, _all_keys(tree))}")
    return path


def get(key: str, default=_missing):
    """The value at a dotted key ("scheduler.allowed-failures"), converted by SCHEMA (sizes in bytes,
    durations in seconds). Raises KeyError naming the key if it is missing and no default is given."""
    state = _state()
    if default is not _missing and _find(state.tree, key) is None:
        return default
    path = _path_or_raise(state.tree, key)
    node: Any = state.tree
    spec: Any = SCHEMA
    for part in path:
        node = node[part]
        spec = spec.get(part) if isinstance(spec, dict) else None
    if isinstance(spec, dict):
        return _walk(node, spec, path, lambda p: "", [])
    return copy.deepcopy(node) if spec is None else _convert(spec, node)


def source(key: str) -> str:
    """Where the value at a dotted key came from: "default", "path:line" or an environment variable."""
    state = _state()
    return state.sources.get(_path_or_raise(state.tree, key), "default")


def _profile(state: _State, section: str, name: str) -> dict:
    profiles = state.tree.get("profiles") or {}
    if name not in profiles:
        hint = (_did_you_mean(name, profiles) if profiles
                else "; none are defined (see profiles: in jobqueue.yaml)")
        raise ConfigError(f"no profile {name!r}{hint}")
    kind = profiles[name]["kind"]
    if kind != section and not (kind == "batch" and section in BATCH_SECTIONS):
        at = state.sources.get(("profiles", name, "kind"), "default")
        raise ConfigError(f"{at}: profile {name!r} is for {kind}, it cannot configure {section}; "
                          f"pick a profile of kind {section}")
    return {k: v for k, v in profiles[name].items() if k != "kind"}


def warn_user(message: str, category=FutureWarning) -> None:
    """warnings.warn, attributed to the first caller outside the jobqueue package."""
    import sys
    import warnings

    package = str(Path(__file__).resolve().parent)
    frame: Any = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _renamed(arguments: dict, section: str) -> dict:
    """Arguments with dask-jobqueue's old names replaced by ours, each with a FutureWarning; if
    both names are given, the new one wins."""
    if section not in BATCH_SECTIONS:
        return arguments
    out = dict(arguments)
    for old, new in RENAMED.items():
        old_name, new_name = _underscore(old), _underscore(new)
        value = out.pop(old_name, out.pop(old, None))
        if value is None:
            continue
        if out.get(new_name, out.get(new)) is not None:
            warn_user(f"{section}: {old_name} is dask-jobqueue's old name for {new_name}, and "
                      f"both are given: {old_name}={value!r} is ignored; remove it")
        else:
            warn_user(f"{section}: {old_name} is dask-jobqueue's old name for {new_name}; "
                      f"write {new_name}={value!r}")
            out[new_name] = value
    return out


def _arguments(arguments: dict, schema: dict, section: str, problems: list) -> dict:
    out = {}
    for name, value in _renamed(arguments, section).items():
        key = name.replace("_", "-")
        if value is None:
            continue
        if key in schema:
            out[key] = value
        elif section in BATCH_SECTIONS and _underscore(name) in _compat().ARGUMENTS:
            hint = (f": dask-jobqueue's {_underscore(name)}= has no equivalent here: "
                    f"{_compat().ARGUMENTS[_underscore(name)]}")
            problems.append(f"argument: {section}.{name}: unknown setting{hint}")
        else:
            hint = _did_you_mean(name, [_underscore(k) for k in schema])
            problems.append(f"argument: {section}.{name}: unknown setting{hint}")
    return out


def _compat():
    from . import compat

    return compat


def resolve(section: str, arguments: dict | None = None, profile: str | None = None) -> dict:
    """The settings of one section (config < the profile < arguments that are not None), converted by
    SCHEMA, with Python names (job_extra_directives). Raises ConfigError naming every problem."""
    state = _state()
    schema = SCHEMA.get(section)
    if not isinstance(schema, dict):
        sections = [k for k, v in SCHEMA.items() if isinstance(v, dict)]
        raise ConfigError(f"no config section {section!r}{_did_you_mean(section, sections)}")
    values = copy.deepcopy(state.tree.get(section) or {})
    origin: dict = {}
    problems: list[str] = []
    if profile is not None:
        _merge(values, _profile(state, section, profile), origin, (section,),
               lambda p: state.sources.get(("profiles", profile) + p[1:], f"profile {profile}"))
    _merge(values, _arguments(arguments or {}, schema, section, problems), origin, (section,),
           lambda p: "argument")
    def where(p):
        return origin.get(p) or state.sources.get(p, "default")
    result = _walk(values, schema, (section,), where, problems, rename=_underscore)
    if problems:
        raise ConfigError(problems)
    return result


def _yaml_text(value) -> str:
    import yaml

    return yaml.safe_dump([value], default_flow_style=True, width=10 ** 9).strip()[1:-1]


def _rows(tree: dict, path=()):
    """(key path, text) per line; the path is None for a section's header line."""
    indent = "  " * len(path)
    for key, value in tree.items():
        p = path + (key,)
        if isinstance(value, dict) and value:
            yield None, f"{indent}{_yaml_text(key)}:"
            yield from _rows(value, p)
        else:
            yield p, f"{indent}{_yaml_text(key)}: {_yaml_text(value)}"


def show(sources: bool = False) -> str:
    """The merged configuration as YAML; with sources, each value's line ends with a comment saying
    where it came from."""
    state = _state()
    rows = list(_rows(state.tree))
    if not sources:
        return "".join(text + "\n" for _, text in rows)
    width = min(max(len(text) for _, text in rows), 48)
    head = f"# layers, later wins: {', '.join(state.layers)}\n"
    return head + "".join(f"{text:<{width}}  # {state.sources.get(p, 'default')}\n" if p
                          else text + "\n" for p, text in rows)


def validate_file(path) -> list:
    """Problems in one config file on its own ([] if none), each naming the line, the key and what is
    allowed. Checks syntax, keys, types, units and profiles; never raises for a bad file."""
    try:
        data, lines = _read_yaml(path)
    except ConfigError as e:
        return e.problems
    tree: dict = {}
    sources: dict = {}
    _merge(tree, data, sources, (), _file_where(path, lines))
    return _check(tree, sources)

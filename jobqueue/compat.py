"""dask-jobqueue's config files, read as a layer of ours: pure translation, no file access.

A site that used dask-jobqueue has ``/etc/dask/jobqueue.yaml`` or ``~/.config/dask/jobqueue.yaml``::

    jobqueue:
      slurm:
        name: dask-worker
        cores: 8
        env-extra: ['module load python']

:func:`translate` turns that into our keys (``slurm.job-name``, ``slurm.cores``,
``slurm.job-script-prologue``), remembering each value's line for ``jobqueue config show
--sources``. Its null values mean "not set" and are dropped, as are its sections for systems we
do not run (lsf, htcondor, moab, oar, local) and its keys with no meaning here left at
dask-jobqueue's defaults; any other key we cannot honour is reported as a note (the caller warns),
never silently taken.
"""
from __future__ import annotations

from typing import Any

# dask-jobqueue's key -> ours, where they differ (besides config.RENAMED, its old names).
KEYS = {"name": "job-name", "project": "account"}
# Its keys with no equivalent here, and the values they have by default (a copied default file
# sets them): left at these they change nothing and are dropped without a note.
NO_EQUIVALENT: dict[str, tuple] = {
    "nanny": (True,), "protocol": ("tcp://", "tcp"),
    "security": ({},), "silence-logs": ("error", False), "asynchronous": (False,),
    "scheduler-cls": (), "dashboard-address": (), "host": (), "n-workers": (0,),
    "resource-spec": (), "job-cpu": (), "job-mem": (), "lsf-units": (), "use-stdin": (),
}
SYSTEMS = ("slurm", "pbs", "sge")


def _empty(value) -> bool:
    return value is None or value == [] or value == {} or value == ""


def translate(data: Any, schema: dict, renamed: dict) -> tuple[dict, dict, list]:
    """(our tree, {our key path: its key path}, notes) from a parsed dask-jobqueue file.

    ``schema`` is config.SCHEMA (to know which keys each section has), ``renamed`` maps
    dask-jobqueue's old names to ours. A note is ``(its key path, text, old_name)``: old_name
    is true for an old name read as the new one (a FutureWarning), false for a value ignored.
    """
    tree: dict = {}
    origin: dict = {}
    notes: list = []
    section_map = data.get("jobqueue") if isinstance(data, dict) else None
    if not isinstance(section_map, dict):
        return tree, origin, notes
    for system, body in section_map.items():
        if not isinstance(body, dict):
            continue
        if system not in SYSTEMS:
            if any(not _empty(v) for v in body.values()) and system != "local":
                notes.append((("jobqueue", system), f"jobqueue.{system}: not a batch system "
                              f"jobqueue runs ({', '.join(SYSTEMS)}); ignored", False))
            continue
        for key, value in body.items():
            path = ("jobqueue", system, key)
            ours = _translate_key(system, key, value, schema, renamed, notes, path)
            if ours is not None:
                if ours in (tree.get(system) or {}) and key != ours:
                    continue            # both names given: the new one is kept
                tree.setdefault(system, {})[ours] = value
                origin[(system, ours)] = path
    return tree, origin, notes


def _translate_key(system, key, value, schema, renamed, notes, path):
    """Our key for one of its keys, or None (dropped, with a note if that loses a setting)."""
    if _empty(value):
        return None
    ours = KEYS.get(key) or renamed.get(key) or key
    if ours in schema[system]:
        if key in renamed or key == "project":
            notes.append((path, f"jobqueue.{system}.{key} is dask-jobqueue's old name for "
                          f"{ours}; read as {system}.{ours}", True))
        return ours
    if value in NO_EQUIVALENT.get(key, ()):
        return None
    why = ("jobqueue has no such setting" if key in NO_EQUIVALENT
           else "not a dask-jobqueue setting jobqueue knows")
    notes.append((path, f"jobqueue.{system}.{key}: {why}; ignored (value {value!r})", False))
    return None

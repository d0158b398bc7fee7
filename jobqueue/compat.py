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
never silently taken. A section of its own name (``jobqueue.my-gpus``, which dask-jobqueue uses
with ``SLURMCluster(config_name="my-gpus")``) becomes the profile ``profiles.my-gpus`` of kind
``batch``, which any batch cluster takes with ``config_name=`` or ``profile=``.
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
# Its sections for systems we do not run; any other section is one of its own, for
# ``config_name=``, read as a profile of kind batch.
OTHER_SYSTEMS = ("lsf", "htcondor", "moab", "oar", "local")
# Arguments of dask-jobqueue's clusters that have no equivalent argument here, and what to do
# instead: the error for an unknown setting says this rather than "did you mean".
_TLS = ("TLS is configured, not passed: set security.protocol: tls in the jobqueue config "
        "(with security.tls-ca-file, tls-cert and tls-key, or none of them for a temporary "
        "certificate per cluster)")
ARGUMENTS = {
    "security": _TLS,
    "protocol": _TLS,
    "loop": "clusters run on jobqueue's own event-loop thread; there is no loop argument",
}


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
        if system in OTHER_SYSTEMS:
            if any(not _empty(v) for v in body.values()) and system != "local":
                notes.append((("jobqueue", system), f"jobqueue.{system}: not a batch system "
                              f"jobqueue runs ({', '.join(SYSTEMS)}); ignored", False))
            continue
        if system not in SYSTEMS:
            _profile(system, body, schema, renamed, tree, origin, notes)
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


def _profile(name, body, schema, renamed, tree, origin, notes):
    """A section of its own (``jobqueue.my-gpus``, used with ``config_name="my-gpus"``) as
    the profile ``profiles.my-gpus`` of kind batch."""
    batch = {name: {k: v for s in reversed(SYSTEMS) for k, v in schema[s].items()}}
    profile: dict = {}
    for key, value in body.items():
        path = ("jobqueue", name, key)
        ours = _translate_key(name, key, value, batch, renamed, notes, path)
        if ours is not None and not (ours in profile and key != ours):
            profile[ours] = value
            origin[("profiles", name, ours)] = path
    if profile:
        tree.setdefault("profiles", {})[name] = {"kind": "batch", **profile}
        origin[("profiles", name)] = origin[("profiles", name, "kind")] = ("jobqueue", name)


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

"""Every public parameter is documented, once: config keys in jobqueue.yaml, other arguments in
jobqueue.params.ARGUMENTS or the function's own docstring; cluster signatures equal their config
section's keys."""
import inspect
import pydoc

import pytest
import yaml

import jobqueue
from jobqueue import config, params

# (class, its config section, the other config sections its parameters may come from)
CLUSTERS = [("SLURMCluster", "slurm"), ("PBSCluster", "pbs"), ("SGECluster", "sge"),
            ("LocalCluster", "local"), ("SSHCluster", "ssh"), ("KubeCluster", "kubernetes")]


def _public():
    """(qualified name, callable whose parameters are public, the docstring describing them)
    for every public function, class constructor and public method reachable from
    jobqueue.__all__ (exceptions excepted: users catch them, they do not build them)."""
    out = []
    for name in jobqueue.__all__:
        obj = getattr(jobqueue, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue
        if not inspect.isclass(obj):
            out.append((name, obj, obj.__doc__))
            continue
        out.append((name, obj.__init__, obj.__doc__))
        for attr, value in inspect.getmembers(obj):
            if attr.startswith("_"):
                continue
            if isinstance(value, property):
                out.append((f"{name}.{attr}", None, value.__doc__))
            elif inspect.isfunction(value):             # named where it is defined, once
                out.append((value.__qualname__, value, value.__doc__))
    return sorted(set(out), key=lambda row: row[0])


def _parameters(function):
    if function is None:
        return []
    return [p for p in inspect.signature(function).parameters.values()
            if p.name not in ("self", "cls")]


def test_every_public_parameter_is_documented():
    problems = []
    for name, function, doc in _public():
        if not (doc or "").strip():
            problems.append(f"{name}: no docstring")
            continue
        described = params.documented(doc)
        for p in _parameters(function):
            if p.name not in described:
                problems.append(f"{name}: parameter {p.name} is not documented")
    assert not problems, "\n".join(problems + [
        "describe a config key in jobqueue.yaml (the comment after it), another argument in "
        "jobqueue.params.ARGUMENTS or in the docstring's Parameters section"])


def test_the_walk_covers_the_api():
    names = {name for name, _, _ in _public()}
    assert {"SLURMCluster", "LocalCluster", "Client", "Client.submit", "Client.map",
            "DaskMixin.compute", "Future.result", "JobQueueCluster.scale", "Cluster.adapt",
            "as_completed", "wait", "progress"} <= names


@pytest.mark.parametrize("cls_name,section", CLUSTERS)
def test_cluster_parameters_are_its_config_keys(cls_name, section):
    """A cluster's explicit keyword parameters are exactly its config section's keys, plus
    arguments documented as not being configuration; each with the annotation of its type."""
    cls = getattr(jobqueue, cls_name)
    explicit = {p.name: p for p in _parameters(cls.__init__)
                if p.kind is not inspect.Parameter.VAR_KEYWORD}
    keys = {k.replace("-", "_"): spec for k, spec in config.SCHEMA[section].items()}
    missing = sorted(set(keys) - set(explicit))
    assert not missing, f"{cls_name} has no keyword parameter for {section} keys {missing}"
    others = set(explicit) - set(keys)          # not configuration: name=, profile=, ...
    undocumented = sorted(others - params.documented(cls.__doc__))
    assert not undocumented, f"{cls_name}: {undocumented} are neither {section} keys nor documented"
    for name, spec in keys.items():
        want = params.annotation(spec)
        got = explicit[name].annotation
        got = got if isinstance(got, str) else inspect.formatannotation(got)
        # it may accept more (SSHCluster: a list of connect_options, one per host)
        assert set(want.split(" | ")) <= set(got.split(" | ")), \
            f"{cls_name}({name}): annotated {got}, its type {spec} wants {want}"
        assert explicit[name].default is None, f"{cls_name}({name}): defaults to the config"


@pytest.mark.parametrize("cls_name,base,passed_on_by_the_class", [
    ("SLURMCluster", "JobQueueCluster", set()), ("PBSCluster", "JobQueueCluster", set()),
    ("SGECluster", "JobQueueCluster", set()), ("LocalCluster", "Cluster", {"temp_directory"}),
    # SSHCluster: where its scheduler listens comes from hosts[0] and scheduler_options
    ("SSHCluster", "Cluster", {"host", "scheduler_port", "interface", "temp_directory"})])
def test_base_class_arguments_are_explicit_in_the_public_class(cls_name, base,
                                                               passed_on_by_the_class):
    """An argument a base constructor gains (n_workers=, scheduler_file=...) is a keyword
    argument of the public classes too, not only reachable through their **kwargs."""
    import importlib

    cls = getattr(jobqueue, cls_name)
    module = "jobqueue.batch.job" if base == "JobQueueCluster" else "jobqueue.deploy.cluster"
    base_cls = getattr(importlib.import_module(module), base)
    wanted = {p.name for p in _parameters(base_cls.__init__)
              if p.kind is not inspect.Parameter.VAR_KEYWORD} - passed_on_by_the_class
    missing = sorted(wanted - {p.name for p in _parameters(cls.__init__)})
    assert not missing, f"{cls_name} does not name {base}'s arguments {missing}"


def test_every_config_key_has_a_description_and_its_default():
    """The comment parser reads every key jobqueue.yaml sets, with the value YAML reads."""
    data = yaml.safe_load(config.DEFAULTS_FILE.read_text())
    entries = params.config_entries()

    def leaves(tree, path=()):
        for key, value in tree.items():
            spec = config.SCHEMA
            for part in path + (key,):
                spec = spec.get(part) if isinstance(spec, dict) else None
            if isinstance(value, dict) and isinstance(spec, dict):
                yield from leaves(value, path + (key,))
            else:
                yield ".".join(path + (key,)), value

    problems = []
    for key, value in leaves(data):
        entry = entries.get(key)
        if entry is None or not entry.description:
            problems.append(f"jobqueue.yaml: {key} has no description comment")
        elif yaml.safe_load(entry.default) != value:
            problems.append(f"jobqueue.yaml: {key}: read {entry.default!r}, YAML says {value!r}")
    assert not problems, "\n".join(problems)


def test_comments_continue_on_aligned_lines_and_quotes_hide_hashes():
    text = ("slurm:\n"
            "  shebang: \"#!/bin/sh\"   # first line\n"
            "  walltime: 1h            # time limit per job,\n"
            "                          # continued here\n"
            "  # a section note, not walltime's\n"
            "  queue: null\n")
    parsed = params._parse(text)
    assert parsed[("slurm", "shebang")] == ('"#!/bin/sh"', "first line")
    assert parsed[("slurm", "walltime")] == ("1h", "time limit per job, continued here")
    assert parsed[("slurm", "queue")] == ("null", "")


def test_document_takes_descriptions_from_config_arguments_and_the_docstring():
    def f(cores=None, workers=None, own=1, nowhere=None):
        """Do something.

        Parameters
        ----------
        own : int
            Described here.

        Examples
        --------
        >>> f()
        """
    params.document("slurm")(f)
    doc = f.__doc__
    assert params.documented(doc) == {"cores", "workers", "own"}
    entry = params.config_entries()["slurm.cores"]
    assert entry.description[1:] in doc.replace("\n    ", " ")
    assert "``slurm.cores``" in doc
    # sections stay in numpydoc order: Parameters before Examples
    assert doc.index("Parameters\n---") < doc.index("Examples\n---")
    # in the signature's order, wherever each was described
    assert doc.index("cores : int") < doc.index("workers : ") < doc.index("own : int")


@pytest.mark.parametrize("cls_name", ["SLURMCluster", "LocalCluster", "Client"])
def test_help_lists_every_parameter_with_type_and_default(cls_name):
    cls = getattr(jobqueue, cls_name)
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for p in _parameters(cls.__init__):
        star = "**" if p.kind is inspect.Parameter.VAR_KEYWORD else ""
        assert f"{star}{p.name} : " in text or f"{star}{p.name}\n" in text, p.name
    if cls_name == "SLURMCluster":
        assert "walltime : float or str (a duration such as 01:30:00 or 90m" in text
        assert 'Config key ``slurm.walltime``, package default ``"00:30:00"``.' in text
        signature = str(inspect.signature(cls))
        assert "cores: int | None = None" in signature and "memory: int | str | None" in signature

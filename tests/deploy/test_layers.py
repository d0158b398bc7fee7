"""The house at a glance: which part of jobqueue may import or reach into which.

Cluster managers (jobqueue.deploy, jobqueue.batch) talk to the scheduler only through
jobqueue.core.scheduler_api; deploy/ knows nothing of batch systems. Read from the source with
ast, so an import inside a function counts as much as one at the top.
"""
import ast
from pathlib import Path

import jobqueue

PACKAGE = Path(jobqueue.__file__).parent
MANAGERS = ("jobqueue.deploy", "jobqueue.batch")
SCHEDULER_INTERNALS = {"worker_streams", "client_streams", "server"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(prefix: str) -> dict:
    """{module name: parsed source} of every module under a package prefix."""
    root = PACKAGE.parent.joinpath(*prefix.split("."))
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(root.rglob("*.py"))}


def imports(name: str, tree: ast.AST) -> set:
    """Every module ``name`` imports, absolute, wherever in the file the import is."""
    package = name if tree_is_package(name) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            found.add(prefix)
            found |= {f"{prefix}.{a.name}" for a in node.names}   # `from . import script`
    return found


def tree_is_package(name: str) -> bool:
    return PACKAGE.parent.joinpath(*name.split("."), "__init__.py").exists()


def arrows(sources: dict, target: str) -> list:
    return sorted(f"{name} imports {imported}" for name, tree in sources.items()
                  for imported in imports(name, tree)
                  if imported == target or imported.startswith(target + "."))


def test_the_walker_sees_relative_and_lazy_imports():
    tree = ast.parse("from ..core import loop\nfrom . import script\n"
                     "def f():\n    from ..core.scheduler_state import SchedulerState\n")
    assert imports("jobqueue.batch.job", tree) >= {
        "jobqueue.core.loop", "jobqueue.batch.script", "jobqueue.core.scheduler_state"}
    assert arrows({"jobqueue.batch.job": tree}, "jobqueue.core.scheduler_state") == [
        "jobqueue.batch.job imports jobqueue.core.scheduler_state",
        "jobqueue.batch.job imports jobqueue.core.scheduler_state.SchedulerState"]


def test_cluster_managers_do_not_import_the_scheduler_state():
    managers = {k: v for prefix in MANAGERS for k, v in modules(prefix).items()}
    assert len(managers) > 10
    assert arrows(managers, "jobqueue.core.scheduler_state") == []
    assert arrows(managers, "jobqueue.core.scheduler") == []   # only through scheduler_api


def test_deploy_does_not_import_batch():
    assert arrows(modules("jobqueue.deploy"), "jobqueue.batch") == []


def test_cluster_managers_do_not_reach_into_the_scheduler():
    """No attribute of the scheduler's insides (its streams, the in-process server) is read
    outside core/: what a manager needs is a method of SchedulerAPI."""
    reached = sorted(f"{name}: .{node.attr} (line {node.lineno})"
                     for prefix in MANAGERS for name, tree in modules(prefix).items()
                     for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and node.attr in SCHEDULER_INTERNALS)
    assert reached == []

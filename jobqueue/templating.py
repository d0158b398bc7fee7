"""Rendering the jinja2 templates a cluster makes its jobs from: batch job scripts
(``templates/*.sh.j2``, batch/script.py) and Kubernetes pods (``templates/*.yaml.j2``,
deploy/pods.py). Pure: text in, text out (jinja2 reads the template files).

A template is a packaged name (``slurm.sh.j2``) or a site's path; a site template may include
the packaged ones. Undefined variables are errors, the output is deterministic, and every error
says which template, where, and (for an unknown variable) which variables there are.
"""
from __future__ import annotations

import functools
from pathlib import Path

PACKAGE_TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.lru_cache(maxsize=16)
def _environment(directory: str, filters: tuple, overrides: tuple):
    import jinja2

    search = [directory]
    if directory != str(PACKAGE_TEMPLATES):
        search.append(str(PACKAGE_TEMPLATES))      # so site templates can include ours
    loader: jinja2.BaseLoader = jinja2.FileSystemLoader(search)
    if overrides:
        loader = jinja2.ChoiceLoader([jinja2.DictLoader(dict(overrides)), loader])
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    env.filters.update(filters)
    return env


def render(template: str, ctx: dict, *, what: str, variables: str, error=ValueError,
           filters=None, overrides=None) -> str:
    """Render ``template`` (a packaged name or a site path) with ``ctx``.

    ``what`` names the kind of template in errors ("job-script template"), ``variables`` lists
    the variables a template sees, ``error`` is the exception class raised, ``filters``
    ``{name: function}`` the extra jinja2 filters, ``overrides`` ``{name: template text}``
    replaces templates it includes."""
    import jinja2

    path = Path(template)
    if path.is_absolute() or len(path.parts) > 1:
        directory, name = str(path.resolve().parent), path.name
    else:
        directory, name = str(PACKAGE_TEMPLATES), template
    env = _environment(directory, tuple(sorted((filters or {}).items())),
                       tuple(sorted((overrides or {}).items())))
    try:
        return env.get_template(name).render(ctx)
    except jinja2.TemplateSyntaxError as e:
        raise error(f"{what} {e.filename or template}, line {e.lineno}: {e.message}") from None
    except jinja2.UndefinedError as e:
        raise error(f"{what} {template}: {e.message}; the variables are:\n{variables}") from None
    except jinja2.TemplateNotFound as e:
        looked = directory + (f", {PACKAGE_TEMPLATES}" if directory != str(PACKAGE_TEMPLATES)
                              else "")
        raise error(f"{what} {template}: cannot find {e.name} (looked in {looked})") from None

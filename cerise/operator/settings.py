"""The operator's settings of the file exchange and of project sources, from its
environment, checked at start-up (see docs/operating.md).

* ``CERISE_EXCHANGE_DIR`` / ``CERISE_EXCHANGE_URL``: the file exchange
  (`cerise.model.exchange.Layout`). One exchange directory holds one namespace's files:
  an operator watching more than one namespace (kopf's ``--all-namespaces``, several
  ``--namespace`` or a pattern) needs ``{namespace}`` in the URL, which gives each
  namespace a directory of its own, unless ``CERISE_SHARED_EXCHANGE=1`` says that one
  user owns every namespace it watches (``./dev up``, the tests). The apiserver refuses a
  shared exchange in cluster mode likewise.
* ``CERISE_PROJECT_PATHS``: the directory that Specialisation ``path`` sources must lie
  in (after following links); `DEFAULT_PROJECT_PATHS`, the image's copy, if unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from cerise.model.exchange import Layout

DEFAULT_PROJECT_PATHS = "/opt/cerise/specialisations"
_PATTERN = frozenset("*?[,!")
"""Characters that make a kopf namespace argument a pattern (globs, lists, negations)."""


class InvalidSettings(ValueError):
    """A setting the operator cannot work with; the message says which and why."""


def several_namespaces(clusterwide: bool, namespaces: Sequence[str]) -> bool:
    """Whether kopf's namespace options can take in more than one namespace."""
    return clusterwide or len(namespaces) != 1 or bool(_PATTERN & set(namespaces[0]))


def watched_namespaces() -> tuple[bool, tuple[str, ...]] | None:
    """kopf's ``--all-namespaces`` and ``--namespace`` options, when it was started by its
    command line (None otherwise: then nothing is known)."""
    context = click.get_current_context(silent=True)
    if context is None or "clusterwide" not in context.params:
        return None
    return bool(context.params["clusterwide"]), tuple(context.params.get("namespaces") or ())


def exchange(environ: Mapping[str, str],
             watched: tuple[bool, tuple[str, ...]] | None) -> Layout:
    """The file exchange; InvalidSettings if one directory would hold several namespaces."""
    layout = Layout(root=Path(environ.get("CERISE_EXCHANGE_DIR", "/var/lib/cerise/files")),
                    url=environ.get("CERISE_EXCHANGE_URL", "http://localhost:29593/files"))
    shared_ok = environ.get("CERISE_SHARED_EXCHANGE", "").strip().lower() in ("1", "true")
    if watched is not None and several_namespaces(*watched) and not layout.per_namespace \
            and not shared_ok:
        raise InvalidSettings(
            f"this operator watches {'all namespaces' if watched[0] else 'several namespaces'}"
            f" but would keep their files in one exchange directory ({layout.root}): put "
            "{namespace} in CERISE_EXCHANGE_URL (e.g. https://cerise.example.org/ns/"
            "{namespace}/files) to give each namespace its own, watch one namespace, or set "
            "CERISE_SHARED_EXCHANGE=1 if one user owns every namespace watched")
    return layout


def project_paths(environ: Mapping[str, str] = os.environ) -> Path:
    """The directory that `path` sources must lie in, links followed."""
    return Path(os.path.realpath(environ.get("CERISE_PROJECT_PATHS") or DEFAULT_PROJECT_PATHS))

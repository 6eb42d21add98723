"""Member names and link targets: where a member goes in the output, checked before
anything is written."""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Mapping

from dropfetch.errors import UnsafeArchiveError
from dropfetch.names import has_control

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_LINK_TARGET",
    "check_link_target",
    "normalise_name",
    "resolve_link",
    "unsafe_type",
]

MAX_NAME_BYTES = 4096
MAX_COMPONENT_BYTES = 255
MAX_LINK_TARGET = 4096  # PATH_MAX: a target must be shorter
MAX_LINK_FOLLOWS = 40  # as Linux's MAXSYMLINKS
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def normalise_name(name: str, *, backslash_is_separator: bool = False) -> str | None:
    """The member's path relative to the output, '/'-separated; ``None`` for the root.

    Raises :class:`UnsafeArchiveError` for absolute names, drive letters, ``..``
    components, control characters (:data:`dropfetch.names.CONTROL`) and names too long
    for a filesystem.
    """
    if has_control(name):
        raise UnsafeArchiveError(f"unsafe member '{name}': control characters in its name")
    shown = name
    if backslash_is_separator:
        name = name.replace("\\", "/")
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name):
        raise UnsafeArchiveError(f"unsafe member '{shown}': absolute path")
    try:
        raw = os.fsencode(name)
    except UnicodeError:
        raise UnsafeArchiveError(f"unsafe member '{shown}': undecodable name") from None
    if len(raw) > MAX_NAME_BYTES:
        raise UnsafeArchiveError(f"unsafe member '{shown[:80]}'...: name too long")
    parts = [_component(part, shown) for part in name.split("/") if part not in ("", ".")]
    return "/".join(parts) if parts else None


def _component(part: str, shown: str) -> str:
    # A '..' hidden behind Windows separators is refused too, in case the output is
    # later read through a share.
    if part == ".." or ".." in part.split("\\"):
        raise UnsafeArchiveError(f"unsafe member '{shown}': '..' in its path")
    if len(os.fsencode(part)) > MAX_COMPONENT_BYTES:
        raise UnsafeArchiveError(f"unsafe member '{shown[:80]}': a path component too long")
    return part


def unsafe_type(name: str, described: str) -> UnsafeArchiveError:
    """The error for a member of a type never written (``described``: "a FIFO", "a
    block device", ...): devices, FIFOs and sockets are refused, whatever the format."""
    return UnsafeArchiveError(f"unsafe member '{name}': {described} is not allowed")


def check_link_target(name: str, target: str) -> None:
    """Refuse a symbolic link's target that is too long, empty, absolute, a drive
    letter, or holds a control character (:data:`dropfetch.names.CONTROL`)."""
    size = len(target.encode("utf-8", "surrogateescape"))
    if size >= MAX_LINK_TARGET:
        raise UnsafeArchiveError(
            f"unsafe member '{name}': its link target is too long ({size} bytes; a "
            f"filesystem allows {MAX_LINK_TARGET - 1})"
        )
    if (
        not target
        or has_control(target)
        or target.startswith(("/", "\\"))
        or _DRIVE_RE.match(target)
    ):
        raise UnsafeArchiveError(f"link {name} -> {target} points outside the output")


def resolve_link(links: Mapping[str, str], link: str) -> list[str]:
    """Where ``link`` leads in the final tree of symbolic ``links`` (path -> target, all
    relative to the output), as path components; raises :class:`UnsafeArchiveError` if
    it leaves the output at any step. Missing components are walked lexically, which
    covers more than the kernel would ever reach.

    A link met again while its own target is still being resolved (``self ->
    self``, ``a -> b`` with ``b -> a``) is a loop: each link resolves from its own
    directory, so the walk would repeat itself for ever; the kernel says ELOOP on
    any system and such a link leads nowhere (unzip, bsdtar and 7z keep it). The walk
    then goes on past it as past a missing directory, which is also what
    ``os.path.realpath`` does with a loop: a loop followed by '..' past the root
    (``a -> b/../..`` with ``b -> a``) fails, so no resolver that reads the rest of
    the path lexically is led outside either.
    """
    stack = link.split("/")[:-1]
    done = object()  # marks the end of a link's target in ``todo``
    todo: deque[str | tuple[object, str]] = deque(links[link].split("/"))
    todo.append((done, link))
    resolving = {link}
    follows = 1
    while todo:
        part = todo.popleft()
        if isinstance(part, tuple):
            resolving.discard(part[1])
            continue
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                raise UnsafeArchiveError(f"link {link} -> {links[link]} points outside the output")
            stack.pop()
            continue
        candidate = "/".join([*stack, part])
        target = links.get(candidate)
        if target is None or candidate in resolving:
            stack.append(part)  # a missing link, or a loop: walked on lexically (see above)
            continue
        follows += 1
        if follows > MAX_LINK_FOLLOWS:
            raise UnsafeArchiveError(f"link {link} -> {links[link]}: too many levels of links")
        resolving.add(candidate)
        todo.appendleft((done, candidate))
        todo.extendleft(reversed(target.split("/")))
    return stack

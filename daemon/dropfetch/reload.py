"""SIGHUP: which keys of the configuration changed, and which of them need a restart.

Pure functions over two :class:`Config` values, compared field by field (nested
sections included, as dotted keys such as ``lease.host_id``). A key needs a restart
when a running daemon cannot take it on wholly:

- ``inbox``, ``outbox``, ``work_dir``, ``recursive``, ``observer``: the watched tree
  and the directories every component holds paths into;
- ``create_dirs``: only read when the daemon starts;
- ``http.*``: the front end's socket is bound (and its token read) at start;
- ``lease.host_id``: this host's name in its held leases, its staging tokens and its
  sidecars; a change half-way would make this host's own leases look foreign;
- ``log.format``: the log handler's formatter is chosen at start.

Everything else (workers, intervals, limits, hooks, ``log.level``, ``lease.ttl``, ...)
is applied by the component that uses it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dropfetch.config import Config

__all__ = ["RESTART_KEYS", "changed_keys", "keep_old", "needs_restart", "split_reload"]

RESTART_KEYS = (
    "inbox",
    "outbox",
    "work_dir",
    "recursive",
    "observer",
    "create_dirs",
    "http",
    "lease.host_id",
    "log.format",
)
_IGNORED = ("source",)


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two configs (or two sections)."""
    changed: list[str] = []
    for f in dataclasses.fields(old):
        key = prefix + f.name
        if key in _IGNORED:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if dataclasses.is_dataclass(a) and not isinstance(a, type):
            changed.extend(changed_keys(a, b, key + "."))
        elif a != b:
            changed.append(key)
    return changed


def needs_restart(key: str) -> bool:
    """Whether the dotted ``key`` is (inside) one of :data:`RESTART_KEYS`."""
    return any(key == r or key.startswith(r + ".") for r in RESTART_KEYS)


def keep_old(new: Any, old: Any, keys: list[str]) -> Any:
    """``new`` with the old value of each dotted key of ``keys``."""
    top: dict[str, list[str]] = {}
    for key in keys:
        head, _, rest = key.partition(".")
        top.setdefault(head, []).append(rest)
    changes = {}
    for head, rests in top.items():
        if any(not r for r in rests):
            changes[head] = getattr(old, head)
        else:
            changes[head] = keep_old(getattr(new, head), getattr(old, head), rests)
    return dataclasses.replace(new, **changes)


def split_reload(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """What a reload from ``old`` to ``new`` does: the config to run with (``new`` with
    the old value of every key that needs a restart), the keys applied, and the keys
    kept until a restart."""
    changed = changed_keys(old, new)
    restart = [k for k in changed if needs_restart(k)]
    applied = [k for k in changed if not needs_restart(k)]
    return keep_old(new, old, restart), applied, restart

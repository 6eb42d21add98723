"""Shared fixtures. Helpers live in tests/*.py modules (tests/ is on sys.path)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads of its own running (watchdog's habit)."""
    before = set(threading.enumerate())
    yield
    deadline_threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in deadline_threads:
        t.join(timeout=5)
    leaked = [t.name for t in deadline_threads if t.is_alive() and not t.daemon]
    assert not leaked, f"threads leaked by the test: {leaked}"


from faultserver import fault_server  # noqa: E402
from harness import make_daemon  # noqa: E402

__all__ = ["fault_server", "make_daemon"]

"""Shared fixtures. Helpers live in tests/*.py modules (tests/ is on sys.path)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from faultserver import fault_server
from harness import make_daemon, new_threads

__all__ = ["fault_server", "make_daemon"]

# Property tests share 2 cores with the rest of a parallel run: slow data generation is
# the machine's load, not the strategy's fault (tests' own @settings add to this).
settings.register_profile("dropfetch", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("dropfetch")

LEAK_JOIN = 10.0  # seconds, for all of a test's threads together
# A test that uses one of these fixtures (directly or through another fixture) gets the
# marker: `make test-fast` (-m "not e2e and not netshare and not slow") leaves it out.
# Tests that start the daemon some other way carry @pytest.mark.e2e themselves.
FIXTURE_MARKERS = {"make_daemon": "e2e", "netshare": "netshare"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = getattr(item, "fixturenames", ())
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in used:
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves threads of its own running, daemon threads included
    (as watchdog's own suite does): a component stopped without joining its threads
    is a component that may still be writing when the next one starts."""
    before = set(threading.enumerate())
    yield
    leaked = new_threads(before, LEAK_JOIN)
    assert not leaked, "threads leaked by the test: " + ", ".join(
        f"{t.name}{' (daemon)' if t.daemon else ''}" for t in leaked
    )

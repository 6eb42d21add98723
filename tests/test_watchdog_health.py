"""WATCHDOG=1 is sent only while the observer, the workers and the leases are healthy."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from dropfetch.config import config_from_mapping
from dropfetch.daemon import Daemon
from harness import wait_for


@pytest.mark.e2e  # the whole daemon, in this process
def test_watchdog_pings_stop_when_a_component_is_unhealthy(tmp_path, monkeypatch):
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    config = config_from_mapping(
        {"inbox": "in", "outbox": "out", "workers": 1, "min_free_space": 0}, base=tmp_path
    )
    daemon = Daemon(config)
    messages: list[str] = []

    def drain() -> list[str]:
        """What arrived in the last 0.3 s (pings come every 0.1 s)."""
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            try:
                messages.append(sock.recv(4096).decode())
            except TimeoutError:
                break
        return messages

    runner = threading.Thread(target=daemon.run, name="daemon-under-test")
    runner.start()
    try:
        wait_for(lambda: any("WATCHDOG=1" in m for m in drain()), message="a first WATCHDOG=1")
        assert any(m.startswith("READY=1") for m in messages)
        messages.clear()  # READY=1 had a STATUS= without a ping
        # the watcher dies (e.g. its thread crashed): pings stop, STATUS goes on
        monkeypatch.setattr(daemon.watcher, "healthy", lambda: False)

        def since_change() -> list[str]:
            # one main-loop thread sends them in order: the first status without a ping
            # was decided after the change, and no ping may follow it
            drain()
            unpinged = [
                i for i, m in enumerate(messages) if "STATUS=" in m and "WATCHDOG=1" not in m
            ]
            return messages[unpinged[0] :] if unpinged else []

        unhealthy = wait_for(
            lambda: len(s := since_change()) >= 5 and s, message="status messages while unhealthy"
        )
        assert not any("WATCHDOG=1" in m for m in unhealthy), unhealthy
        monkeypatch.undo()
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        wait_for(
            lambda: any("WATCHDOG=1" in m for m in drain()), message="pings again once healthy"
        )
        messages.clear()
    finally:
        daemon.request_stop()
        runner.join(timeout=60)
        drain()
        sock.close()
    assert not runner.is_alive()
    assert any("STOPPING=1" in m for m in messages), messages


def _queue_full(address: str) -> bool:
    """True once a datagram to ``address`` would block: its receive queue is full."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.sendto(b"STATUS=probe", socket.MSG_DONTWAIT, address)
        except BlockingIOError:
            return True
    return False


def test_a_notify_socket_that_is_never_read_does_not_block_a_stop(make_daemon, tmp_path):
    """sd_notify datagrams must not block: a full receive queue (nobody reading) used to
    freeze the main loop in sendto(), and SIGTERM then never stopped the daemon."""
    address = str(tmp_path / "deaf.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)  # bound, never read: its queue fills after a few datagrams
    try:
        d = make_daemon(start=False)
        d.start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})  # a ping every 20 ms
        wait_for(lambda: _queue_full(address), message="the socket's queue to fill up")
        # a daemon stuck in sendto() would never stop: d.stop() times out then
        assert d.stop() == 0
    finally:
        sock.close()

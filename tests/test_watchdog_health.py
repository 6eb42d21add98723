"""WATCHDOG=1 is sent only while the observer, the workers and the leases are healthy."""

from __future__ import annotations

import socket
import threading
import time

from dropfetch.config import config_from_mapping
from dropfetch.daemon import Daemon
from harness import wait_for


def test_watchdog_pings_stop_when_a_component_is_unhealthy(tmp_path, monkeypatch):
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    config = config_from_mapping({"inbox": "in", "outbox": "out", "workers": 1,
                                  "min_free_space": 0}, base=tmp_path)
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
        wait_for(lambda: any("WATCHDOG=1" in m for m in drain()), timeout=10,
                 message="a first WATCHDOG=1")
        assert any(m.startswith("READY=1") for m in messages)
        # the watcher dies (e.g. its thread crashed): pings stop, STATUS goes on
        monkeypatch.setattr(daemon.watcher, "healthy", lambda: False)
        drain()  # what was sent before the change
        messages.clear()
        wait_for(lambda: sum("STATUS=" in m for m in drain()) >= 5, timeout=10,
                 message="status messages while unhealthy")
        assert not any("WATCHDOG=1" in m for m in messages), messages
        monkeypatch.undo()
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        wait_for(lambda: any("WATCHDOG=1" in m for m in drain()), timeout=10,
                 message="pings again once healthy")
        messages.clear()
    finally:
        daemon.request_stop()
        runner.join(timeout=20)
        drain()
        sock.close()
    assert not runner.is_alive()
    assert any("STOPPING=1" in m for m in messages), messages


def test_a_notify_socket_that_is_never_read_does_not_block_a_stop(make_daemon, tmp_path):
    """sd_notify datagrams must not block: a full receive queue (nobody reading) used to
    freeze the main loop in sendto(), and SIGTERM then never stopped the daemon."""
    address = str(tmp_path / "deaf.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)  # bound, never read: its queue fills after a few datagrams
    try:
        d = make_daemon(start=False)
        d.start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "40000"})  # a ping every 20 ms
        time.sleep(1.0)  # far more pings than the socket's queue holds
        started = time.monotonic()
        assert d.stop(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        sock.close()

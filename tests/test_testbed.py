"""The test suite's own machinery: the thread-leak guard and what `make test` installs."""

from __future__ import annotations

import re
import threading

from harness import ROOT, new_threads


def test_leak_guard_counts_daemon_threads_too():
    before = set(threading.enumerate())
    release = threading.Event()
    threads = [
        threading.Thread(target=release.wait, name=f"left-{daemon}", daemon=daemon)
        for daemon in (True, False)
    ]
    for t in threads:
        t.start()
    try:
        assert {t.name for t in new_threads(before, timeout=0.2)} == {"left-True", "left-False"}
    finally:
        release.set()
    # threads that end within the timeout are joined, not reported
    assert new_threads(before, timeout=30) == []


def _test_debs() -> list[str]:
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^TEST_DEBS\s*:=\s*(.+)$", makefile, re.M)
    assert match, "the Makefile names the Debian packages of the tests in TEST_DEBS"
    return match.group(1).split()


def test_make_test_installs_the_bed_packages_and_no_ssh_server():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test:.*\btest-deps\b", makefile, re.M), "make test runs test-deps"
    assert {"sshfs", "openssh-sftp-server", "fuse3"} <= set(_test_debs())
    recipe = makefile.split("\ntest-deps:", 1)[1].split("\n\n", 1)[0]
    # openssh-sftp-server recommends openssh-server
    assert "apt-get update" in recipe and "--no-install-recommends" in recipe
    code = [line for line in makefile.splitlines() if not line.lstrip().startswith("#")]
    for name, text in [
        ("Makefile", "\n".join(code)),
        (".ci/run", (ROOT / ".ci/run").read_text()),
        ("pyproject.toml", (ROOT / "pyproject.toml").read_text()),
    ]:
        assert "openssh-server" not in text, name
    # the tests themselves install nothing and start no sshd
    for path in sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "tests").glob("*.sh")):
        if path.name != "test_testbed.py":
            text = path.read_text()
            assert "apt-get" not in text and "/usr/sbin/sshd" not in text, path


def test_readme_lists_every_system_package_make_test_installs():
    readme = (ROOT / "README.md").read_text()
    for deb in _test_debs():
        assert f"`{deb}`" in readme, deb

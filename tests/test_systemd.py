"""The systemd unit and its snippets (SPEC §10), checked by systemd's own tools when
they are installed, and against the contract's list of settings always."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dropfetch.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "dropfetch.service"
SYSUSERS = ROOT / "systemd" / "dropfetch.sysusers"
TMPFILES = ROOT / "systemd" / "dropfetch.tmpfiles"
GUIDE = ROOT / "docs" / "SYSTEMD.md"


def _settings(text: str) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd allows repeated keys)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def _seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|min|h)?", value):
        total += float(number) * {"ms": 0.001, "": 1, "s": 1, "min": 60, "h": 3600}[unit]
    return total


def _venv_dropfetch() -> Path:
    exe = Path(sys.executable).parent / "dropfetch"
    if not exe.exists():
        found = shutil.which("dropfetch")
        if found is None:
            pytest.skip("the dropfetch console script is not installed")
        exe = Path(found)
    return exe


def test_unit_has_what_the_contract_asks_for():
    s = _settings(UNIT.read_text())

    def one(key: str) -> str:
        assert key in s, f"{key} missing from {UNIT.name}"
        return s[key][-1]

    assert one("Service.Type") == "notify"
    assert _seconds(one("Service.WatchdogSec")) > 0
    assert one("Service.Restart") == "on-failure"
    assert _seconds(one("Service.RestartSec")) >= 1  # not the 100 ms default
    assert one("Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Service.User") == "dropfetch"
    assert "Service.DynamicUser" not in s
    assert one("Service.ProtectSystem") == "strict"
    assert one("Service.NoNewPrivileges") == "yes"
    assert one("Service.PrivateTmp") == "yes"
    assert _seconds(one("Service.TimeoutStopSec")) > Config().shutdown_timeout
    exec_start = one("Service.ExecStart").split()
    assert Path(exec_start[0]).name == "dropfetch" and exec_start[1] == "run"
    config = Path(exec_start[exec_start.index("--config") + 1])
    # the data paths are writable and waited for
    writable = [Path(p) for v in s["Service.ReadWritePaths"] for p in v.split()]
    mounts = [Path(p) for v in s["Unit.RequiresMountsFor"] for p in v.split()]
    assert writable and mounts
    data = [Path("/srv/dropfetch/inbox"), Path("/srv/dropfetch/outbox")]
    for path in data:
        assert any(path.is_relative_to(w) for w in writable), path
        assert any(path.is_relative_to(m) for m in mounts), path
    assert config.is_absolute() and not any(config.is_relative_to(w) for w in writable)
    assert one("Install.WantedBy") == "multi-user.target"


def test_guide_config_is_valid_and_matches_the_unit(tmp_path):
    """The config file the guide tells you to write loads, and its paths are the unit's."""
    text = GUIDE.read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block, "docs/SYSTEMD.md has no yaml block"
    path = tmp_path / "config.yaml"
    path.write_text(block.group(1))
    config = load_config(path)
    s = _settings(UNIT.read_text())
    writable = [Path(p) for v in s["Service.ReadWritePaths"] for p in v.split()]
    for p in (config.inbox, config.outbox, config.work):
        assert any(p.is_relative_to(w) for w in writable), p
    assert _seconds(s["Service.TimeoutStopSec"][-1]) > config.shutdown_timeout
    assert "systemctl enable --now dropfetch" in text


needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _copy_with_real_exec(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart= on the installed console script (verify needs it to exist)."""
    text = UNIT.read_text()
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={_venv_dropfetch()}", text, flags=re.M)
    assert n == 1
    if extra:
        text = text.replace("[Service]\n", f"[Service]\n{extra}\n", 1)
    out = tmp_path / "dropfetch.service"
    out.write_text(text)
    return out


@needs_analyze
def test_systemd_analyze_verify(tmp_path):
    unit = _copy_with_real_exec(tmp_path)
    out = _verify(unit)
    assert out.returncode == 0, out.stderr
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if "dropfetch" in line]
    assert not complaints, "\n".join(complaints)


@needs_analyze
def test_systemd_analyze_verify_catches_mistakes(tmp_path):
    """The check above can fail: verify reports a bad key in a copy of the unit."""
    out = _verify(_copy_with_real_exec(tmp_path, extra="Restart=sometimes\nNoSuchKey=1"))
    text = out.stdout + out.stderr
    assert "NoSuchKey" in text and "sometimes" in text


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers or systemd-tmpfiles is not installed",
)
@pytest.mark.skipif(os.geteuid() != 0, reason="creating files owned by another user needs root")
def test_sysusers_and_tmpfiles_snippets(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    out = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    passwd = (root / "etc" / "passwd").read_text()
    user = next(line for line in passwd.splitlines() if line.startswith("dropfetch:"))
    uid = int(user.split(":")[2])
    out = subprocess.run(
        ["systemd-tmpfiles", "--create", f"--root={root}", str(TMPFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    for sub in ("inbox", "outbox"):
        st = (root / "srv" / "dropfetch" / sub).stat()
        assert st.st_uid == uid

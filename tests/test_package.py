"""The package (issue 12): LICENSE, the package data's copies, and `make dist`'s wheel
installed into a fresh venv, where it runs a job."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from archives import OS_TEMPLATE, tar_bytes
from faultserver import FaultServer
from harness import ROOT, WAIT, check_sidecar, wait_for

PACKAGE = ROOT / "daemon" / "dropfetch"
# the package's copies of files that live elsewhere in the repository: the same bytes
COPIES = {
    "schema/status.schema.json": ROOT / "schema" / "status.schema.json",
    "systemd/dropfetch.service": ROOT / "systemd" / "dropfetch.service",
    "systemd/dropfetch.sysusers": ROOT / "systemd" / "dropfetch.sysusers",
    "systemd/dropfetch.tmpfiles": ROOT / "systemd" / "dropfetch.tmpfiles",
}


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def test_license_matches_pyproject():
    project = _project()
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the dropfetch authors\n")
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


@pytest.mark.parametrize("inside", sorted(COPIES))
def test_package_copies_are_the_originals(inside):
    assert (PACKAGE / inside).read_bytes() == COPIES[inside].read_bytes(), (
        f"daemon/dropfetch/{inside} differs from {COPIES[inside].relative_to(ROOT)}: "
        "copy the original over it"
    )


def _data_files() -> list[str]:
    """Every file of the package's source tree that is not Python: what the wheel must
    carry besides the modules (the web page, the schema, the systemd files, py.typed)."""
    return sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")
    )


def _copy_tree(target: Path) -> None:
    """The checkout as it is (uncommitted changes included), without what a build or a
    run leaves in it."""
    shutil.copytree(
        ROOT,
        target,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "var", "dist", "build", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )


def _make_dist(tmp_path: Path) -> Path:
    """`make dist` in a copy of the checkout, with this test's interpreter's venv (the
    test extra, build and twine included, is installed: `make test` did it)."""
    source, dist = tmp_path / "source", tmp_path / "dist"
    _copy_tree(source)
    venv = Path(sys.prefix)
    done = subprocess.run(
        ["make", "-o", str(venv / ".installed-test"), "dist", f"VENV={venv}", f"DIST={dist}"],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("PASSED") == 2, done.stdout[-3000:]  # twine check, both files
    return dist


def _clean_env() -> dict[str, str]:
    """The environment without this checkout's package on the path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run_one_job(venv: Path, base: Path) -> dict[str, object]:
    """A daemon of the installed package, one job submitted with its CLI: the sidecar."""
    base.mkdir()
    config = base / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inbox": str(base / "inbox"),
                "outbox": str(base / "outbox"),
                "settle_time": 0.2,
                "min_free_space": 0,
                "download": {"block_networks": []},
            }
        )
    )
    env, sidecar = _clean_env(), base / "inbox" / "debian-7.status.json"
    with FaultServer() as srv, (base / "daemon.log").open("wb") as log:
        srv.add("/os/debian-7.tar.gz", tar_bytes(OS_TEMPLATE, compression="gz"))
        daemon = subprocess.Popen(
            [str(venv / "bin/dropfetch"), "run", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            url = srv.url("/os/debian-7.tar.gz")
            submit = [str(venv / "bin/dropfetch"), "submit", url, "--config", str(config)]
            subprocess.run(submit, env=env, check=True, capture_output=True, timeout=WAIT)
            wait_for(
                lambda: sidecar.is_file() and '"ok"' in sidecar.read_text(),
                message="the job to be ok (log: " + str(base / "daemon.log") + ")",
            )
        finally:
            daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(WAIT)
    assert rc == 0, (base / "daemon.log").read_text()
    return check_sidecar(json.loads(sidecar.read_text()))


@pytest.mark.e2e
@pytest.mark.slow
def test_make_dist_wheel_installs_and_runs_a_job(tmp_path):
    dist = _make_dist(tmp_path)
    (wheel,) = dist.glob("dropfetch-*.whl")
    (sdist,) = dist.glob("dropfetch-*.tar.gz")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [f for f in _data_files() if f"dropfetch/{f}" not in names]
    assert not missing, f"package data left out of the wheel: {missing}"
    assert {"dropfetch/schema/status.schema.json", "dropfetch/systemd/dropfetch.service"} <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    with tarfile.open(sdist) as tar:
        assert any(n.endswith("/LICENSE") for n in tar.getnames())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q", str(wheel)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    version = subprocess.run(
        [str(venv / "bin/dropfetch"), "--version"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=True,
    )
    assert version.stdout.strip() == f"dropfetch {_project()['version']}"
    where = subprocess.run(
        [str(venv / "bin/python"), "-c", "import dropfetch; print(dropfetch.__file__)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=True,
    )
    installed = Path(where.stdout.strip()).parent
    assert installed.is_relative_to(venv), installed  # the wheel's, not the checkout's
    for inside, original in COPIES.items():
        assert (installed / inside).read_bytes() == original.read_bytes()

    sidecar = _run_one_job(venv, tmp_path / "job")
    assert sidecar["status"] == "ok"
    assert sidecar["files"] == sorted(OS_TEMPLATE)

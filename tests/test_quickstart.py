"""The README's quick start, run word for word in a fresh clone (issues 2, 7 and 12)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess

import pytest

from archives import OS_TEMPLATE, tar_bytes
from faultserver import FaultServer
from harness import ROOT, wait_for
from test_hostile_jobs import _routable_ipv4

EXAMPLE_URL = "https://ftp.gnu.org/gnu/hello/hello-2.12.1.tar.gz"
EXAMPLE_PATH = "/gnu/hello/hello-2.12.1.tar.gz"
DEMO_ARGS = "--big 4MiB --rate 0"  # the demo as it is, with a smaller large file
TEST_TOOLS = ("pytest", "hypothesis", "mypy", "ruff", "build", "twine")  # the test extra


def quick_start_blocks() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [
        [line.split("#", 1)[0].strip() for line in b.splitlines() if line.split("#", 1)[0].strip()]
        for b in blocks
    ]


def _make_demo(command, clone, env):
    """`make demo` as the README says: it installs what running needs, and no test tool,
    and every demo job ends as it should."""
    done = subprocess.run(
        shlex.split(command),
        cwd=clone,
        env={**env, "DEMO_ARGS": DEMO_ARGS},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Every job ended as it should" in done.stdout
    assert (clone / "var/demo/outbox/tools-1.0/tools-1.0/README").is_file()
    _no_test_tools(clone, env, "make demo")


def _no_test_tools(clone, env, target):
    for tool in TEST_TOOLS:
        shown = subprocess.run(
            [str(clone / ".venv/bin/python"), "-m", "pip", "show", tool],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert shown.returncode != 0, f"{target} installed the test tool {tool}"


@pytest.mark.e2e  # `make demo`, `make run`
def test_readme_quick_start_in_a_fresh_clone(tmp_path):
    blocks = quick_start_blocks()
    assert blocks[0] == ["make demo", "make run", "make test"]
    assert any(EXAMPLE_URL in c for c in blocks[1])
    if subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, check=False
    ).returncode:
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    _make_demo(blocks[0][0], clone, env)
    addr = _routable_ipv4()
    if addr is None:
        pytest.skip("needs a non-loopback address: the defaults block loopback servers")
    log = (tmp_path / "make-run.log").open("wb")
    # `make test` is what is running this very test; the other commands run as written
    daemon = subprocess.Popen(
        shlex.split(blocks[0][1]),
        cwd=clone,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (clone / "var" / "inbox").is_dir() or daemon.poll() is not None,
            timeout=600,
            interval=0.5,
            message="make run to start the daemon",
        )
        assert daemon.poll() is None, (tmp_path / "make-run.log").read_text()[-3000:]
        # the demo's install is all that running needs: no second one
        assert "pip install" not in (tmp_path / "make-run.log").read_text()
        _no_test_tools(clone, env, "make run")
        with FaultServer(host=addr) as srv:
            srv.add(EXAMPLE_PATH, tar_bytes(OS_TEMPLATE, compression="gz"))
            outputs = []
            output_dir = clone / "var/outbox/hello-2.12.1"
            for line in blocks[1]:
                command = line.replace(EXAMPLE_URL, srv.url(EXAMPLE_PATH))
                if command.startswith("ls "):
                    wait_for(output_dir.is_dir, timeout=60, message="the published output")
                done = subprocess.run(  # noqa: S602 - the README's own text
                    command,
                    shell=True,
                    cwd=clone,
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=120,
                    check=False,
                )
                assert done.returncode == 0, (command, done.stdout, done.stderr)
                outputs.append(done.stdout)
        assert outputs[0].strip().endswith("var/inbox/hello-2.12.1.url")
        assert sorted(outputs[-1].split()) == sorted({n.split("/")[0] for n in OS_TEMPLATE})
        sidecar = (clone / "var/inbox/hello-2.12.1.status.json").read_text()
        assert '"status": "ok"' in sidecar
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
        log.close()
    assert daemon.returncode in (0, 2, -signal.SIGTERM), (tmp_path / "make-run.log").read_text()


def test_config_example_keys_are_valid_and_documented():
    import yaml

    from dropfetch.config import Config, load_config

    example = ROOT / "config.example.yaml"
    config = load_config(example)
    defaults = load_config(None)
    assert config.workers == defaults.workers
    readme = (ROOT / "README.md").read_text()
    raw = yaml.safe_load(example.read_text())
    keys = []
    for key, value in raw.items():
        if isinstance(value, dict):
            keys += [f"{key}.{sub}" for sub in value]
        else:
            keys.append(key)
    missing = [k for k in keys if f"`{k}`" not in readme]
    assert not missing, f"config keys not documented in the README: {missing}"
    fields = {f for f in Config.__dataclass_fields__ if f != "source"}
    assert fields <= set(raw), f"keys missing from config.example.yaml: {fields - set(raw)}"


def test_check_config_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    for text, words in [
        ("workers: 0\n", "key workers"),
        ("download:\n  max_size: lots\n", "key download.max_size"),
        ("nope: 1\n", "key nope: unknown key"),
        ("extract:\n  symlinks: maybe\n", "key extract.symlinks"),
        ("hooks:\n  on_done: 'rm -rf /'\n", "key hooks.on_done"),
        ("workers: 2\nworkers: 3\n", "given twice"),
        ("[1, 2]", "mapping"),
    ]:
        bad.write_text(text)
        done = subprocess.run(
            ["dropfetch", "check-config", str(bad)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"},
        )
        assert done.returncode == 2, (text, done)
        assert str(bad) in done.stderr and words in done.stderr, (text, done.stderr)
    good = subprocess.run(
        [str(ROOT / ".venv/bin/dropfetch"), "check-config", str(ROOT / "config.example.yaml")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "workers: 4" in good.stdout
    missing = subprocess.run(
        [str(ROOT / ".venv/bin/dropfetch"), "run", "--config", str(tmp_path / "absent.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )  # it exits: it does not start a daemon
    assert missing.returncode == 2 and "absent.yaml" in missing.stderr

"""The examples work: every example config passes `vfsframe check`, and the guest demo boots a
real guest that mounts a share served by `vfsframe serve` and runs a command in it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = sorted((EXAMPLES / "configs").glob("*.toml"))
DEMO = EXAMPLES / "guest-demo" / "run.py"
# The host directories the example configs name; the test makes them under its tmp dir.
HOST_PREFIX = "/srv/vfsframe/"
# One boot of the demo under TCG, with room for a busy machine.
DEMO_TIMEOUT = 420


def test_there_are_example_configs() -> None:
    names = {path.stem for path in CONFIGS}
    assert {"passthrough-guest", "install-media", "golden-image-overlay"} <= names
    assert {"objectstore-s3-cached", "metrics-log"} <= names


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_example_config_passes_check(config: Path, tmp_path: Path) -> None:
    # Passthrough roots must exist: make the /srv/vfsframe/... directories under tmp_path.
    text = config.read_text()
    local = str(tmp_path / "srv" / "vfsframe") + "/"
    for directory in set(re.findall(rf'"{re.escape(HOST_PREFIX)}([^"]*)"', text)):
        Path(local, directory).mkdir(parents=True, exist_ok=True)
    copy = tmp_path / config.name
    copy.write_text(text.replace(HOST_PREFIX, local))
    check = subprocess.run(
        [sys.executable, "-m", "vfsframe", "check", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert f"{copy}: ok" in check.stdout


@pytest.mark.guest
def test_guest_demo_runs_a_command(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    command = "echo hello from the guest > greeting && cat greeting && grep -c virtiofs /proc/mounts; exit 7"
    demo = subprocess.run(
        [sys.executable, str(DEMO), "--workdir", str(workdir), "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT,
    )
    assert demo.returncode == 7, f"{demo.stdout}\n{demo.stderr}"
    # Only the command's output, line by line: the file was written to and read from the share.
    assert demo.stdout.splitlines() == ["hello from the guest", "1"], demo.stdout
    serve_log = (workdir / "serve.log").read_text()
    assert "front-end connected" in serve_log
    assert "stopping on SIGTERM" in serve_log  # the demo stopped its server on the way out
    assert not (workdir / "share.sock").exists()


WRAPPER = EXAMPLES / "libvirt" / "vfsframe-virtiofsd"
UNIT = EXAMPLES / "systemd" / "vfsframe@.service"
MEMORY_SHARE = '[[share]]\ntag = "data"\n[share.backend]\ntype = "memory"\n'


def _wrapper_env(config: Path) -> dict[str, str]:
    vfsframe = Path(sys.executable).with_name("vfsframe")
    return {**os.environ, "VFSFRAME": str(vfsframe), "CONFIG": str(config), "SHARE": "data"}


def test_libvirt_wrapper_answers_capabilities_and_needs_an_fd(tmp_path: Path) -> None:
    env = _wrapper_env(tmp_path / "none.toml")
    caps = subprocess.run(
        [str(WRAPPER), "--print-capabilities"], env=env, capture_output=True, text=True
    )
    assert caps.returncode == 0 and json.loads(caps.stdout) == {"type": "fs"}
    no_fd = subprocess.run(
        [str(WRAPPER), "-o", "source=/srv"], env=env, capture_output=True, text=True
    )
    assert no_fd.returncode == 2 and "no --fd=N" in no_fd.stderr


def test_libvirt_wrapper_serves_the_socket_libvirt_passes(tmp_path: Path) -> None:
    """libvirt's command line: a listening socket as --fd=N plus virtiofsd's -o options."""
    config = tmp_path / "share.toml"
    config.write_text(MEMORY_SHARE)
    path = str(tmp_path / "fs.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    fd = listener.fileno()
    log = tmp_path / "wrapper.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(WRAPPER), f"--fd={fd}", "-o", "source=/srv,cache=auto,xattr"],
            env=_wrapper_env(config),
            pass_fds=[fd],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    try:
        front_end = socket.socket(socket.AF_UNIX)
        front_end.connect(path)  # as QEMU does
        deadline = time.monotonic() + 60
        while "front-end connected" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        front_end.close()
    finally:
        proc.send_signal(signal.SIGTERM)  # as libvirt stops it
        status = proc.wait(30)
    assert status == 0, log.read_text()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # The unit names /opt/vfsframe; point it at this checkout's venv, as an install would.
    venv = Path(sys.executable).parent.parent
    unit = tmp_path / "vfsframe@guest.service"
    unit.write_text(UNIT.read_text().replace("/opt/vfsframe/.venv", str(venv)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

"""The examples work: every example config passes `vfsframe check`, and the guest demo boots a
real guest that mounts a share served by `vfsframe serve` and runs a command in it."""

from __future__ import annotations

import re
import subprocess
import sys
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

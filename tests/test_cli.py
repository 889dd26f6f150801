"""The `vfsframe` command as a user runs it: a separate process, real files, real mounts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_fuse

VFSFRAME = [sys.executable, "-m", "vfsframe"]


def vfsframe(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VFSFRAME, *args], capture_output=True, text=True, timeout=60, **kwargs)  # type: ignore[call-overload]


GOOD = """
[[share]]
tag = "data"
cache = "none"
[share.backend]
type = "memory"
capacity = "64MiB"
"""

BROKEN = {
    "unknown backend type": (
        '[[share]]\ntag = "a"\n[share.backend]\ntype = "nosuch"\n',
        "share[0].backend: unknown type 'nosuch'",
    ),
    "bad option value": (
        '[[share]]\ntag = "a"\n[share.backend]\ntype = "memory"\ncapacity = "lots"\n',
        "share[0].backend.capacity:",
    ),
    "unknown option": (
        '[[share]]\ntag = "a"\n[share.backend]\ntype = "memory"\nspeed = 3\n',
        "share[0].backend.speed: unknown option",
    ),
    "missing type": (
        '[[share]]\ntag = "a"\n[share.backend]\ncapacity = "1GiB"\n',
        "share[0].backend: missing 'type'",
    ),
    "duplicate tag": (
        '[[share]]\ntag = "a"\nbackend = {type = "memory"}\n[[share]]\ntag = "a"\nbackend = {type = "memory"}\n',
        "share[1].tag: 'a' is already used by share[0]",
    ),
    "bad cache policy": (
        '[[share]]\ntag = "a"\ncache = "sometimes"\nbackend = {type = "memory"}\n',
        "share[0].cache:",
    ),
    "tag too long": (
        f'[[share]]\ntag = "{"t" * 40}"\nbackend = {{type = "memory"}}\n',
        "share[0].tag:",
    ),
    "no shares": ("", "share: required, but missing"),
    "unknown top-level key": (
        'shares_typo = 1\n[[share]]\ntag = "a"\nbackend = {type = "memory"}\n',
        "shares_typo: unknown option",
    ),
    "not toml": ("[[share\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_check_refuses_broken_configs(case: str, tmp_path: Path) -> None:
    text, expected = BROKEN[case]
    path = tmp_path / "config.toml"
    path.write_text(text)
    done = vfsframe("check", str(path))
    assert done.returncode == 2, done.stdout
    assert expected in done.stderr
    problem_lines = [line for line in done.stderr.splitlines() if line.startswith("  ")]
    assert problem_lines, done.stderr
    assert all("\n" not in line for line in problem_lines)


def test_check_accepts_yaml_and_prints_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("share:\n  - tag: data\n    backend: {type: memory, capacity: 1MiB}\n")
    done = vfsframe("check", str(path))
    assert done.returncode == 0, done.stderr
    assert "share 'data'" in done.stdout
    assert "backend memory: capacity=1048576" in done.stdout


def test_missing_config_file(tmp_path: Path) -> None:
    done = vfsframe("check", str(tmp_path / "absent.toml"))
    assert done.returncode == 2
    assert "No such file" in done.stderr


def test_schema_includes_plugin_options() -> None:
    done = vfsframe("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    text = json.dumps(schema)
    assert '"share"' in text and "capacity" in text


def test_plugins_lists_the_builtin_memory_backend() -> None:
    done = vfsframe("plugins")
    assert done.returncode == 0
    assert "memory" in done.stdout and "capacity" in done.stdout


def test_mount_run_propagates_exit_status(tmp_path: Path) -> None:
    require_fuse()
    config = tmp_path / "c.toml"
    config.write_text(GOOD)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    script = f"echo hi > {mountpoint}/f && test $(cat {mountpoint}/f) = hi && exit 7"
    done = vfsframe("mount", str(config), str(mountpoint), "--run", "sh", "-c", script)
    assert done.returncode == 7, done.stderr
    assert not (mountpoint / "f").exists()  # unmounted, and memory is gone


def test_mount_serves_until_sigterm(tmp_path: Path) -> None:
    require_fuse()
    config = tmp_path / "c.toml"
    config.write_text(GOOD)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    server = subprocess.Popen(
        [*VFSFRAME, "mount", str(config), str(mountpoint)], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "not mounted in time"
            time.sleep(0.05)
        (mountpoint / "hello").write_text("world")
        assert (mountpoint / "hello").read_text() == "world"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        assert not os.path.ismount(mountpoint)
    finally:
        if server.poll() is None:
            server.kill()
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_mount_reports_a_stale_mountpoint(tmp_path: Path) -> None:
    require_fuse()
    config = tmp_path / "c.toml"
    config.write_text(GOOD)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    server = subprocess.Popen(
        [*VFSFRAME, "mount", str(config), str(mountpoint)], stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.kill()  # the server dies without unmounting: the mount is left stale
        server.wait()
        done = vfsframe("mount", str(config), str(mountpoint), "--run", "true")
        assert done.returncode == 1
        assert "stale FUSE mount" in done.stderr and "umount -l" in done.stderr
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def test_mount_needs_share_choice_when_several(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(GOOD + GOOD.replace('"data"', '"other"'))
    done = vfsframe("mount", str(config), str(tmp_path), "--run", "true")
    assert done.returncode == 2
    assert "--share" in done.stderr and "data, other" in done.stderr

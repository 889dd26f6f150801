"""A system call off the allow-list, made while serving: "log" lets it through and names it,
"kill" ends the server (the supervisor exits 128+SIGSYS and removes the socket). A test
front-end speaks vhost-user to the sandboxed `vfsframe serve` exactly as QEMU does."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.virtio.test_serve_cli import (
    FUSE_GETATTR,
    FUSE_INIT,
    GETATTR_IN,
    IN_HEADER,
    INIT_IN,
    fuse_call,
    mount_handshake,
    wait_for,
)
from vfsframe.testing.virtio_driver import TestFrontEnd

REPO = Path(__file__).resolve().parents[2]
SERVE_WITH_FORBIDDEN = [sys.executable, "-m", "tests.sandbox.forbidden_plugin", "serve"]


def start(tmp_path: Path, seccomp: str) -> tuple[subprocess.Popen[str], Path]:
    """The server, its stderr going to tmp_path / "stderr" (read while it runs)."""
    sock = tmp_path / "forbidden.sock"
    config = tmp_path / "forbidden.toml"
    config.write_text(
        f'[[share]]\ntag = "data"\nsocket = "{sock}"\n[share.backend]\ntype = "forbidden-syscall"\n'
    )
    proc = subprocess.Popen(
        [*SERVE_WITH_FORBIDDEN, str(config), "--sandbox", "namespace", "--seccomp", seccomp],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("w"), text=True,
    )  # fmt: skip
    wait_for(sock, proc)
    return proc, sock


@pytest.fixture
def processes():
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_log_mode_lets_the_call_through_and_names_it(tmp_path, processes) -> None:
    proc, sock = start(tmp_path, "log")
    processes.append(proc)
    fe = TestFrontEnd(socket_path=sock)
    try:
        mount_handshake(fe)  # its GETATTR of the root makes the forbidden call
        fuse_call(fe, FUSE_GETATTR, 3, 1, GETATTR_IN.pack(0, 0, 0))
    finally:
        fe.close()
    # The kernel's audit thread prints the record a moment later; the server reads it then.
    expected = "system call personality (135) is not in the allow-list"
    deadline = time.monotonic() + 60
    while expected not in (err := (tmp_path / "stderr").read_text()):
        assert time.monotonic() < deadline, err
        assert proc.poll() is None, err
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()


def test_kill_mode_ends_the_server(tmp_path, processes) -> None:
    proc, sock = start(tmp_path, "kill")
    processes.append(proc)
    fe = TestFrontEnd(socket_path=sock)
    try:
        fe.start()
        fuse_call(fe, FUSE_INIT, 1, 0, INIT_IN.pack(7, 31, 1 << 17, 0))
        body = GETATTR_IN.pack(0, 0, 0)
        request = IN_HEADER.pack(IN_HEADER.size + len(body), FUSE_GETATTR, 2, 1, 0, 0, 0, 0)
        request += body
        readable = fe.alloc(len(request), request)
        fe.add_chain(1, [(readable, len(request))], [(fe.alloc(4096), 4096)])
        proc.wait(timeout=60)
    finally:
        fe.close()
    err = (tmp_path / "stderr").read_text()
    assert proc.returncode == 128 + signal.SIGSYS, err
    assert "killed by SIGSYS: system call personality is not in the seccomp allow-list" in err
    assert not sock.exists()

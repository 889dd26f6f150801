"""A share with several vhost-user sockets (`sockets = [...]`, one guest each): the config
checks, `vfsframe qemu-args` per guest, and `vfsframe serve` giving every socket its own device
and FUSE session over the share's one backend (test front-ends connect as QEMU does)."""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.guest.servers import SERVE
from tests.virtio.test_serve_cli import fuse_call, mount_handshake, serve, wait_for
from vfsframe.config import ConfigError
from vfsframe.config.loader import validate_config
from vfsframe.testing.virtio_driver import TestFrontEnd

__all__ = ["serve"]  # the fixture, imported for the serve test below

FUSE_LOOKUP, FUSE_MKDIR = 1, 9
MKDIR_IN = struct.Struct("<II")  # mode, umask


def _share(tag: str, **fields: object) -> dict[str, object]:
    return {"tag": tag, "backend": {"type": "memory"}, **fields}


def _problems(*shares: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        validate_config({"share": list(shares)})
    return info.value.problems


def test_sockets_lists_one_socket_per_guest(tmp_path: Path) -> None:
    a, b = tmp_path / "a.sock", tmp_path / "b.sock"
    config = validate_config({"share": [_share("data", sockets=[str(a), str(b)])]})
    (share,) = config.shares
    assert share.socket is None
    assert share.socket_paths == [a, b]
    single = validate_config({"share": [_share("one", socket=str(a))]}).shares[0]
    assert single.socket_paths == [a]


def test_socket_and_sockets_together_are_refused(tmp_path: Path) -> None:
    problems = _problems(_share("d", socket=str(tmp_path / "a"), sockets=[str(tmp_path / "b")]))
    assert problems == [
        "share[0]: give `socket` (one guest) or `sockets` (several guests), not both"
    ]


def test_empty_sockets_list_is_refused() -> None:
    (problem,) = _problems(_share("d", sockets=[]))
    assert problem.startswith("share[0].sockets: List should have at least 1 item")


def test_a_socket_used_twice_is_refused(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    same_a = str(tmp_path / "sub" / ".." / "a.sock")  # another spelling of the same file
    problems = _problems(
        _share("one", sockets=[a, b, same_a]),
        _share("two", socket=b),
        _share("three", sockets=[str(tmp_path / "c.sock"), a]),
    )
    assert problems == [
        f"share[0].sockets[2]: {same_a!r} is already used by share[0].sockets[0]",
        f"share[1].socket: {b!r} is already used by share[0].sockets[1]",
        f"share[2].sockets[1]: {a!r} is already used by share[0].sockets[0]",
    ]


def _config_file(tmp_path: Path) -> Path:
    path = tmp_path / "two.toml"
    path.write_text(
        f'[[share]]\ntag = "shared"\nsockets = ["{tmp_path / "a.sock"}", "{tmp_path / "b.sock"}"]\n'
        'backend = { type = "memory" }\n'
        f'[[share]]\ntag = "scratch"\nsocket = "{tmp_path / "s.sock"}"\n'
        'backend = { type = "memory" }\n'
    )
    return path


def test_qemu_args_prints_a_block_per_guest(tmp_path: Path) -> None:
    out = subprocess.run([*SERVE, "qemu-args", str(_config_file(tmp_path)), "--format", "qemu"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    first, second = out.split("# guest 2 of 2\n")
    assert first.startswith("# guest 1 of 2\n")
    assert f"path={tmp_path / 'a.sock'}" in first and f"path={tmp_path / 's.sock'}" in first
    assert "b.sock" not in first
    # The one-socket share serves one guest at a time: only guest 1 attaches it.
    assert f"path={tmp_path / 'b.sock'}" in second and "scratch" not in second
    assert "tag=shared" in second


def test_check_names_every_socket(tmp_path: Path) -> None:
    out = subprocess.run([*SERVE, "check", str(_config_file(tmp_path))],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"sockets={tmp_path / 'a.sock'}, {tmp_path / 'b.sock'} (one guest each)" in out


def test_serve_gives_each_socket_a_session_over_one_backend(tmp_path: Path, serve) -> None:
    proc = serve(str(_config_file(tmp_path)))
    for name in ("a.sock", "b.sock", "s.sock"):
        wait_for(tmp_path / name, proc)
    guest_a = TestFrontEnd(socket_path=tmp_path / "a.sock")
    guest_b = TestFrontEnd(socket_path=tmp_path / "b.sock")
    try:
        # Both connected at once, each with its own INIT and node table.
        mount_handshake(guest_a)
        mount_handshake(guest_b)
        fuse_call(guest_a, FUSE_MKDIR, 3, 1, MKDIR_IN.pack(0o755, 0) + b"from-a\0")
        entry = fuse_call(guest_b, FUSE_LOOKUP, 3, 1, b"from-a\0")
        (nodeid,) = struct.unpack_from("<Q", entry)
        assert nodeid > 1  # guest B finds what guest A made: one memory backend behind both
        # Guest A goes away: B is still served, and A's socket takes the next guest, which
        # sees what B made meanwhile (the backend outlives every session).
        guest_a.close()
        fuse_call(guest_b, FUSE_MKDIR, 4, 1, MKDIR_IN.pack(0o755, 0) + b"from-b\0")
        guest_a = _reconnect(tmp_path / "a.sock")
        mount_handshake(guest_a)
        fuse_call(guest_a, FUSE_LOOKUP, 3, 1, b"from-b\0")
    finally:
        guest_a.close()
        guest_b.close()
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "serving 2 share(s) on 3 socket(s)" in err
    assert "shared#0: front-end connected" in err and "shared#1: front-end connected" in err
    assert "shared#0: front-end connected (connection 2)" in err
    assert not any((tmp_path / name).exists() for name in ("a.sock", "b.sock", "s.sock"))


def _reconnect(sock: Path, timeout: float = 30.0) -> TestFrontEnd:
    """A new front-end on a socket whose previous one just left (the server may still be
    resetting the device, so the first tries can be refused)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return TestFrontEnd(socket_path=sock)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)

"""`vfsframe serve` and `vfsframe qemu-args` as processes, with the real FUSE session behind
the device: a test front-end connects to the socket exactly as QEMU does."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest.servers import SERVE
from vfsframe.testing.virtio_driver import TestFrontEnd

IN_HEADER = struct.Struct("<IIQQIIII")
OUT_HEADER = struct.Struct("<IiQ")
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
GETATTR_IN = struct.Struct("<IIQ")
FUSE_INIT, FUSE_GETATTR = 26, 3
ATTR_MODE_OFFSET = 16 + 6 * 8 + 3 * 4  # fuse_attr_out: valid, nsec, dummy; attr up to mode


def config(tmp_path: Path, with_socket: bool = True, queues: int = 1) -> Path:
    path = tmp_path / "share.toml"
    sock = f'socket = "{tmp_path / "data.sock"}"\n' if with_socket else ""
    path.write_text(
        f'[[share]]\ntag = "data"\n{sock}request_queues = {queues}\n'
        '[share.backend]\ntype = "memory"\n'
    )
    return path


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    procs: list[subprocess.Popen] = []

    def start(*args: str, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen([*SERVE, "serve", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def fuse_call(fe: TestFrontEnd, opcode: int, unique: int, nodeid: int, body: bytes) -> bytes:
    req = IN_HEADER.pack(IN_HEADER.size + len(body), opcode, unique, nodeid, 0, 0, 0, 0) + body
    rd = fe.alloc(len(req), req)
    wr = fe.alloc(4096)
    fe.add_chain(1, [(rd, len(req))], [(wr, 4096)])
    ((_, used_len),) = fe.wait_used(1)
    out = fe.read(wr, used_len)
    length, error, got_unique = OUT_HEADER.unpack_from(out)
    assert (length, error, got_unique) == (used_len, 0, unique)
    return out[OUT_HEADER.size :]


def mount_handshake(fe: TestFrontEnd) -> None:
    fe.start()
    init = fuse_call(fe, FUSE_INIT, 1, 0, INIT_IN.pack(7, 31, 1 << 17, 0))
    assert struct.unpack_from("<II", init) == (7, 31)
    attr = fuse_call(fe, FUSE_GETATTR, 2, 1, GETATTR_IN.pack(0, 0, 0))
    (mode,) = struct.unpack_from("<I", attr, ATTR_MODE_OFFSET)
    assert stat.S_ISDIR(mode)


def connect_once(sock: Path) -> None:
    """A front-end connects, does the mount handshake and goes."""
    fe = TestFrontEnd(socket_path=sock)
    try:
        mount_handshake(fe)
    finally:
        fe.close()


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> str:
    """Stop the server with ``sig``; it must exit 0. Its stderr."""
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_print_capabilities() -> None:
    out = subprocess.run([*SERVE, "serve", "--print-capabilities"], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert json.loads(out.stdout) == {"type": "fs"}


def test_serve_reconnect_and_clean_stop(tmp_path, serve) -> None:
    sock = tmp_path / "data.sock"
    proc = serve(str(config(tmp_path)))
    wait_for(sock, proc)
    for _ in range(2):  # the second front-end finds a reset session (INIT accepted again)
        connect_once(sock)
    err = stop(proc)
    assert not sock.exists()
    assert err.count("front-end connected") == 2
    assert err.count("disconnected") == 2


def test_serve_sigint_stops_cleanly(tmp_path, serve) -> None:
    sock = tmp_path / "data.sock"
    proc = serve(str(config(tmp_path)))
    wait_for(sock, proc)
    stop(proc, signal.SIGINT)
    assert not sock.exists()


@pytest.fixture
def var_tmp_path() -> Iterator[Path]:
    """A directory outside /tmp: the sandbox gives the server a private /tmp of its own."""
    path = Path(tempfile.mkdtemp(prefix="vfsframe-test-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sandboxed_serve_removes_a_socket_beside_its_share(var_tmp_path, serve) -> None:
    """The socket's directory is an ancestor of a bound share root, so inside the namespace
    sandbox it exists on the read-only minimal root: naming the socket there fails with
    EROFS, and the socket must still go (through the directory fd kept from before)."""
    sock = var_tmp_path / "data.sock"
    share = var_tmp_path / "share"
    share.mkdir()
    conf = var_tmp_path / "share.toml"
    conf.write_text(
        f'[[share]]\ntag = "data"\nsocket = "{sock}"\n'
        f'[share.backend]\ntype = "passthrough"\nroot = "{share}"\n'
    )
    proc = serve(str(conf), "--sandbox", "namespace")
    wait_for(sock, proc)
    connect_once(sock)
    assert "Traceback" not in stop(proc)
    assert not sock.exists()


def test_socket_path_and_share_options(tmp_path, serve) -> None:
    sock = tmp_path / "other.sock"
    proc = serve(str(config(tmp_path, with_socket=False)), "--share", "data",
                 "--socket-path", str(sock))  # fmt: skip
    wait_for(sock, proc)
    connect_once(sock)
    stop(proc)


def test_inherited_listening_fd(tmp_path, serve) -> None:
    sock_path = tmp_path / "managed.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(1)
    fd = listener.fileno()
    proc = serve(str(config(tmp_path, with_socket=False)), "--fd", str(fd), pass_fds=(fd,))
    listener.close()  # the server holds its own copy now
    connect_once(sock_path)
    stop(proc)


def test_share_without_socket_is_refused(tmp_path, serve) -> None:
    proc = serve(str(config(tmp_path, with_socket=False)))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "no `socket`" in err and "--socket-path" in err


def test_stale_socket_is_replaced_but_a_regular_file_is_not(tmp_path, serve) -> None:
    sock = tmp_path / "data.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(sock))
    stale.close()  # a socket file nobody listens on, as a killed server leaves it
    proc = serve(str(config(tmp_path)))
    fe = None
    deadline = time.monotonic() + 30
    while fe is None:
        try:
            fe = TestFrontEnd(socket_path=sock)  # the new server is listening there
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
    fe.close()
    stop(proc)
    sock.write_text("precious")
    proc = serve(str(config(tmp_path)))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "not a socket" in err
    assert sock.read_text() == "precious"


def test_qemu_args(tmp_path) -> None:
    cfg = config(tmp_path, queues=4)
    out = subprocess.run([*SERVE, "qemu-args", str(cfg), "--memory", "1G"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "memory-backend-memfd,id=mem,size=1G,share=on" in out
    assert "-numa node,memdev=mem" in out
    assert f"socket,id=vfsframe-data,path={tmp_path / 'data.sock'}" in out
    assert "vhost-user-fs-pci,chardev=vfsframe-data,tag=data,queue-size=1024" in out
    assert "num-request-queues=4" in out
    xml = out[out.index("<memoryBacking>") :]
    root = ET.fromstring(f"<domain>{xml}</domain>")
    fs = root.find("filesystem")
    assert fs is not None and fs.get("type") == "mount"
    assert fs.find("driver").get("type") == "virtiofs"  # type: ignore[union-attr]
    assert fs.find("source").get("socket") == str(tmp_path / "data.sock")  # type: ignore[union-attr]
    assert fs.find("target").get("dir") == "data"  # type: ignore[union-attr]
    assert root.find("memoryBacking/access").get("mode") == "shared"  # type: ignore[union-attr]


def test_inherited_connected_fd_serves_once_then_exits(tmp_path, serve) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = theirs.fileno()
    proc = serve(str(config(tmp_path, with_socket=False)), "--fd", str(fd), pass_fds=(fd,))
    theirs.close()
    fe = TestFrontEnd.over_socket(ours)
    try:
        mount_handshake(fe)
    finally:
        fe.close()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "front-end gone" in err

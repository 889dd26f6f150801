"""Plugin threads and the sandbox: capabilities are per thread, so a plugin's thread must
start after the drop (in `start()`), and one started while building is refused."""

from __future__ import annotations

import _thread
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfsframe.sandbox import capabilities
from vfsframe.testing.ports import free_port
from vfsframe.testing.virtio_driver import TestFrontEnd

from .servers import PASSTHROUGH_CAPS

CLI = [sys.executable, "-c", "import sys; from vfsframe.cli import main; sys.exit(main())"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    """Outside /tmp: the sandbox gives the server a private /tmp of its own."""
    path = Path(tempfile.mkdtemp(prefix="vfsframe-threads-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def serving_pid(supervisor: subprocess.Popen, log: Path) -> int:
    """The supervisor's child, once it has entered the sandbox."""
    deadline = time.monotonic() + 60
    while "sandbox namespace entered" not in log.read_text():
        assert supervisor.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text()
    return int(children.split()[0])


def thread_status(pid: int) -> list[dict[str, str]]:
    statuses = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        lines = (task / "status").read_text().splitlines()
        statuses.append(dict(line.split(":\t", 1) for line in lines if ":\t" in line))
    return statuses


def test_every_thread_of_a_sandboxed_server_holds_only_the_kept_capabilities(workdir) -> None:
    """The metrics middleware's HTTP listener runs on a thread of its own; it starts with
    serving, after the drop, so it holds what the serving threads hold and still answers."""
    share, sock, log = workdir / "share", workdir / "data.sock", workdir / "serve.log"
    share.mkdir()
    port = free_port()
    config = workdir / "share.toml"
    config.write_text(
        f'[[share]]\ntag = "data"\nsocket = "{sock}"\n'
        f'middleware = [{{ type = "metrics", listen = "127.0.0.1:{port}" }}]\n'
        f'[share.backend]\ntype = "passthrough"\nroot = "{share}"\n'
    )
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, "serve", str(config)], stdout=out, stderr=out)
    try:
        pid = serving_pid(proc, log)
        front_end = TestFrontEnd(socket_path=sock)
        try:
            front_end.start()  # the queue threads start too
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert b"vfsframe_operations_total" in answer.read()
            statuses = thread_status(pid)
        finally:
            front_end.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    assert len(statuses) >= 3, statuses  # main, the vhost-user server's, the listener's, ...
    for status in statuses:
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert int(status[field], 16) == PASSTHROUGH_CAPS, (status["Name"], field, status)
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status


def test_a_thread_started_while_building_is_refused() -> None:
    release = threading.Event()
    early = threading.Thread(target=release.wait, name="started-too-early", daemon=True)
    early.start()
    try:
        with pytest.raises(capabilities.ThreadsBeforeSandbox, match="started-too-early"):
            capabilities.refuse_other_threads()
    finally:
        release.set()
        early.join()
    assert "started-too-early" not in capabilities.other_threads()


def test_a_thread_python_does_not_list_is_refused_too() -> None:
    """A thread started below `threading` (as a C library would start one) is not in
    threading.enumerate(); the kernel's task list still shows it."""
    release = _thread.allocate_lock()
    release.acquire()
    running = threading.Event()

    def hold() -> None:
        running.set()
        release.acquire()

    _thread.start_new_thread(hold, ())
    running.wait(5)
    try:
        with pytest.raises(capabilities.ThreadsBeforeSandbox, match="not started by Python"):
            capabilities.refuse_other_threads()
    finally:
        release.release()

"""Plugin threads and the sandbox: capabilities are per thread, so a plugin's thread must
start after the drop (in `start()`), and one started while building is refused."""

from __future__ import annotations

import _thread
import contextlib
import os
import threading
import urllib.request

import pytest

from vfsframe.sandbox import capabilities
from vfsframe.testing.ports import free_port
from vfsframe.testing.virtio_driver import TestFrontEnd

from .servers import PASSTHROUGH_CAPS, SandboxedPassthrough, status_fields


def _thread_statuses(pid: int) -> list[dict[str, str]]:
    """The status of each thread of pid still there once listed: the listener serves each
    scrape on a thread of its own, which may end between the listing and the reading."""
    statuses = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            statuses.append(status_fields(int(tid)))
    return statuses


def test_every_thread_of_a_sandboxed_server_holds_only_the_kept_capabilities(tmp_path) -> None:
    """The metrics middleware's HTTP listener runs on a thread of its own; it starts with
    serving, after the drop, so it holds what the serving threads hold and still answers."""
    port = free_port()
    metrics = f'{{ type = "metrics", listen = "127.0.0.1:{port}" }}'
    server = SandboxedPassthrough(tmp_path, "namespace", middleware=metrics)
    server.start()
    try:
        pid = server.wait_sandboxed()
        front_end = TestFrontEnd(socket_path=server.socket)
        try:
            front_end.start()  # the queue threads start too
            url = f"http://127.0.0.1:{port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert b"vfsframe_operations_total" in answer.read()
            statuses = _thread_statuses(pid)
        finally:
            front_end.close()
    finally:
        exit_status = server.stop()
    assert exit_status == 0, server.log()
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

"""A Linux guest mounts vfsframe shares over virtio-fs and runs a filesystem workload; the
same workload against the reference C virtiofsd must see the same results."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from vfsframe.testing.guestvm import GuestVM, Share, booted, run_guest

from .servers import (
    WORKLOAD_TIMEOUT,
    ReferenceVirtiofsd,
    VfsframeMemory,
    assert_same_results,
    boot_workload,
)

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def vfsframe_run(kernel: Path, tmp_path_factory: pytest.TempPathFactory):
    """The workload on vfsframe's memory backend with 2 request queues: one boot, shared by
    the tests below."""
    workdir = tmp_path_factory.mktemp("vfsframe")
    server = VfsframeMemory(workdir, request_queues=2)
    server.start()
    try:
        result = boot_workload(server, workdir / "vm", kernel)
        time.sleep(0.5)  # let the server log the disconnect
        alive = server.alive()
    finally:
        status = server.stop()
    return result, server, alive, status


def test_workload_passes_on_vfsframe(vfsframe_run) -> None:
    result, server, _, _ = vfsframe_run
    assert result.checks, result.serial[-3000:]
    assert not result.failed(), (result.failed(), server.log()[-3000:])
    for name in (
        "mount",
        "ls_l",
        "create",
        "append",
        "mkdir_p",
        "rename_file",
        "rename_dir",
        "hardlink",
        "symlink",
        "chmod",
        "truncate_shrink",
        "truncate_grow",
        "dd_64m",
        "concurrent_writers",
        "concurrent_ranges",
        "statfs",
        "rm_rf_tree",
        "umount",
    ):
        assert result.checks.get(name) == "ok", name
    assert result.results["big_size"] == str(64 << 20)


def test_guest_spread_requests_over_both_request_queues(vfsframe_run) -> None:
    _, server, _, _ = vfsframe_run
    served = re.findall(r"requests served: q0=(\d+), q1=(\d+), q2=(\d+)", server.log())
    assert served, server.log()[-2000:]
    _, q1, q2 = map(int, served[-1])
    assert q1 > 0 and q2 > 0, served  # a 6.12 guest with 2 vCPUs uses both request queues


def test_serve_survives_guest_shutdown_and_stops_cleanly(vfsframe_run) -> None:
    _, server, alive_after_guest, status = vfsframe_run
    assert alive_after_guest, "vfsframe serve exited when the guest powered off"
    assert status == 0, server.log()[-2000:]
    assert not server.socket.exists(), "the socket must be removed on SIGTERM"
    assert "connected" in server.log() and "disconnected" in server.log()


def test_workload_matches_reference_virtiofsd(vfsframe_run, kernel, tmp_path) -> None:
    ours, _, _, _ = vfsframe_run
    reference = ReferenceVirtiofsd(tmp_path)
    reference.start()
    try:
        theirs = boot_workload(reference, tmp_path / "vm", kernel)
    finally:
        reference.stop()
    assert_same_results(ours, theirs)


IO_LOOP = """
check mount "mount -t virtiofs $TAG /mnt/a"
check io_started 'echo go > /mnt/a/marker'
while :; do
    dd if=/dev/zero of=/mnt/a/loop bs=1M count=8 conv=fsync 2>/dev/null
    cat /mnt/a/loop > /dev/null
    ls -l /mnt/a > /dev/null
done
"""

AFTER_CRASH = """
check mount "mount -t virtiofs $TAG /mnt/a"
check survivor_visible '[ "$(cat /mnt/a/marker)" = go ]'
check write_after_crash 'echo again > /mnt/a/after && [ "$(cat /mnt/a/after)" = again ]'
check big_write_after_crash 'dd if=/dev/zero of=/mnt/a/big bs=1M count=8 2>/dev/null &&
    [ "$(stat -c %s /mnt/a/big)" = 8388608 ]'
check umount 'umount /mnt/a'
"""


def test_guest_killed_mid_io_then_new_guest_works(kernel, tmp_path, running) -> None:
    # The backend-program form: one share from the config on a --socket-path.
    server = VfsframeMemory(tmp_path, request_queues=1, cli_socket=True)
    running.append(server)
    server.start()
    share = Share(server.tag, server.socket, 1)
    with booted(f"TAG=data\n{IO_LOOP}", [share], tmp_path / "vm1", kernel=kernel) as vm:
        assert vm.wait_for(r"^CHECK io_started ok", 240), vm.serial()[-2000:]
        time.sleep(1.5)  # well inside the I/O loop
        vm.kill()  # SIGKILL: no clean vhost-user shutdown, requests in flight
    deadline = time.monotonic() + 10
    while "disconnected" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.alive(), server.log()[-3000:]
    assert "disconnected" in server.log()
    result = run_guest(
        f"TAG=data\n{AFTER_CRASH}",
        [share],
        tmp_path / "vm2",
        timeout=WORKLOAD_TIMEOUT,
        kernel=kernel,
    )  # type: ignore[arg-type]
    assert result.finished, result.serial[-3000:]
    assert not result.failed(), (result.failed(), server.log()[-3000:])
    assert len(result.checks) == 5
    assert server.stop() == 0
    assert not server.socket.exists()


def test_guest_vm_reports_failing_checks(kernel, tmp_path) -> None:
    # The harness itself: a failing check must come back as a failure, not vanish.
    script = "check good 'true'\ncheck bad 'echo boom; false'\nresult answer 42\n"
    vm = GuestVM(script, [], tmp_path, kernel=kernel)
    vm.boot()
    result = vm.wait(120)
    assert result.checks == {"good": "ok", "bad": "fail boom|"}
    assert result.results == {"answer": "42"}

"""The guest workload over a passthrough share served by a sandboxed `vfsframe serve`, one
boot per sandbox mode and one rootless (uid/gid-mapped) boot. What the sandbox holds is
read from outside, through /proc/PID of the serving process, before the guest boots."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.guest.servers import boot_workload
from vfsframe.testing.guestvm import GuestResult

from .servers import PASSTHROUGH_CAPS, SandboxedPassthrough, namespaces_of, status_fields

pytestmark = pytest.mark.guest

ROOTLESS_BASE = 100000


@dataclass
class Run:
    server: SandboxedPassthrough
    status: dict[str, str]
    namespaces: dict[str, str]
    root_listing: list[str]
    reachable: dict[str, bool]
    result: GuestResult
    alive_after: bool
    exit_status: int | None


def run_sandboxed(workdir: Path, kernel: Path, sandbox: str, *extra: str, owner=None) -> Run:
    other_share = Path(tempfile.mkdtemp(prefix="other-share-", dir=workdir))
    (other_share / "secret").write_text("not for this guest")
    server = SandboxedPassthrough(workdir, sandbox, "kill", extra, owner=owner)
    server.start()
    try:
        pid = server.wait_sandboxed()
        root = Path(f"/proc/{pid}/root")
        observed = dict(
            status=status_fields(pid),
            namespaces=namespaces_of(pid),
            root_listing=sorted(os.listdir(root)),
            reachable={
                "share": (root / str(server.source).lstrip("/")).is_dir(),
                "other share": (root / str(other_share / "secret").lstrip("/")).exists(),
                "/etc/passwd": (root / "etc/passwd").exists(),
                "/home": (root / "home").exists(),
            },
        )
        result = boot_workload(server, workdir / "vm", kernel)
        time.sleep(0.5)
        alive = server.alive()
    finally:
        exit_status = server.stop()
    return Run(server, result=result, alive_after=alive, exit_status=exit_status, **observed)


@pytest.fixture(scope="module", params=["namespace", "chroot", "none"])
def mode_run(request, kernel: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp(f"sandbox-{request.param}")
    return run_sandboxed(workdir, kernel, request.param)


@pytest.fixture(scope="module")
def rootless_run(kernel: Path) -> Run:
    # Every directory on the way to the socket and the share must be open to the mapped uid.
    workdir = Path(tempfile.mkdtemp(prefix="vfsframe-rootless-"))
    try:
        os.chown(workdir, ROOTLESS_BASE, ROOTLESS_BASE)
        workdir.chmod(0o755)
        mapping = f":0:{ROOTLESS_BASE}:65536:"
        return run_sandboxed(
            workdir, kernel, "namespace", "--uid-map", mapping, "--gid-map", mapping,
            owner=ROOTLESS_BASE,
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def assert_workload_passed(run: Run) -> None:
    assert run.result.checks, run.result.serial[-3000:]
    assert not run.result.failed(), (run.result.failed(), run.server.log()[-3000:])
    assert run.result.results["big_size"] == str(64 << 20)
    assert run.alive_after and run.exit_status == 0, run.server.log()[-2000:]


def assert_privileges_dropped(run: Run) -> None:
    status = run.status
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == PASSTHROUGH_CAPS, (field, status[field])
    assert int(status["CapInh"], 16) == 0 and int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def test_workload_passes(mode_run: Run) -> None:
    assert_workload_passed(mode_run)
    assert not mode_run.server.socket.exists()  # removed, even from outside a chroot


def test_privileges_dropped(mode_run: Run) -> None:
    assert_privileges_dropped(mode_run)


def test_isolation(mode_run: Run) -> None:
    ours = namespaces_of("self")
    sandbox = mode_run.server.sandbox
    if sandbox == "namespace":
        for kind in ("mnt", "pid", "ipc", "uts", "net"):
            assert mode_run.namespaces[kind] != ours[kind], kind
        assert mode_run.namespaces["user"] == ours["user"]  # no map: no user namespace
        assert mode_run.reachable == {
            "share": True, "other share": False, "/etc/passwd": False, "/home": False,
        }  # fmt: skip
        assert "etc" not in mode_run.root_listing and "home" not in mode_run.root_listing
        assert mode_run.status["NSpid"].split()[-1] == "1"  # PID 1 of its namespace
    elif sandbox == "chroot":
        assert mode_run.namespaces == ours
        assert mode_run.root_listing == []  # an empty, deleted directory
        assert not any(mode_run.reachable.values())
    else:
        assert mode_run.namespaces == ours
        assert mode_run.reachable["/etc/passwd"]  # "none" isolates nothing


def test_rootless_with_id_maps(rootless_run: Run) -> None:
    assert_workload_passed(rootless_run)
    assert_privileges_dropped(rootless_run)
    uids = rootless_run.status["Uid"].split()
    assert uids == [str(ROOTLESS_BASE)] * 4
    assert rootless_run.namespaces["user"] != namespaces_of("self")["user"]
    assert not rootless_run.reachable["/etc/passwd"]
    assert rootless_run.status["Gid"].split() == [str(ROOTLESS_BASE)] * 4

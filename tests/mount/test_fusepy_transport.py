"""The memory backend served through the fusepy transport (libfuse's high-level API), mounted
by the CLI in a subprocess and driven with the checks of test_memory_posix.py."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_fuse
from tests.mount import test_memory_posix as posix
from vfsframe.transport.devfuse import MountError
from vfsframe.transport.fusepy import load_fusepy

try:
    # Not a plain import of mfusepy: that binds libfuse 2 for the whole test process, and
    # load_fusepy picks libfuse 3 only if it comes first.
    load_fusepy()
except MountError as exc:
    pytest.skip(str(exc), allow_module_level=True)

pytestmark = pytest.mark.mount

CONFIG = """\
[[share]]
tag = "fusepy"
cache = "{cache}"

[share.backend]
type = "memory"
capacity = "2GiB"
"""


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == str(path) for line in mountinfo)


def _start(config: Path, mountpoint: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "vfsframe", "mount", "--transport", "fusepy"]
    command += [str(config), str(mountpoint), "-o", "allow_other,default_permissions"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()  # printed once the share is mounted
    if "mounted on" not in line:
        server.kill()
        pytest.fail(f"vfsframe mount --transport fusepy failed: {line}{server.stderr.read()}")
    return server


@pytest.fixture
def fusepy_mount(
    request: pytest.FixtureRequest, mountpoint: Path, tmp_path: Path
) -> Iterator[Path]:
    require_fuse()
    config = tmp_path / "share.toml"
    config.write_text(CONFIG.format(cache=getattr(request, "param", "auto")))
    server = _start(config, mountpoint)
    try:
        yield mountpoint
    finally:
        server.send_signal(signal.SIGTERM)  # SIGTERM unmounts and exits 0
        try:
            code = server.wait(timeout=20)
        finally:
            if server.poll() is None:
                server.kill()
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)
    assert code == 0, server.stderr.read() if server.stderr else ""
    assert not _mounted(mountpoint)


# The /dev/fuse transport's POSIX checks that hold through libfuse's high-level API too.
# Left out: test_sparse_writes_and_seek_data_hole (the path API has no lseek, so no
# SEEK_DATA/SEEK_HOLE) and the tests that mount in-process through /dev/fuse themselves.
CHECKS: list[Callable[..., None]] = [
    posix.test_cp_a_and_diff,
    posix.test_tar_round_trip_every_file_type,
    posix.test_mv_ln_and_nlink,
    posix.test_compileall,
    posix.test_appends_from_two_descriptors,
    posix.test_xattrs_with_setfattr_getfattr,
    posix.test_rename_flags,
    posix.test_concurrent_writers,
    posix.test_large_file_round_trip,
    posix.test_unlinked_open_file_stays_usable,
    posix.test_truncate_chmod_chown_utimens,
    posix.test_permissions_for_another_user,
    posix.test_big_directory_listing_is_exact,
    posix.test_deep_paths_up_to_path_max,
    posix.test_posix_locks_between_processes,
    posix.test_copy_file_range,
    posix.test_killed_lock_waiter_is_released,
]


# libfuse gives every name its own kernel inode, so after link/unlink through one name the
# other name's cached attributes (st_nlink) stay stale for attr_timeout: with cache = "auto"
# that is up to a second. These checks need cache = "none" (attr_timeout 0).
NEEDS_NO_CACHE = {posix.test_mv_ln_and_nlink}
PARAMS = [(check, "none" if check in NEEDS_NO_CACHE else "auto") for check in CHECKS]


@pytest.mark.parametrize(
    ("check", "fusepy_mount"),
    PARAMS,
    ids=[check.__name__.removeprefix("test_") for check in CHECKS],
    indirect=["fusepy_mount"],
)
def test_posix_check(check: Callable[..., None], fusepy_mount: Path, tmp_path: Path) -> None:
    available = {"memory_mount": fusepy_mount, "tmp_path": tmp_path}
    check(**{name: available[name] for name in inspect.signature(check).parameters})


def test_hard_links_share_the_inode_number(fusepy_mount: Path) -> None:
    """use_ino: st_ino comes from the backend, so both names of a file report one number."""
    (fusepy_mount / "a").write_text("x")
    os.link(fusepy_mount / "a", fusepy_mount / "b")
    assert os.stat(fusepy_mount / "a").st_ino == os.stat(fusepy_mount / "b").st_ino
    listed = {entry.name: entry.inode() for entry in os.scandir(fusepy_mount)}
    assert listed["a"] == listed["b"] == os.stat(fusepy_mount / "a").st_ino


def test_statfs_reports_the_capacity(fusepy_mount: Path) -> None:
    vfs = os.statvfs(fusepy_mount)
    assert vfs.f_blocks * vfs.f_frsize == 2 << 30


def test_run_mounts_runs_and_unmounts(mountpoint: Path) -> None:
    require_fuse()
    script = f'echo hello > {mountpoint}/f && test "$(cat {mountpoint}/f)" = hello && exit 7'
    command = [sys.executable, "-m", "vfsframe", "mount", "--transport", "fusepy"]
    done = subprocess.run(
        [*command, "builtin:memory", str(mountpoint), "--run", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 7, done.stderr
    assert not _mounted(mountpoint)


def test_sigint_unmounts(mountpoint: Path, tmp_path: Path) -> None:
    require_fuse()
    config = tmp_path / "share.toml"
    config.write_text(CONFIG.format(cache="none"))
    server = _start(config, mountpoint)
    try:
        (mountpoint / "f").write_text("direct io")
        assert (mountpoint / "f").read_text() == "direct io"
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=20) == 0
    finally:
        if server.poll() is None:
            server.kill()
    deadline = time.monotonic() + 5
    while _mounted(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _mounted(mountpoint)


def test_missing_bindings_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from vfsframe.transport import fusepy as transport
    from vfsframe.transport.devfuse import MountError

    monkeypatch.setitem(sys.modules, "mfusepy", None)  # None in sys.modules: ImportError
    monkeypatch.setitem(sys.modules, "fuse", None)
    with pytest.raises(MountError, match=r"vfsframe\[fusepy\]"):
        transport.load_fusepy()

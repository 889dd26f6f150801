"""A guest boots from a root file system on a share (issue 10): a Debian tree made by
debootstrap, served by `vfsframe serve` over passthrough, by the reference C virtiofsd, and as a
golden image (read-only lower, memory upper); each boot also installs from read-only
installation media on a second share. One boot per server kind; the checks are grouped in the
guest's init script (rootfs_workload/init.sh)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vfsframe.testing.guestvm import Share, fetch_kernel
from vfsframe.testing.rootfs import build_rootfs, copy_tree
from vfsframe.testing.rootfs_boot import RootfsRun, boot_from_share, install_workload

from ..guest.servers import Server
from .rootfs_servers import (
    READONLY_ACL_TOML,
    ReferenceTree,
    VfsframeShare,
    build_media,
    golden_overlay_toml,
    passthrough_toml,
)

pytestmark = [pytest.mark.guest, pytest.mark.timeout(1500)]

WORKLOAD = Path(__file__).parent / "rootfs_workload"
ROOT_TAG = "rootfs"
MEDIA_TAG = "media"
MEDIA_ACL_TAG = "media-acl"
BOOT_TIMEOUT = 900.0  # the whole workload under TCG on a contended machine

# What every boot must report ok; the guest may report more.
EXPECTED_CHECKS = [
    "root_is_virtiofs",
    "exec_dynamic",
    "libc_mapped_from_share",
    "pipeline",
    "perl",
    "python",
    "sqlite_wal",
    "sqlite_cli_wal",
    "sqlite_delete",
    "sqlite_cli_delete",
    "dpkg_build",
    "dpkg_install",
    "dpkg_status",
    "dpkg_remove",
    "dpkg_audit",
    "tar_create",
    "tar_extract",
    "tar_same",
    "tar_remove",
    "media_mount",
    "media_install",
    "media_writes_erofs",
    "media_unchanged",
    "media_purge",
    "media_umount",
    "media_acl_mount",
    "media_acl_install",
    "media_acl_writes_erofs",
    "media_acl_unchanged",
    "media_acl_purge",
    "media_acl_umount",
    "leave_trace",
    "sync",
    "umount_tmp",
    "remount_ro",
    "root_ro",
]
MEDIA_WRITES = [
    "create",
    "write",
    "truncate",
    "chmod",
    "utime",
    "rename",
    "unlink",
    "mkdir",
    "symlink",
    "link",
    "setxattr",
]


@pytest.fixture(scope="module")
def kernel() -> Path:
    return fetch_kernel()


@pytest.fixture(scope="module")
def cached_rootfs() -> Path:
    return build_rootfs()  # about a minute on first use; CI's installer builds it first


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("rootfs")
    yield path
    # The guests' trees are 200+ MB each; pytest keeps the last runs' temp directories.
    for tree in ("pt-tree", "ref-tree", "golden", "guest-changes"):
        shutil.rmtree(path / tree, ignore_errors=True)


@pytest.fixture(scope="module")
def media(workdir: Path) -> Iterator[tuple[list[Server], Path, Path]]:
    """The installation media, served by `vfsframe serve` to every boot of the module: a
    read-only passthrough share of a directory of .debs, and a writable passthrough share of
    another such directory behind an acl with readonly = true."""
    directory, acl_directory = workdir / "media", workdir / "media-acl"
    build_media(directory)
    build_media(acl_directory)
    servers: list[Server] = [
        VfsframeShare(workdir, "media", MEDIA_TAG, passthrough_toml(directory, True)),
        VfsframeShare(
            workdir, "media-acl", MEDIA_ACL_TAG, passthrough_toml(acl_directory), READONLY_ACL_TOML
        ),
    ]
    try:
        for server in servers:
            server.start()
        yield servers, directory, acl_directory
    finally:
        for server in servers:
            server.stop()


def boot(server: Server, media_servers: list[Server], vmdir: Path, kernel: Path) -> RootfsRun:
    root = Share(server.tag, server.socket)
    extra = [Share(media.tag, media.socket) for media in media_servers]
    run = boot_from_share(root, extra, vmdir, kernel, BOOT_TIMEOUT)
    assert run.finished, (
        f"guest did not finish:\n{run.guest.serial[-3000:]}\n{server.log()[-3000:]}"
    )
    return run


def guest_tree(cached: Path, dest: Path) -> Path:
    tree = copy_tree(cached, dest)
    tags = {"ROOT_TAG": ROOT_TAG, "MEDIA_TAG": MEDIA_TAG, "MEDIA_ACL_TAG": MEDIA_ACL_TAG}
    install_workload(tree, WORKLOAD, tags)
    return tree


def manifest(tree: Path) -> dict[str, tuple[object, ...]]:
    """Everything a write could change: type, mode, owner, size, mtime, ctime, content."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirs, files in os.walk(tree):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            digest: object = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha1").hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            entries[os.path.relpath(path, tree)] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                st.st_nlink, digest,
            )  # fmt: skip
    return entries


@pytest.fixture(scope="module")
def passthrough_run(cached_rootfs, media, workdir, kernel) -> tuple[RootfsRun, Path, Server]:
    tree = guest_tree(cached_rootfs, workdir / "pt-tree")
    server = VfsframeShare(workdir, "vfsframe-pt", ROOT_TAG, passthrough_toml(tree))
    server.start()
    try:
        run = boot(server, media[0], workdir / "vm-pt", kernel)
    finally:
        server.stop()
    return run, tree, server


@pytest.fixture(scope="module")
def reference_run(cached_rootfs, media, workdir, kernel) -> tuple[RootfsRun, Path, Server]:
    tree = guest_tree(cached_rootfs, workdir / "ref-tree")
    server = ReferenceTree(workdir, ROOT_TAG, tree)
    server.start()
    try:
        run = boot(server, media[0], workdir / "vm-ref", kernel)
    finally:
        server.stop()
    return run, tree, server


@pytest.fixture(scope="module")
def overlay_run(cached_rootfs, media, workdir, kernel):
    lower = guest_tree(cached_rootfs, workdir / "golden")
    upper = workdir / "guest-changes"
    upper.mkdir()
    before = manifest(lower)
    config = golden_overlay_toml(lower, upper)
    server = VfsframeShare(workdir, "vfsframe-overlay", ROOT_TAG, config)
    server.start()
    try:
        run = boot(server, media[0], workdir / "vm-overlay", kernel)
    finally:
        server.stop()
    return run, lower, upper, before, server


def assert_workload_passed(run: RootfsRun, server: Server) -> None:
    assert not run.guest.failed(), (run.guest.failed(), server.log()[-3000:])
    missing = [name for name in EXPECTED_CHECKS if run.guest.checks.get(name) != "ok"]
    assert not missing, (missing, run.guest.serial[-3000:])
    assert run.boot_seconds is not None


def test_boot_from_passthrough_share(passthrough_run) -> None:
    run, tree, server = passthrough_run
    assert_workload_passed(run, server)
    results = run.guest.results
    assert results["os_release"].startswith('PRETTY_NAME="Debian GNU/Linux 12')
    assert results["hello_out"] == "hello from a virtio-fs root"
    assert results["perl_out"].startswith("packages=")
    assert "roundtrip=True" in results["python_out"]
    assert results["sqlite_wal"] == "rows=600 writers=2 integrity=ok journal=wal"
    # The guest's changes are the host tree's: its trace is there, its package is gone.
    assert (tree / "root" / "guest-was-here").read_text() == "booted\n"
    assert not (tree / "usr" / "bin" / "vfsframe-hello").exists()
    assert "vfsframe-media-tool" not in (tree / "var/lib/dpkg/status").read_text()
    assert run.figures["wal_insert_rate"] > 0


def test_installation_media_is_read_only(passthrough_run, media) -> None:
    run, _, _ = passthrough_run
    _, directory, acl_directory = media
    results = run.guest.results
    debs = ["vfsframe-media-data_1.0_all.deb", "vfsframe-media-tool_1.0_all.deb"]
    # Both kinds of read-only media: the backend's readonly, and an acl's in front of a
    # writable backend. The guest installed from each, and every kind of change came back
    # EROFS from the server (the guest mounted them read-write).
    for name in ("media", "media_acl"):
        assert results[f"{name}_list"] == "|".join(debs)
        assert results[f"{name}_tool"] == "media tool installed from a read-only share"
        assert results[f"{name}_data"] == "media data"
        errnos = "|".join(f"{op} EROFS" for op in MEDIA_WRITES)
        assert results[f"{name}_write_errnos"] == errnos, name
    for host_directory in (directory, acl_directory):
        assert sorted(p.name for p in host_directory.iterdir()) == debs


def test_same_results_as_reference_virtiofsd(passthrough_run, reference_run, capsys) -> None:
    ours, _, _ = passthrough_run
    theirs, ref_tree, ref_server = reference_run
    assert_workload_passed(theirs, ref_server)
    assert ours.guest.checks == theirs.guest.checks
    assert ours.guest.results == theirs.guest.results
    assert (ref_tree / "root" / "guest-was-here").read_text() == "booted\n"
    with capsys.disabled():
        print("\nrootfs boot figures (vfsframe passthrough / reference virtiofsd):")
        print(f"  boot to first command: {ours.boot_seconds:.1f}s / {theirs.boot_seconds:.1f}s")
        for name in ("wal_insert_rate", "delete_insert_rate"):
            print(f"  {name}: {ours.figures[name]:.0f} / {theirs.figures[name]:.0f} rows/s")


def test_golden_image_overlay(overlay_run, passthrough_run, capsys) -> None:
    run, lower, upper, before, server = overlay_run
    assert_workload_passed(run, server)
    ours, _, _ = passthrough_run
    assert run.guest.results == ours.guest.results
    # The guest's changes are in its own directory: its trace, and dpkg's database (copied
    # up by the installs); what it made and removed again left nothing behind.
    assert (upper / "root" / "guest-was-here").read_text() == "booted\n"
    assert (upper / "var" / "lib" / "dpkg" / "status").is_file()
    assert not (upper / "usr" / "bin" / "vfsframe-hello").exists()
    assert not (upper / "root" / "tree").exists()
    # The golden image is untouched: not a byte, mode, owner or time.
    assert not (lower / "root" / "guest-was-here").exists()
    after = manifest(lower)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, changed[:20]
    with capsys.disabled():
        print(
            f"\nrootfs golden-image overlay: boot to first command {run.boot_seconds:.1f}s, "
            f"WAL insert rate {run.figures['wal_insert_rate']:.0f} rows/s"
        )

"""Conformance of the passthrough backend through the host kernel, with the host as oracle.

Each check runs the same POSIX calls on the mount of a passthrough share and on a plain host
directory on the same file system, and compares what they saw: file types, modes, nlink,
sizes, inode sharing, timestamp behaviour, and the errno of every failing call. The checks
as an unprivileged user run in a `setpriv --reuid=1000` subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_fuse
from vfsframe.testing.mount import mounted_share, share_config

pytestmark = pytest.mark.mount

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
UNPRIVILEGED = ["setpriv", "--reuid=1000", "--regid=1000", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # uid 1000 may not reach the project's venv


def reachable_dir(prefix: str) -> Path:
    """A host directory every user can reach (the checks switch to uid 1000)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextlib.contextmanager
def passthrough_mount(root: Path, cache: str = "none", **options: Any) -> Iterator[Path]:
    require_fuse()
    mountpoint = reachable_dir("vfsframe-pt-mnt-")
    share = share_config({"type": "passthrough", "root": str(root), **options}, cache=cache)
    try:
        with mounted_share(mountpoint, share):
            yield mountpoint
    finally:
        mountpoint.rmdir()


@pytest.fixture
def host_dirs() -> Iterator[tuple[Path, Path]]:
    """(share root, oracle): two fresh directories on the same host file system."""
    root, oracle = reachable_dir("vfsframe-pt-root-"), reachable_dir("vfsframe-pt-oracle-")
    try:
        yield root, oracle
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(oracle, ignore_errors=True)


@pytest.fixture
def pair(host_dirs: tuple[Path, Path]) -> Iterator[tuple[Path, Path, Path]]:
    """(mountpoint, host root behind it, oracle directory)."""
    root, oracle = host_dirs
    with passthrough_mount(root) as mountpoint:
        yield mountpoint, root, oracle


# -- a small recorder: the same calls on both sides, outcomes compared ------------------------


class Record:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, label: str, call: Callable[[], Any]) -> Any:
        try:
            result = call()
        except OSError as exc:
            self.seen.append((label, errno.errorcode.get(exc.errno or 0, exc.errno)))
            return None
        self.seen.append((label, result))
        return result


def shape(st: os.stat_result) -> tuple[str, int, int, int]:
    """What must match between mount and host: type, permission bits, nlink, size."""
    kind = {stat.S_IFREG: "reg", stat.S_IFDIR: "dir", stat.S_IFLNK: "lnk",
            stat.S_IFIFO: "fifo", stat.S_IFSOCK: "sock"}.get(stat.S_IFMT(st.st_mode), "?")  # fmt: skip
    size = st.st_size if kind != "dir" else -1  # directory sizes are the fs's business
    return kind, stat.S_IMODE(st.st_mode), st.st_nlink, size


def renameat2(old: Path, new: Path, flags: int) -> None:
    if _libc.renameat2(-100, os.fsencode(old), -100, os.fsencode(new), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def fchmodat_nofollow(path: Path, mode: int) -> None:
    if _libc.syscall(452, -100, os.fsencode(path), mode, 0x100) != 0:  # fchmodat2
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def set_times(path: Path, atime_ns: int | None, mtime_ns: int | None) -> None:
    """utimensat with UTIME_OMIT for None."""

    class Timespec(ctypes.Structure):
        _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]

    def spec(ns: int | None) -> Timespec:
        return Timespec(0, (1 << 30) - 2) if ns is None else Timespec(*divmod(ns, 10**9))

    times = (Timespec * 2)(spec(atime_ns), spec(mtime_ns))
    if _libc.utimensat(-100, os.fsencode(path), times, 0x100) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def sync_directory(path: Path, sync: Callable[[int], None]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync(fd)  # FSYNCDIR on the mount
    finally:
        os.close(fd)


def posix_script(d: Path) -> list[tuple[str, Any]]:
    """The POSIX checks, run as root, on directory ``d``; returns what they saw."""
    r = Record()
    old_umask = os.umask(0o022)
    try:
        r("mkdir", lambda: os.mkdir(d / "a", 0o777))
        r("mkdir a", lambda: shape(os.lstat(d / "a")))
        r("mkdir exists", lambda: os.mkdir(d / "a"))
        r("create", lambda: write_file(d / "a" / "f", b"hello", 0o640))
        r("create f", lambda: shape(os.lstat(d / "a" / "f")))
        r("excl", lambda: os.open(d / "a" / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        r("enoent", lambda: os.open(d / "a" / "missing", os.O_RDONLY))
        r("enotdir", lambda: os.open(d / "a" / "f" / "x", os.O_RDONLY))
        r("eisdir", lambda: os.open(d / "a", os.O_WRONLY))
        r("link", lambda: os.link(d / "a" / "f", d / "a" / "g"))
        r("link ino", lambda: os.lstat(d / "a" / "f").st_ino == os.lstat(d / "a" / "g").st_ino)
        r("link nlink", lambda: shape(os.lstat(d / "a" / "g")))
        r("link exists", lambda: os.link(d / "a" / "f", d / "a" / "g"))
        r("link dir", lambda: os.link(d / "a", d / "alink"))
        r("symlink", lambda: os.symlink("f", d / "a" / "s"))
        r("symlink shape", lambda: shape(os.lstat(d / "a" / "s")))
        r("readlink", lambda: os.readlink(d / "a" / "s"))
        r("readlink file", lambda: os.readlink(d / "a" / "f"))
        r("follow", lambda: os.stat(d / "a" / "s").st_size)
        r("eloop", lambda: os.open(d / "a" / "s", os.O_RDONLY | os.O_NOFOLLOW))
        r("chmod link", lambda: fchmodat_nofollow(d / "a" / "s", 0o600))
        r("mkfifo", lambda: os.mkfifo(d / "a" / "p", 0o666))
        r("fifo", lambda: shape(os.lstat(d / "a" / "p")))
        r("mksock", lambda: os.mknod(d / "a" / "sock", stat.S_IFSOCK | 0o644))
        r("sock", lambda: shape(os.lstat(d / "a" / "sock")))
        r("mknod dir", lambda: os.mknod(d / "a" / "nd", stat.S_IFDIR | 0o755))
        r("rmdir nonempty", lambda: os.rmdir(d / "a"))
        r("unlink dir", lambda: os.unlink(d / "a"))
        r("rmdir file", lambda: os.rmdir(d / "a" / "f"))
        r("mkdir sub", lambda: os.mkdir(d / "a" / "sub"))
        r("fsync dir", lambda: sync_directory(d / "a", os.fsync))
        r("fdatasync dir", lambda: sync_directory(d / "a", os.fdatasync))
        r("rename into self", lambda: os.rename(d / "a", d / "a" / "sub" / "x"))
        r("mkdir b", lambda: os.mkdir(d / "b"))
        r("rename over nonempty", lambda: os.rename(d / "b", d / "a"))
        r("rename dir over file", lambda: os.rename(d / "b", d / "a" / "f"))
        r("rename file over dir", lambda: os.rename(d / "a" / "f", d / "b"))
        r("noreplace", lambda: renameat2(d / "a" / "f", d / "a" / "g", RENAME_NOREPLACE))
        r("exchange missing", lambda: renameat2(d / "a" / "f", d / "a" / "zz", RENAME_EXCHANGE))
        r("write h", lambda: write_file(d / "a" / "h", b"hhhhhhhh"))
        r("exchange", lambda: renameat2(d / "a" / "f", d / "a" / "h", RENAME_EXCHANGE))
        r("exchanged", lambda: ((d / "a" / "f").read_bytes(), (d / "a" / "h").read_bytes()))
        r("noreplace ok", lambda: renameat2(d / "a" / "h", d / "a" / "h2", RENAME_NOREPLACE))
        r("rename", lambda: os.rename(d / "a" / "h2", d / "b" / "moved"))
        r("listing", lambda: sorted(os.listdir(d / "a")))
        r("name too long", lambda: os.mkdir(d / ("n" * 256)))
        r("chmod", lambda: os.chmod(d / "a" / "f", 0o4751))
        r("chmod shape", lambda: shape(os.lstat(d / "a" / "f")))
        r("chown", lambda: os.chown(d / "a" / "f", 1000, 1000))
        r(
            "chown clears suid",
            lambda: (shape(os.lstat(d / "a" / "f")), os.lstat(d / "a" / "f").st_uid),
        )
        r("lchown", lambda: os.chown(d / "a" / "s", 1001, 1001, follow_symlinks=False))
        r("lchown ids", lambda: (os.lstat(d / "a" / "s").st_uid, os.lstat(d / "a" / "f").st_uid))
        r("truncate up", lambda: os.truncate(d / "a" / "f", 100000))
        r("truncate up size", lambda: shape(os.lstat(d / "a" / "f")))
        r("truncate down", lambda: os.truncate(d / "a" / "f", 3))
        r("content", lambda: (d / "a" / "f").read_bytes())
        r("truncate dir", lambda: os.truncate(d / "a", 0))
        # timestamps: exact ns round trips, OMIT leaves a time alone, changes move them
        r(
            "utime",
            lambda: os.utime(
                d / "a" / "f", ns=(1_234_567_891_123_456_789, 987_654_321_000_000_001)
            ),
        )
        r(
            "utime get",
            lambda: (os.lstat(d / "a" / "f").st_atime_ns, os.lstat(d / "a" / "f").st_mtime_ns),
        )
        r("atime only", lambda: set_times(d / "a" / "f", 5_000_000_007, None))
        r(
            "atime only get",
            lambda: (os.lstat(d / "a" / "f").st_atime_ns, os.lstat(d / "a" / "f").st_mtime_ns),
        )
        r("mtime only", lambda: set_times(d / "a" / "f", None, 6_000_000_009))
        r(
            "mtime only get",
            lambda: (os.lstat(d / "a" / "f").st_atime_ns, os.lstat(d / "a" / "f").st_mtime_ns),
        )
        r("link utime", lambda: set_times(d / "a" / "s", 7_000_000_000, 8_000_000_000))
        r(
            "link times",
            lambda: (os.lstat(d / "a" / "s").st_mtime_ns, os.lstat(d / "a" / "f").st_mtime_ns),
        )
        before = os.lstat(d / "a" / "f")
        time.sleep(0.02)
        r("append", lambda: (d / "a" / "f").open("ab").write(b"more"))
        after = os.lstat(d / "a" / "f")
        r(
            "write moves mtime",
            lambda: (
                after.st_mtime_ns > before.st_mtime_ns,
                after.st_ctime_ns > before.st_ctime_ns,
            ),
        )
        r("dir mtime on create", lambda: os.lstat(d / "b").st_mtime_ns >= before.st_ctime_ns)
        time.sleep(0.02)
        r("chmod2", lambda: os.chmod(d / "a" / "f", 0o600))
        r(
            "chmod moves ctime only",
            lambda: (
                os.lstat(d / "a" / "f").st_ctime_ns > after.st_ctime_ns,
                os.lstat(d / "a" / "f").st_mtime_ns == after.st_mtime_ns,
            ),
        )
        # xattrs
        r("setxattr", lambda: os.setxattr(d / "a" / "f", "user.one", b"1"))
        r("create existing", lambda: os.setxattr(d / "a" / "f", "user.one", b"2", os.XATTR_CREATE))
        r("replace missing", lambda: os.setxattr(d / "a" / "f", "user.two", b"2", os.XATTR_REPLACE))
        r("getxattr", lambda: os.getxattr(d / "a" / "f", "user.one"))
        r("getxattr missing", lambda: os.getxattr(d / "a" / "f", "user.none"))
        r(
            "listxattr",
            lambda: sorted(n for n in os.listxattr(d / "a" / "f") if n.startswith("user.")),
        )
        r("removexattr", lambda: os.removexattr(d / "a" / "f", "user.one"))
        r("removexattr missing", lambda: os.removexattr(d / "a" / "f", "user.one"))
        r(
            "symlink xattr",
            lambda: os.setxattr(d / "a" / "s", "user.x", b"1", follow_symlinks=False),
        )

        # unlinked but open
        def unlinked_io() -> tuple[bytes, int]:
            fd = os.open(d / "a" / "tmp", os.O_CREAT | os.O_RDWR, 0o600)
            try:
                os.unlink(d / "a" / "tmp")
                os.write(fd, b"still here")
                os.fchmod(fd, 0o640)
                os.ftruncate(fd, 5)
                return os.pread(fd, 100, 0), stat.S_IMODE(os.fstat(fd).st_mode)
            finally:
                os.close(fd)

        r("unlinked open file", unlinked_io)
        r("unlink", lambda: os.unlink(d / "a" / "g"))
        r("nlink after unlink", lambda: shape(os.lstat(d / "a" / "f")))
        r("rmdir", lambda: os.rmdir(d / "a" / "sub"))
        r("final listing", lambda: sorted(os.listdir(d / "a")))
        r("dir nlink", lambda: os.lstat(d).st_nlink)
    finally:
        os.umask(old_umask)
    return r.seen


def compare(mounted: list[tuple[str, Any]], oracle: list[tuple[str, Any]]) -> None:
    assert [label for label, _ in mounted] == [label for label, _ in oracle]
    differences = [
        (label, got, want) for (label, got), (_, want) in zip(mounted, oracle, strict=True)
        if got != want
    ]  # fmt: skip
    assert not differences, "\n".join(
        f"{name}: mount {g!r}, host {w!r}" for name, g, w in differences
    )


def test_posix_checks_match_the_host(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, oracle = pair
    compare(posix_script(mountpoint), posix_script(oracle))


def test_host_sees_what_the_mount_did(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, root, _ = pair
    posix_script(mountpoint)
    for path in sorted(mountpoint.rglob("*")):
        host = root / path.relative_to(mountpoint)
        got, want = os.lstat(path), os.lstat(host)
        assert (got.st_ino, got.st_mode, got.st_nlink, got.st_uid, got.st_gid, got.st_size,
                got.st_mtime_ns) == (want.st_ino, want.st_mode, want.st_nlink, want.st_uid,
                                     want.st_gid, want.st_size, want.st_mtime_ns), path  # fmt: skip


# -- as an unprivileged user ------------------------------------------------------------------

UNPRIVILEGED_SCRIPT = textwrap.dedent(
    """
    import errno, os, sys
    d = sys.argv[1]
    os.umask(0o027)
    def r(label, call):
        try:
            result = call()
        except OSError as exc:
            result = errno.errorcode[exc.errno]
        print(label, repr(result))
    def stat_of(p):
        st = os.lstat(p)
        return oct(st.st_mode), st.st_uid, st.st_gid
    r("read private", lambda: open(d + "/private").read())
    r("write readonly", lambda: open(d + "/public", "a").write("x"))
    r("read public", lambda: open(d + "/public").read())
    r("create in root dir", lambda: open(d + "/new", "w").close())
    r("mkdir in root dir", lambda: os.mkdir(d + "/newdir"))
    r("chmod not owner", lambda: os.chmod(d + "/public", 0o777))
    r("chown", lambda: os.chown(d + "/public", 1000, 1000))
    r("utime explicit not owner", lambda: os.utime(d + "/world", ns=(1, 1)))
    r("utime now writable", lambda: os.utime(d + "/world"))
    r("list private dir", lambda: os.listdir(d + "/privdir"))
    r("sticky unlink other", lambda: os.unlink(d + "/sticky/roots"))
    r("sticky rename other", lambda: os.rename(d + "/sticky/roots", d + "/sticky/mine2"))
    r("sticky create", lambda: open(d + "/sticky/mine", "w").close())
    r("sticky mine", lambda: stat_of(d + "/sticky/mine"))
    r("sticky mkdir", lambda: os.mkdir(d + "/sticky/minedir", 0o777))
    r("sticky minedir", lambda: stat_of(d + "/sticky/minedir"))
    r("setgid create", lambda: open(d + "/setgid/f", "w").close())
    r("setgid f", lambda: stat_of(d + "/setgid/f"))
    r("setgid mkdir", lambda: os.mkdir(d + "/setgid/sub"))
    r("setgid sub", lambda: stat_of(d + "/setgid/sub"))
    r("symlink", lambda: os.symlink("x", d + "/sticky/l"))
    r("symlink owner", lambda: os.lstat(d + "/sticky/l").st_uid)
    r("fifo", lambda: os.mkfifo(d + "/sticky/p", 0o666))
    r("fifo stat", lambda: stat_of(d + "/sticky/p"))
    r("sticky unlink mine", lambda: os.unlink(d + "/sticky/mine"))
    r("access R", lambda: os.access(d + "/private", os.R_OK))
    r("access W", lambda: os.access(d + "/public", os.W_OK))
    r("access X", lambda: os.access(d + "/public", os.X_OK))
    """
)


def prepare_unprivileged(d: Path) -> None:
    write_file(d / "private", b"private", 0o600)
    write_file(d / "public", b"public", 0o644)
    write_file(d / "world", b"world", 0o666)
    os.chmod(d / "world", 0o666)
    os.mkdir(d / "privdir", 0o700)
    os.mkdir(d / "sticky")
    os.chmod(d / "sticky", 0o1777)
    write_file(d / "sticky" / "roots", b"r", 0o666)
    os.mkdir(d / "setgid")
    os.chown(d / "setgid", 0, 50)
    os.chmod(d / "setgid", 0o2777)


def run_unprivileged(d: Path) -> list[str]:
    result = subprocess.run(
        [*UNPRIVILEGED, SYSTEM_PYTHON, "-c", UNPRIVILEGED_SCRIPT, str(d)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_unprivileged_checks_match_the_host(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, oracle = pair
    prepare_unprivileged(mountpoint)
    prepare_unprivileged(oracle)
    got, want = run_unprivileged(mountpoint), run_unprivileged(oracle)
    assert got == want, "\n".join(
        f"mount {g} | host {w}" for g, w in zip(got, want, strict=False) if g != w
    )
    assert "sticky unlink other 'EPERM'" in want and "read private 'EACCES'" in want


@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_ownership(host_dirs: tuple[Path, Path], preserve: bool) -> None:
    root, _ = host_dirs
    with passthrough_mount(root, preserve_ownership=preserve) as mountpoint:
        prepare_unprivileged(mountpoint)
        lines = run_unprivileged(mountpoint)
    owner = 1000 if preserve else 0
    # "mine" is unlinked again by the script; it printed what it saw through the mount
    assert f"sticky mine ('0o100640', {owner}, {owner})" in lines, lines
    assert (root / "sticky" / "minedir").stat().st_uid == owner
    assert (root / "sticky" / "l").lstat().st_uid == owner
    assert (root / "setgid" / "f").stat().st_gid == 50  # setgid directory either way
    sub = (root / "setgid" / "sub").stat()
    assert sub.st_gid == 50 and sub.st_mode & stat.S_ISGID
    if preserve:
        assert stat.S_IMODE((root / "sticky" / "minedir").stat().st_mode) == 0o750  # umask 027


def test_readonly_share(host_dirs: tuple[Path, Path]) -> None:
    root, _ = host_dirs
    write_file(root / "file", b"data")
    os.mkdir(root / "dir")
    with passthrough_mount(root, readonly=True) as mountpoint:
        assert (mountpoint / "file").read_bytes() == b"data"
        attempts: list[Callable[[], Any]] = [
            lambda: os.open(mountpoint / "file", os.O_WRONLY),
            lambda: os.open(mountpoint / "file", os.O_RDONLY | os.O_TRUNC),
            lambda: os.open(mountpoint / "new", os.O_CREAT | os.O_WRONLY),
            lambda: os.mkdir(mountpoint / "newdir"),
            lambda: os.unlink(mountpoint / "file"),
            lambda: os.rmdir(mountpoint / "dir"),
            lambda: os.rename(mountpoint / "file", mountpoint / "moved"),
            lambda: os.chmod(mountpoint / "file", 0o600),
            lambda: os.truncate(mountpoint / "file", 0),
            lambda: os.symlink("x", mountpoint / "l"),
            lambda: os.link(mountpoint / "file", mountpoint / "l"),
            lambda: os.setxattr(mountpoint / "file", "user.x", b"1"),
            lambda: os.utime(mountpoint / "file", ns=(1, 1)),
        ]
        for attempt in attempts:
            with pytest.raises(OSError) as info:
                attempt()
            assert info.value.errno == errno.EROFS
    assert (root / "file").read_bytes() == b"data"
    assert sorted(os.listdir(root)) == ["dir", "file"]


# -- tools and data ---------------------------------------------------------------------------


def populate(d: Path) -> None:
    (d / "dir" / "deeper").mkdir(parents=True)
    write_file(d / "dir" / "file", os.urandom(70000), 0o640)
    write_file(d / "exec", b"#!/bin/sh\n", 0o755)
    os.link(d / "exec", d / "dir" / "hard")
    os.symlink("dir/file", d / "link")
    os.mkfifo(d / "fifo")
    fd = os.open(d / "sparse", os.O_CREAT | os.O_WRONLY, 0o600)
    os.pwrite(fd, b"end", 5 << 20)
    os.close(fd)
    os.setxattr(d / "dir" / "file", "user.note", b"kept")
    os.chown(d / "dir" / "deeper", 1000, 1000)
    os.utime(d / "dir" / "file", ns=(1_000_000_001, 2_000_000_002))


def inventory(d: Path) -> dict[str, tuple[Any, ...]]:
    """Everything tar and cp -a must carry over, by relative path."""
    seen: dict[str, tuple[Any, ...]] = {}
    inodes: dict[int, str] = {}
    for path in sorted(d.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(d))
        if stat.S_ISREG(st.st_mode):
            detail: Any = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            detail = os.readlink(path)
        else:
            detail = None
        first_name = inodes.setdefault(st.st_ino, rel)
        xattrs = sorted(
            (name, os.getxattr(path, name, follow_symlinks=False))
            for name in os.listxattr(path, follow_symlinks=False) if name.startswith("user.")
        )  # fmt: skip
        mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None
        seen[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_size, mtime, detail, first_name,
                     xattrs)  # fmt: skip
    return seen


def test_tar_round_trip(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    mountpoint, root, oracle = pair
    source = tmp_path / "source"
    source.mkdir()
    populate(source)
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "--xattrs", "-C", str(source), "-cf", str(archive), "."], check=True)
    for target in (mountpoint, oracle):
        subprocess.run(["tar", "--xattrs", "-C", str(target), "-xpf", str(archive)], check=True)
    assert inventory(mountpoint) == inventory(oracle) == inventory(source)
    assert inventory(root) == inventory(source)
    # and back out of the mount
    again = tmp_path / "again.tar"
    subprocess.run(["tar", "--xattrs", "-C", str(mountpoint), "-cf", str(again), "."], check=True)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "--xattrs", "-C", str(out), "-xpf", str(again)], check=True)
    assert inventory(out) == inventory(source)


def test_cp_a(pair: tuple[Path, Path, Path], tmp_path: Path) -> None:
    mountpoint, _, oracle = pair
    source = tmp_path / "source"
    source.mkdir()
    populate(source)
    for target in (mountpoint, oracle):
        subprocess.run(["cp", "-a", f"{source}/.", str(target / "copy")], check=True)
    assert inventory(mountpoint / "copy") == inventory(oracle / "copy") == inventory(source)
    subprocess.run(["cp", "-a", str(mountpoint / "copy"), str(mountpoint / "copy2")], check=True)
    assert inventory(mountpoint / "copy2") == inventory(source)


def test_appends_from_two_descriptors(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, oracle = pair
    results = []
    for d in (mountpoint, oracle):
        first = os.open(d / "log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
        second = os.open(d / "log", os.O_WRONLY | os.O_APPEND)
        for index in range(50):
            os.write(first if index % 2 else second, f"line {index}\n".encode())
        os.close(first)
        os.close(second)
        results.append((d / "log").read_bytes())
    assert results[0] == results[1]


APPENDER = textwrap.dedent(
    """
    import os, sys
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
    for index in range(int(sys.argv[3])):
        os.write(fd, f"{sys.argv[2]} {index:06d}\\n".encode() * 16)
    os.close(fd)
    """
)


def test_concurrent_o_append_writers_lose_nothing(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, root, _ = pair
    count = 400
    writers = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(mountpoint / "shared"), name, str(count)])
        for name in ("alpha", "bravo", "charl")
    ]  # fmt: skip
    # a host process appends to the same file at the same time
    host = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(root / "shared"), "hostp", str(count)]
    )
    for process in [*writers, host]:
        assert process.wait(timeout=120) == 0
    lines = (mountpoint / "shared").read_bytes().splitlines()
    assert len(lines) == 4 * count * 16
    for name in (b"alpha", b"bravo", b"charl", b"hostp"):
        records = [line for line in lines if line.startswith(name + b" ")]
        assert len(records) == count * 16
        assert all(len(line) == 12 for line in records)


def test_sparse_files_and_seek_data_hole(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, oracle = pair
    outcomes = []
    for d in (mountpoint, oracle):
        fd = os.open(d / "sparse", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.pwrite(fd, b"a" * 4096, 0)
            os.pwrite(fd, b"b" * 4096, 10 << 20)
            os.fsync(fd)
            seen = [os.fstat(fd).st_size]
            for offset in (0, 4096, 8192, (10 << 20) - 1, (10 << 20) + 10):
                for whence in (os.SEEK_DATA, os.SEEK_HOLE):
                    try:
                        seen.append(os.lseek(fd, offset, whence))
                    except OSError as exc:
                        seen.append(errno.errorcode[exc.errno])
            with pytest.raises(OSError) as info:
                os.lseek(fd, 20 << 20, os.SEEK_DATA)
            seen.append(info.value.errno)
            # punch a hole: size stays, the range reads back as zeros, blocks are freed
            blocks = os.fstat(fd).st_blocks
            os.posix_fallocate(fd, 20 << 20, 1 << 20)
            seen.append((os.fstat(fd).st_size, os.fstat(fd).st_blocks > blocks))
            fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)
            seen.append((os.fstat(fd).st_size, os.pread(fd, 8, 0), os.lseek(fd, 0, os.SEEK_DATA)))
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 30 << 20, 4096)
            seen.append(os.fstat(fd).st_size)
        finally:
            os.close(fd)
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
    assert (mountpoint / "sparse").stat().st_blocks == (oracle / "sparse").stat().st_blocks


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, ctypes.c_int64(offset), ctypes.c_int64(length)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_xattr_tools(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, oracle = pair
    outputs = []
    for d in (mountpoint, oracle):
        write_file(d / "f", b"x")
        for command in (
            ["setfattr", "-n", "user.colour", "-v", "blue", "f"],
            ["setfattr", "-n", "user.empty", "f"],
            ["setfattr", "-n", "user.bin", "-v", "0x00ff10", "f"],
            ["getfattr", "-d", "-e", "hex", "f"],
            ["setfattr", "-x", "user.colour", "f"],
            ["getfattr", "-d", "f"],
            ["getfattr", "-n", "user.colour", "f"],
            ["setfattr", "-x", "user.colour", "f"],
        ):
            result = subprocess.run(command, cwd=d, capture_output=True, text=True)
            outputs.append((command, result.returncode, result.stdout, result.stderr))
    half = len(outputs) // 2
    assert outputs[:half] == outputs[half:]


def test_privileged_xattrs_are_refused(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, root, _ = pair
    write_file(root / "f", b"x")
    os.setxattr(root / "f", "trusted.hidden", b"host only")
    with pytest.raises(OSError) as info:
        os.setxattr(mountpoint / "f", "trusted.overlay.opaque", b"y")
    assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        os.getxattr(mountpoint / "f", "trusted.hidden")
    assert info.value.errno == errno.ENODATA
    assert "trusted.hidden" not in os.listxattr(mountpoint / "f")
    with pytest.raises(OSError) as info:
        os.setxattr(mountpoint / "f", "system.posix_acl_access", b"\x02\x00\x00\x00")
    assert info.value.errno == errno.EOPNOTSUPP


LOCKER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, 100, 0, os.SEEK_SET)
    print("locked", flush=True)
    sys.stdin.readline()
    os.close(fd)
    print("closed", flush=True)
    sys.stdin.readline()
    """
)


def getlk(fd: int, start: int, length: int) -> tuple[int, int, int, int]:
    flock = struct_flock(fcntl.F_WRLCK, start, length)
    answer = fcntl.fcntl(fd, fcntl.F_GETLK, flock)
    type_, _, l_start, l_len, pid = struct.unpack("hhqqi4x", answer)
    return type_, l_start, l_len, pid


def struct_flock(type_: int, start: int, length: int) -> bytes:
    return struct.pack("hhqqi4x", type_, os.SEEK_SET, start, length, 0)


def test_posix_locks_between_processes(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, root, _ = pair
    write_file(mountpoint / "locked", b"x" * 1000)
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(mountpoint / "locked")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "locked\n"
        fd = os.open(mountpoint / "locked", os.O_RDWR)
        try:
            with pytest.raises(OSError) as info:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
            assert info.value.errno in (errno.EAGAIN, errno.EACCES)
            type_, start, length, pid = getlk(fd, 0, 0)
            assert (type_, start, length, pid) == (fcntl.F_WRLCK, 0, 100, holder.pid)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 200)  # beyond the range: fine
            # a host process sees the guest's lock as well
            host_fd = os.open(root / "locked", os.O_RDWR)
            try:
                with pytest.raises(OSError):
                    fcntl.fcntl(host_fd, 37, struct_flock(fcntl.F_WRLCK, 50, 10))  # F_OFD_SETLK
            finally:
                os.close(host_fd)
            # closing the holder's descriptor releases its locks
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline() == "closed\n"
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 50)
            assert getlk(fd, 0, 0)[0] == fcntl.F_UNLCK  # own locks never conflict
        finally:
            os.close(fd)
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_flock_between_descriptors(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, _ = pair
    write_file(mountpoint / "f", b"x")
    first, second = os.open(mountpoint / "f", os.O_RDONLY), os.open(mountpoint / "f", os.O_RDONLY)
    try:
        fcntl.flock(first, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(second, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(first, fcntl.LOCK_UN)
        fcntl.flock(second, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)


def test_copy_file_range(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, root, _ = pair
    data = os.urandom(3 << 20)
    write_file(mountpoint / "src", data)
    source = os.open(mountpoint / "src", os.O_RDONLY)
    target = os.open(mountpoint / "dst", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        copied = 0
        while copied < len(data) - 100:
            count = os.copy_file_range(
                source, target, len(data) - 100 - copied, 100 + copied, copied
            )
            assert count > 0
            copied += count
    finally:
        os.close(source)
        os.close(target)
    assert (root / "dst").read_bytes() == data[100:]
    assert (mountpoint / "dst").read_bytes() == data[100:]


def test_large_file_checksum_round_trip(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, root, _ = pair
    chunk = os.urandom(1 << 20)
    digest = hashlib.sha256()
    with open(mountpoint / "big", "wb") as file:
        for index in range(200):
            block = bytes([index]) + chunk[1:]
            digest.update(block)
            file.write(block)
    expected = digest.hexdigest()
    for path in (root / "big", mountpoint / "big"):
        check = hashlib.sha256()
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                check.update(block)
        assert check.hexdigest() == expected, path
    assert (mountpoint / "big").stat().st_size == 200 << 20


def test_default_cache_policy_mount(host_dirs: tuple[Path, Path]) -> None:
    """The same POSIX checks under cache=auto (kernel page cache and attribute caching)."""
    root, oracle = host_dirs
    with passthrough_mount(root, cache="auto") as mountpoint:
        compare(posix_script(mountpoint), posix_script(oracle))


WAITER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR)
    print("waiting", flush=True)
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0, os.SEEK_SET)
    print("granted", flush=True)
    """
)


def test_killed_setlkw_waiter_leaves_no_lock_behind(pair: tuple[Path, Path, Path]) -> None:
    mountpoint, _, _ = pair
    write_file(mountpoint / "f", b"x" * 100)
    fd = os.open(mountpoint / "f", os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
        waiter = subprocess.Popen(
            [sys.executable, "-c", WAITER, str(mountpoint / "f")], stdout=subprocess.PIPE, text=True
        )
        assert waiter.stdout is not None and waiter.stdout.readline() == "waiting\n"
        time.sleep(0.3)  # inside SETLKW
        waiter.kill()  # the kernel sends INTERRUPT, then the dead process's FLUSH
        assert waiter.wait(timeout=10) == -9
        fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
        time.sleep(0.2)
        probe = subprocess.run(
            [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
             "fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)", str(mountpoint / "f")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr  # nobody holds a phantom lock
    finally:
        os.close(fd)


@contextlib.contextmanager
def tmpfs_at(path: Path) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)
        path.rmdir()


def test_submount_exdev_and_inode_tags(pair: tuple[Path, Path, Path]) -> None:
    """A file system mounted below the root: EXDEV across it as on the host, and its inode
    numbers tagged so they cannot collide with the root file system's."""
    mountpoint, root, oracle = pair
    with tmpfs_at(root / "tm"), tmpfs_at(oracle / "tm"):
        outcomes = []
        for d in (mountpoint, oracle):
            write_file(d / "file", b"x")
            write_file(d / "tm" / "inner", b"inner")
            seen = []
            for call in (
                lambda d=d: os.rename(d / "file", d / "tm" / "file"),
                lambda d=d: os.link(d / "file", d / "tm" / "hard"),
                lambda d=d: os.rename(d / "tm" / "inner", d / "inner"),
            ):
                try:
                    call()
                    seen.append("ok")
                except OSError as exc:
                    seen.append(errno.errorcode[exc.errno])
            seen.append((d / "tm" / "inner").read_bytes())
            outcomes.append(seen)
        assert outcomes[0] == outcomes[1] == ["EXDEV", "EXDEV", "EXDEV", b"inner"]
        host, seen_ino = (
            os.lstat(root / "tm" / "inner").st_ino,
            os.lstat(mountpoint / "tm" / "inner").st_ino,
        )
        assert seen_ino != host and seen_ino & ((1 << 56) - 1) == host and seen_ino >> 56 >= 1
        assert os.lstat(mountpoint / "file").st_ino == os.lstat(root / "file").st_ino


def test_submounts_off_refuses_crossing(host_dirs: tuple[Path, Path]) -> None:
    root, _ = host_dirs
    with tmpfs_at(root / "tm"):
        write_file(root / "tm" / "inner", b"inner")
        write_file(root / "plain", b"plain")
        with passthrough_mount(root, submounts=False) as mountpoint:
            assert sorted(os.listdir(mountpoint)) == ["plain"]
            with pytest.raises(OSError) as info:
                (mountpoint / "tm" / "inner").read_bytes()
            assert info.value.errno == errno.EXDEV
            assert (mountpoint / "plain").read_bytes() == b"plain"


def test_writeback_cache_mount(host_dirs: tuple[Path, Path]) -> None:
    """With the kernel's writeback cache: the same POSIX checks, appends through two
    descriptors, and reads of partial pages through write-only descriptors."""
    root, oracle = host_dirs
    require_fuse()
    mountpoint = reachable_dir("vfsframe-pt-mnt-")
    share = share_config({"type": "passthrough", "root": str(root)}, writeback_cache=True)
    try:
        with mounted_share(mountpoint, share):
            compare(posix_script(mountpoint), posix_script(oracle))
            fds = [os.open(mountpoint / "log", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)]
            fds.append(os.open(mountpoint / "log", os.O_WRONLY | os.O_APPEND))
            for index in range(40):
                os.write(fds[index % 2], f"{index:04d} ".encode())
            write_only = os.open(mountpoint / "partial", os.O_CREAT | os.O_WRONLY, 0o200)
            os.pwrite(write_only, b"ab", 4097)  # the kernel must read the page around it
            for fd in [*fds, write_only]:
                os.fsync(fd)
                os.close(fd)
        assert (root / "log").read_bytes() == b"".join(f"{i:04d} ".encode() for i in range(40))
        assert (root / "partial").read_bytes() == b"\0" * 4097 + b"ab"
    finally:
        mountpoint.rmdir()

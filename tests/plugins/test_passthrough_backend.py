"""The passthrough backend in-process: config refusal, lock owners, append semantics,
creation as the caller, readonly, xattr policy, readdir attributes, inode tags."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vfsframe_plugins.passthrough import PassthroughBackend, PassthroughConfig
from vfsframe_plugins.passthrough.backend import FUSE_WRITE_CACHE
from vfsframe_plugins.passthrough.inodes import InodeNumbers

from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.config import ConfigError
from vfsframe.testing.mount import share_config

ROOT = ops.Context(0, 0, os.getpid(), 0o022)
WHOLE = (1 << 63) - 1


def make_chain(root: Path, **options: object) -> ShareChain:
    return ShareChain(PassthroughBackend(PassthroughConfig(root=root, **options)))


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[ShareChain]:
    chain = make_chain(tmp_path)
    yield chain
    chain.close()


def create(chain: ShareChain, path: str, flags: int = os.O_RDWR, ctx: ops.Context = ROOT) -> object:
    fh, _ = chain.create(ops.CreateRequest(ctx, path, flags, 0o666))
    return fh


def write(chain: ShareChain, fh: object, data: bytes, offset: int = 0, **kw: int) -> int:
    return chain.write(
        ops.WriteRequest(ROOT, "/f", fh, offset, [memoryview(data)], len(data), **kw)
    )


@pytest.mark.parametrize(
    ("root", "why"),
    [
        ("/nonexistent/dir", "No such file"),
        ("/etc/hostname", "not a directory"),
        ("rel", "absolute"),
    ],
)
def test_root_is_checked_at_config_time(root: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        share_config({"type": "passthrough", "root": root})
    assert "share[0].backend.root" in str(info.value) and why in str(info.value)


def test_capabilities_follow_config(tmp_path: Path) -> None:
    on, off = make_chain(tmp_path), make_chain(tmp_path, posix_locks=False, flock=False)
    assert on.capability("posix_locks") and on.capability("flock_locks")
    assert not off.capability("posix_locks") and not off.capability("flock_locks")
    on.close()
    off.close()


def test_zero_copy_read_into_buffers(chain: ShareChain, tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"0123456789" * 1000)
    fh = chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDONLY))
    first, second = bytearray(3), bytearray(10000)
    count = chain.read(
        ops.ReadRequest(ROOT, "/f", fh, 2, 10003, [memoryview(first), memoryview(second)])
    )
    assert count == 9998 and first == b"234" and second[:7] == b"5678901"
    chain.release(ops.ReleaseRequest(ROOT, "/f", fh))


def test_scattered_write(chain: ShareChain, tmp_path: Path) -> None:
    fh = create(chain, "/f")
    views = [memoryview(b"abc"), memoryview(b""), memoryview(b"defg")]
    assert chain.write(ops.WriteRequest(ROOT, "/f", fh, 5, views, 7)) == 7
    chain.release(ops.ReleaseRequest(ROOT, "/f", fh))
    assert (tmp_path / "f").read_bytes() == b"\0" * 5 + b"abcdefg"


def test_append_lands_at_host_end_unless_written_back(chain: ShareChain, tmp_path: Path) -> None:
    fh = create(chain, "/f", os.O_WRONLY | os.O_APPEND)
    write(chain, fh, b"one", 0, flags=os.O_WRONLY | os.O_APPEND)
    with open(tmp_path / "f", "ab") as host:  # a host process appends meanwhile
        host.write(b"HOST")
    write(chain, fh, b"two", 3, flags=os.O_WRONLY | os.O_APPEND)  # the client's stale offset
    assert (tmp_path / "f").read_bytes() == b"oneHOSTtwo"
    write(chain, fh, b"X", 0, flags=0, write_flags=FUSE_WRITE_CACHE)  # a cached page: in place
    assert (tmp_path / "f").read_bytes() == b"XneHOSTtwo"
    # the kernel may read a write-only handle (writeback cache partial pages)
    assert chain.read(ops.ReadRequest(ROOT, "/f", fh, 0, 3)) == b"Xne"
    chain.release(ops.ReleaseRequest(ROOT, "/f", fh))


def lock(chain: ShareChain, fh: object, owner: int, kind: int, start: int, end: int,
         wait: bool = False) -> None:  # fmt: skip
    chain.setlk(ops.SetlkRequest(ROOT, "/f", fh, owner, ops.Lock(start, end, kind, owner), wait))


def test_record_locks_per_owner(chain: ShareChain) -> None:
    first, second = create(chain, "/f"), chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDWR))
    lock(chain, first, 1, fcntl.F_WRLCK, 0, 99)
    lock(chain, first, 1, fcntl.F_RDLCK, 50, 60)  # one owner: converts, never conflicts
    with pytest.raises(OSError) as info:
        lock(chain, second, 2, fcntl.F_WRLCK, 10, 10)
    assert info.value.errno == errno.EAGAIN
    lock(chain, second, 2, fcntl.F_RDLCK, 55, 56)  # shares owner 1's read range
    found = chain.getlk(
        ops.GetlkRequest(ROOT, "/f", second, 2, ops.Lock(0, WHOLE, fcntl.F_WRLCK, 2))
    )
    assert (found.type, found.start, found.end, found.pid) == (fcntl.F_WRLCK, 0, 49, 1)
    free = chain.getlk(ops.GetlkRequest(ROOT, "/f", first, 1, ops.Lock(0, WHOLE, fcntl.F_WRLCK, 1)))
    assert free.type != fcntl.F_WRLCK or free.pid == 2  # only owner 2's read lock can conflict
    # flush by owner 1 (its close) releases its locks; owner 2 may now lock [0, 49]
    chain.flush(ops.FlushRequest(ROOT, "/f", first, 1))
    lock(chain, second, 2, fcntl.F_WRLCK, 0, 49)
    for fh in (first, second):
        chain.release(ops.ReleaseRequest(ROOT, "/f", fh))


def test_setlkw_waits_without_blocking_others(chain: ShareChain) -> None:
    first, second = create(chain, "/f"), chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDWR))
    lock(chain, first, 1, fcntl.F_WRLCK, 0, WHOLE)
    granted = threading.Event()

    def waiter() -> None:
        lock(chain, second, 2, fcntl.F_WRLCK, 0, 10, wait=True)
        granted.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)
    assert not granted.is_set()
    # other requests, including other lock calls, go on while SETLKW waits
    assert chain.getattr(ops.GetattrRequest(ROOT, "/f")).st_size == 0
    lock(chain, first, 1, fcntl.F_UNLCK, 0, WHOLE)
    thread.join(10)
    assert granted.is_set()
    for fh in (first, second):
        chain.release(ops.ReleaseRequest(ROOT, "/f", fh))


def test_setlkw_ends_on_interrupt(chain: ShareChain) -> None:
    first, second = create(chain, "/f"), chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDWR))
    lock(chain, first, 1, fcntl.F_WRLCK, 0, WHOLE)
    ctx = ops.Context(0, 0, 2, 0o022, threading.Event())
    outcome: list[BaseException] = []

    def waiter() -> None:
        req = ops.SetlkRequest(ctx, "/f", second, 2, ops.Lock(0, 0, fcntl.F_WRLCK, 2), wait=True)
        try:
            chain.setlk(req)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)
    assert ctx.interrupt is not None
    ctx.interrupt.set()
    thread.join(5)
    assert not thread.is_alive() and outcome and outcome[0].errno == errno.EINTR
    for fh in (first, second):
        chain.release(ops.ReleaseRequest(ROOT, "/f", fh))


def test_flock(chain: ShareChain) -> None:
    first, second = create(chain, "/f"), chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDONLY))
    req = ops.SetlkRequest(ROOT, "/f", first, 1, ops.Lock(0, WHOLE, fcntl.F_WRLCK, 1), flock=True)
    chain.setlk(req)
    with pytest.raises(OSError) as info:
        chain.setlk(
            ops.SetlkRequest(
                ROOT, "/f", second, 2, ops.Lock(0, WHOLE, fcntl.F_RDLCK, 2), flock=True
            )
        )
    assert info.value.errno == errno.EAGAIN
    for fh in (first, second):
        chain.release(ops.ReleaseRequest(ROOT, "/f", fh))


def test_creation_as_caller_with_umask_and_setgid(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, preserve_ownership=True)
    (tmp_path / "g").mkdir()
    os.chown(tmp_path / "g", 0, 50)
    os.chmod(tmp_path / "g", 0o2777)
    user = ops.Context(1000, 1000, 1, 0o027)
    try:
        fh = create(chain, "/g/file", ctx=user)
        chain.release(ops.ReleaseRequest(user, "/g/file", fh))
        chain.mkdir(ops.MkdirRequest(user, "/g/dir", 0o777))
        chain.symlink(ops.SymlinkRequest(user, "/g/link", "file"))
        chain.mknod(ops.MknodRequest(user, "/g/fifo", stat.S_IFIFO | 0o666))
        with pytest.raises(OSError) as info:
            chain.mknod(ops.MknodRequest(user, "/g/dev", stat.S_IFCHR | 0o666, os.makedev(1, 3)))
        assert info.value.errno == errno.EPERM
        # the host refuses what the caller could not do: uid 1000 cannot write into a 0755 root dir
        (tmp_path / "private").mkdir(mode=0o755)
        with pytest.raises(PermissionError):
            chain.mkdir(ops.MkdirRequest(user, "/private/x", 0o777))
    finally:
        chain.close()
    file, directory = (tmp_path / "g" / "file").stat(), (tmp_path / "g" / "dir").stat()
    assert (file.st_uid, file.st_gid, stat.S_IMODE(file.st_mode)) == (1000, 50, 0o640)
    assert (directory.st_uid, directory.st_gid) == (1000, 50)
    assert stat.S_IMODE(directory.st_mode) == 0o2750  # setgid inherited, umask applied
    assert (tmp_path / "g" / "link").lstat().st_uid == 1000
    assert stat.S_IMODE((tmp_path / "g" / "fifo").stat().st_mode) == 0o640
    # the worker's ids are restored afterwards
    assert os.getuid() == 0
    (tmp_path / "after").write_bytes(b"x")
    assert (tmp_path / "after").stat().st_uid == 0


def test_without_preserve_ownership_files_are_ours(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, preserve_ownership=False)
    user = ops.Context(1000, 1000, 1, 0o022)
    chain.mkdir(ops.MkdirRequest(user, "/d", 0o777))
    chain.close()
    st = (tmp_path / "d").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), os.getegid(), 0o755)


def test_readonly_refuses_every_change(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    chain = make_chain(tmp_path, readonly=True)
    fh = chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDONLY))
    attempts = [
        lambda: chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDWR)),
        lambda: chain.create(ops.CreateRequest(ROOT, "/g", os.O_WRONLY, 0o644)),
        lambda: chain.mkdir(ops.MkdirRequest(ROOT, "/d", 0o755)),
        lambda: chain.setattr(ops.SetattrRequest(ROOT, "/f", mode=0o600)),
        lambda: chain.setxattr(ops.SetxattrRequest(ROOT, "/f", "user.a", b"1")),
        lambda: chain.write(ops.WriteRequest(ROOT, "/f", fh, 0, [memoryview(b"x")], 1)),
        lambda: chain.fallocate(ops.FallocateRequest(ROOT, "/f", fh, 0, 0, 10)),
        lambda: chain.unlink(ops.UnlinkRequest(ROOT, "/f")),
        lambda: chain.rename(ops.RenameRequest(ROOT, "/f", "/h")),
        lambda: chain.access(ops.AccessRequest(ROOT, "/f", os.W_OK)),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    assert chain.read(ops.ReadRequest(ROOT, "/f", fh, 0, 10)) == b"data"
    chain.release(ops.ReleaseRequest(ROOT, "/f", fh))
    chain.close()


def test_xattr_policy(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    os.setxattr(tmp_path / "f", "trusted.t", b"1")
    os.setxattr(tmp_path / "f", "user.u", b"2")
    chain = make_chain(tmp_path)
    assert chain.listxattr(ops.ListxattrRequest(ROOT, "/f")) == ["user.u"]
    with pytest.raises(OSError) as info:
        chain.getxattr(ops.GetxattrRequest(ROOT, "/f", "trusted.t"))
    assert info.value.errno == errno.ENODATA
    with pytest.raises(OSError) as info:
        chain.setxattr(ops.SetxattrRequest(ROOT, "/f", "security.capability", b"x"))
    assert info.value.errno == errno.EPERM
    with pytest.raises(OSError) as info:
        chain.setxattr(ops.SetxattrRequest(ROOT, "/f", "user.u", b"3", os.XATTR_CREATE))
    assert info.value.errno == errno.EEXIST
    chain.close()
    privileged = make_chain(tmp_path, privileged_xattrs=True)
    assert privileged.getxattr(ops.GetxattrRequest(ROOT, "/f", "trusted.t")) == b"1"
    privileged.close()
    off = make_chain(tmp_path, xattr=False)
    with pytest.raises(OSError) as info:
        off.getxattr(ops.GetxattrRequest(ROOT, "/f", "user.u"))
    assert info.value.errno == errno.EOPNOTSUPP
    off.close()


def test_readdir_entries_carry_attributes(chain: ShareChain, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"12345")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to("/nowhere")
    fh = chain.opendir(ops.OpendirRequest(ROOT, "/"))
    for _ in range(2):  # a second listing through the same handle starts from the top
        entries = {e.name: e for e in chain.readdir(ops.ReaddirRequest(ROOT, "/", fh))}
        assert set(entries) == {"file", "dir", "link"}
        assert entries["file"].attr.st_size == 5
        assert entries["file"].ino == (tmp_path / "file").stat().st_ino
        assert stat.S_ISLNK(entries["link"].mode)
    chain.releasedir(ops.ReleasedirRequest(ROOT, "/", fh))


def test_other_devices_get_tagged_inode_numbers(tmp_path: Path) -> None:
    numbers = InodeNumbers(root_dev=os.stat(tmp_path).st_dev)
    same = os.stat(tmp_path)
    assert numbers.attr(same) is same
    proc = os.stat("/proc/self")
    tagged = numbers.attr(proc)
    assert tagged.st_ino == proc.st_ino ^ (1 << 56) and tagged.st_mode == proc.st_mode
    assert numbers.attr(os.stat("/sys")).st_ino >> 56 == 2


def test_special_files_are_not_opened_blindly(chain: ShareChain, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(OSError) as info:
        chain.open(ops.OpenRequest(ROOT, "/null", os.O_RDWR))
    assert info.value.errno == errno.EPERM
    fh = chain.open(ops.OpenRequest(ROOT, "/fifo", os.O_RDONLY))  # does not hang
    chain.release(ops.ReleaseRequest(ROOT, "/fifo", fh))
    with pytest.raises(OSError) as info:
        chain.mknod(ops.MknodRequest(ROOT, "/dev", stat.S_IFBLK | 0o600, os.makedev(7, 0)))
    assert info.value.errno == errno.EPERM


def test_fallocate_lseek_copy_file_range(chain: ShareChain, tmp_path: Path) -> None:
    src = create(chain, "/f")
    write(chain, src, b"x" * 4096, 1 << 20)
    assert chain.lseek(ops.LseekRequest(ROOT, "/f", src, 0, os.SEEK_DATA)) == 1 << 20
    assert chain.lseek(ops.LseekRequest(ROOT, "/f", src, 0, os.SEEK_HOLE)) == 0
    chain.fallocate(ops.FallocateRequest(ROOT, "/f", src, 3, 1 << 20, 4096))  # punch | keep
    assert (tmp_path / "f").stat().st_size == (1 << 20) + 4096
    assert (tmp_path / "f").read_bytes().count(b"x") == 0
    write(chain, src, b"hello", 0)
    dst, _ = chain.create(ops.CreateRequest(ROOT, "/g", os.O_RDWR, 0o644))
    req = ops.CopyFileRangeRequest(ROOT, "/f", src, 1, "/g", dst, 2, 4)
    assert chain.copy_file_range(req) == 4
    assert (tmp_path / "g").read_bytes() == b"\0\0ello"
    chain.fsync(ops.FsyncRequest(ROOT, "/g", dst, datasync=True))
    directory = chain.opendir(ops.OpendirRequest(ROOT, "/"))
    for datasync in (False, True):
        chain.fsyncdir(ops.FsyncdirRequest(ROOT, "/", directory, datasync))
    chain.releasedir(ops.ReleasedirRequest(ROOT, "/", directory))
    chain.syncfs(ops.SyncfsRequest(ROOT))
    for fh in (src, dst):
        chain.release(ops.ReleaseRequest(ROOT, "", fh))


def test_devices_when_allowed(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, allow_devices=True)
    attr = chain.mknod(ops.MknodRequest(ROOT, "/null", stat.S_IFCHR | 0o666, os.makedev(1, 3)))
    assert stat.S_ISCHR(attr.st_mode) and attr.st_rdev == os.makedev(1, 3)
    fh = chain.open(ops.OpenRequest(ROOT, "/null", os.O_RDWR))
    assert chain.write(ops.WriteRequest(ROOT, "/null", fh, 0, [memoryview(b"gone")], 4)) == 4
    chain.release(ops.ReleaseRequest(ROOT, "/null", fh))
    chain.close()


@pytest.mark.parametrize(("policy", "expected"), [("strip", 0), ("passthrough", os.O_DIRECT)])
def test_direct_io_policy(tmp_path: Path, policy: str, expected: int) -> None:
    (tmp_path / "f").write_bytes(b"x" * 4096)
    chain = make_chain(tmp_path, direct_io=policy)
    fh = chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDONLY | os.O_DIRECT))
    assert fcntl.fcntl(fh.fd, fcntl.F_GETFL) & os.O_DIRECT == expected  # type: ignore[attr-defined]
    chain.release(ops.ReleaseRequest(ROOT, "/f", fh))
    chain.close()


def test_direct_io_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    chain = make_chain(tmp_path, direct_io="refuse")
    with pytest.raises(OSError) as info:
        chain.open(ops.OpenRequest(ROOT, "/f", os.O_RDONLY | os.O_DIRECT))
    assert info.value.errno == errno.EINVAL
    chain.close()


def test_empty_path_without_handle_never_means_the_root(chain: ShareChain, tmp_path: Path) -> None:
    before = (tmp_path).stat()
    for call in (
        lambda: chain.setattr(ops.SetattrRequest(ROOT, "", mode=0o777)),
        lambda: chain.getattr(ops.GetattrRequest(ROOT, "")),
        lambda: chain.setxattr(ops.SetxattrRequest(ROOT, "", "user.x", b"1")),
    ):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.ENOENT
    assert tmp_path.stat().st_mode == before.st_mode
    fh = create(chain, "/f")
    chain.unlink(ops.UnlinkRequest(ROOT, "/f"))
    attr = chain.setattr(ops.SetattrRequest(ROOT, "", fh, mode=0o600, size=3))
    assert stat.S_IMODE(attr.st_mode) == 0o600 and attr.st_size == 3 and attr.st_nlink == 0
    chain.release(ops.ReleaseRequest(ROOT, "", fh))

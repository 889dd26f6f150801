"""Every opcode through the session: encoded as the kernel would, served by a memory share,
and the reply decoded and checked against what the operation means."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfsframe import ops
from vfsframe.chain import ShareChain
from vfsframe.fuse import abi
from vfsframe.fuse.abi import InitFlag, Opcode
from vfsframe.handlers import HANDLERS
from vfsframe.handlers import call as call_module
from vfsframe.plugin import Backend
from vfsframe.session import FuseSession, SessionOptions

from .conftest import memory_session
from .kernel import (
    ALL_INIT_FLAGS,
    ARGUMENTS,
    FakeKernel,
    FuseError,
    at,
    cstr,
    every,
)

ROOT = abi.ROOT_ID
SEEK_DATA, SEEK_HOLE = 3, 4


def fails(code: int) -> Any:
    """Expect an errno reply of exactly ``code``."""
    return pytest.raises(FuseError, match=rf"^{errno.errorcode[code]} ")


def same_attr(a: dict[str, int], b: dict[str, int]) -> None:
    """Attributes of one unchanged inode (atime may move when it is read)."""
    keys = set(a) - {"atime", "atimensec"}
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}


# -- INIT and the connection ---------------------------------------------------------------


def test_init_negotiates_version_and_limits(session: FuseSession) -> None:
    reply = FakeKernel(session).init(minor=31, max_readahead=1 << 16, flags=ALL_INIT_FLAGS)
    assert (reply["major"], reply["minor"]) == (7, 31)
    assert reply["max_readahead"] == 1 << 16  # the smaller of the kernel's and ours
    assert reply["max_write"] == 1 << 20
    assert reply["max_pages"] == 256
    assert reply["time_gran"] == 1
    assert 0 < reply["congestion_threshold"] <= reply["max_background"]
    # What the memory share can do is asked for; what it cannot is not.
    assert reply["flags"] & InitFlag.POSIX_LOCKS
    assert reply["flags"] & InitFlag.FLOCK_LOCKS
    assert reply["flags"] & InitFlag.DO_READDIRPLUS
    assert not reply["flags"] & InitFlag.WRITEBACK_CACHE
    assert not reply["flags"] & InitFlag.SETXATTR_EXT  # would change SETXATTR's layout
    assert session.initialized


@pytest.mark.parametrize(
    "offered",
    [
        0,
        int(InitFlag.ASYNC_READ),
        int(InitFlag.POSIX_LOCKS | InitFlag.WRITEBACK_CACHE | InitFlag.MAX_PAGES),
        0x5555_5555,
        0x2AAA_AAAA,
        ALL_INIT_FLAGS,
        0xFFFF_FFFF,
    ],
)
@pytest.mark.parametrize("writeback", [False, True])
def test_init_flags_are_a_subset_of_the_offer(offered: int, writeback: bool) -> None:
    session = memory_session(SessionOptions(writeback_cache=writeback))
    flags = FakeKernel(session).init(flags=offered)["flags"]
    assert flags & ~offered == 0
    assert session.flags == flags
    wants_writeback = writeback and bool(offered & InitFlag.WRITEBACK_CACHE)
    assert bool(flags & InitFlag.WRITEBACK_CACHE) == wants_writeback


@pytest.mark.parametrize(("minor", "answered"), [(27, 27), (29, 29), (31, 31), (36, 31), (40, 31)])
def test_init_answers_the_older_minor(session: FuseSession, minor: int, answered: int) -> None:
    assert FakeKernel(session).init(minor=minor)["minor"] == answered
    assert session.proto_minor == answered


@pytest.mark.parametrize(
    ("max_write", "expected", "pages"),
    [
        (100, 4096, 1),
        (4096, 4096, 1),
        (4097, 4097, 2),
        (1 << 17, 1 << 17, 32),
        (1 << 20, 1 << 20, 256),
    ],
)
def test_init_max_write_and_max_pages(max_write: int, expected: int, pages: int) -> None:
    session = memory_session(SessionOptions(max_write=max_write))
    reply = FakeKernel(session).init()
    assert (reply["max_write"], reply["max_pages"]) == (expected, pages)
    assert session.max_write == expected


@pytest.mark.parametrize(("major", "minor"), [(7, 26), (7, 0), (6, 40), (0, 0)])
def test_init_refuses_old_protocols(session: FuseSession, major: int, minor: int) -> None:
    kernel = FakeKernel(session)
    with fails(errno.EPROTO):
        kernel.init(major=major, minor=minor)
    assert not session.initialized
    with fails(errno.EIO):
        kernel.getattr(ROOT)


def test_init_from_a_newer_major_only_states_ours(session: FuseSession) -> None:
    kernel = FakeKernel(session)
    reply = kernel.init(major=8, minor=2)
    assert (reply["major"], reply["minor"]) == (7, abi.MAX_MINOR)
    assert all(value == 0 for key, value in reply.items() if key not in ("major", "minor"))
    assert not session.initialized and session.flags == 0
    with fails(errno.EIO):
        kernel.getattr(ROOT)
    # The kernel then retries with our major.
    assert kernel.init(major=7, minor=31)["minor"] == 31
    assert kernel.getattr(ROOT)["attr"]["ino"] == 1


def test_init_with_short_arguments(session: FuseSession) -> None:
    kernel = FakeKernel(session)
    with fails(errno.EINVAL):
        kernel.call(Opcode.INIT, 0, abi.INIT_IN.pack(7, 31, 0, 0)[:12])
    assert not session.initialized


@pytest.mark.parametrize(
    ("opcode", "body"),
    [
        (Opcode.GETATTR, abi.GETATTR_IN.pack(0, 0, 0)),
        (Opcode.LOOKUP, b"a\0"),
        (Opcode.STATFS, b""),
        (Opcode.OPENDIR, abi.OPEN_IN.pack(0, 0)),
        (Opcode.MKDIR, abi.MKDIR_IN.pack(0o755, 0) + b"d\0"),
        (Opcode.DESTROY, b""),
    ],
)
def test_requests_before_init_fail_with_eio(session: FuseSession, opcode: int, body: bytes) -> None:
    with fails(errno.EIO):
        FakeKernel(session).call(opcode, ROOT, body)
    assert len(session.nodes) == 1


@pytest.mark.parametrize("opcode", [0, 3000, 37, 39, 40, 41, 48, 49, 51, 52, 53, 99, 0xFFFFFFFF])
def test_unknown_or_unsupported_opcode_is_enosys(kernel: FakeKernel, opcode: int) -> None:
    with fails(errno.ENOSYS):
        kernel.call(opcode, ROOT, bytes(64))
    assert kernel.getattr(ROOT)["attr"]["ino"] == 1


def test_unknown_opcode_before_init_is_enosys(session: FuseSession) -> None:
    with fails(errno.ENOSYS):
        FakeKernel(session).call(Opcode.IOCTL, ROOT, bytes(32))


def test_destroy_ends_the_connection_and_a_new_init_starts_over(kernel: FakeKernel) -> None:
    session = kernel.session
    kept = kernel.write_file(ROOT, "kept", b"data")
    opened = kernel.open(kept["nodeid"])
    kernel.destroy()
    assert session.destroyed.is_set()
    assert len(session.nodes) == 1 and len(session.handles) == 0
    with fails(errno.EIO):
        kernel.getattr(ROOT)
    kernel.init()
    # The old nodeid and handle are gone; the file itself stayed in the share.
    with fails(errno.ESTALE):
        kernel.getattr(kept["nodeid"])
    with fails(errno.EBADF):
        kernel.read(ROOT, opened["fh"], 0, 10)
    entry = kernel.lookup(ROOT, "kept")
    assert entry["attr"]["size"] == 4


def test_interrupt_gets_no_reply_and_changes_nothing(kernel: FakeKernel) -> None:
    kernel.interrupt(12345)
    kernel.interrupt(0)
    assert kernel.getattr(ROOT)["attr"]["ino"] == 1


def test_statfs_reports_the_share(session: FuseSession) -> None:
    session = memory_session(capacity=64 << 20, max_inodes=1000)
    kernel = FakeKernel(session)
    kernel.init()
    before = kernel.statfs()
    assert before["bsize"] == before["frsize"] == 4096
    assert before["blocks"] == (64 << 20) // 4096
    assert before["bfree"] == before["bavail"] == before["blocks"]
    assert (before["files"], before["ffree"], before["namelen"]) == (1000, 999, 255)
    kernel.write_file(ROOT, "f", b"x" * 100_000)
    after = kernel.statfs()
    assert after["bfree"] < before["bfree"]
    assert after["ffree"] == 998


def test_syncfs_and_fsyncdir_answer_empty(kernel: FakeKernel) -> None:
    kernel.syncfs()
    fh = kernel.opendir(ROOT)["fh"]
    kernel.fsyncdir(ROOT, fh)
    kernel.fsyncdir(ROOT, fh, datasync=True)
    with fails(errno.EBADF):
        kernel.fsyncdir(ROOT, fh + 100)


# -- the request header --------------------------------------------------------------------


@pytest.mark.parametrize("delta", [-8, -1, 1, 100])
def test_header_length_not_matching_the_request(kernel: FakeKernel, delta: int) -> None:
    body = abi.MKDIR_IN.pack(0o755, 0) + b"dir\0"
    reply = kernel.send(Opcode.MKDIR, ROOT, body, length=abi.IN_HEADER.size + len(body) + delta)
    assert reply is not None and reply.error == -errno.EINVAL
    with fails(errno.ENOENT):
        kernel.lookup(ROOT, "dir")


def test_request_shorter_than_a_header_gets_no_reply(kernel: FakeKernel) -> None:
    reply = [memoryview(bytearray(64))]
    request = abi.IN_HEADER.pack(39, Opcode.GETATTR, 7, ROOT, 0, 0, 0, 0, 0)[:39]
    assert kernel.session.handle([memoryview(request)], reply) == 0
    assert kernel.session.handle([], reply) == 0
    assert kernel.session.handle([memoryview(b"")], reply) == 0


def test_extension_length_beyond_the_request(kernel: FakeKernel) -> None:
    reply = kernel.send(Opcode.GETATTR, ROOT, abi.GETATTR_IN.pack(0, 0, 0), extlen=3)
    assert reply is not None and reply.error == -errno.EINVAL


def test_extensions_are_not_taken_for_arguments(kernel: FakeKernel) -> None:
    # Since 7.38 extensions (security context, supplementary groups) follow the arguments.
    extension = b"secctx\xff\xff" + bytes(8)
    body = abi.MKDIR_IN.pack(0o700, 0) + b"withext\0" + extension
    entry = kernel.call(Opcode.MKDIR, ROOT, body, extlen=len(extension) // 8)
    assert len(entry) == abi.ENTRY_OUT.size
    assert kernel.lookup(ROOT, "withext")["attr"]["mode"] == stat.S_IFDIR | 0o700
    # A WRITE's payload ends where the extensions start.
    created, opened = kernel.create(ROOT, "f")
    body = abi.WRITE_IN.pack(opened["fh"], 0, 5, 0, 0, 0, 0) + b"hello" + bytes(8)
    assert kernel.call(Opcode.WRITE, created["nodeid"], body, extlen=1)[:4] == (5).to_bytes(
        4, "little"
    )
    assert kernel.read(created["nodeid"], opened["fh"], 0, 100) == b"hello"


# Opcodes with a fixed argument struct the session reads (SYNCFS's padding and INTERRUPT,
# which is ignored, are not read).
STRUCT_OPCODES = sorted(
    op
    for op, (layout, _) in ARGUMENTS.items()
    if layout is not None and op not in (Opcode.SYNCFS, Opcode.INTERRUPT)
)


@pytest.mark.parametrize("opcode", STRUCT_OPCODES, ids=lambda op: Opcode(op).name)
def test_short_argument_structs_are_einval(kernel: FakeKernel, opcode: int) -> None:
    layout, _ = ARGUMENTS[opcode]
    assert layout is not None
    for size in (0, layout.size - 1):
        reply = kernel.send(opcode, ROOT, bytes(size))
        if opcode in (Opcode.FORGET, Opcode.BATCH_FORGET) and reply is None:
            continue  # the kernel never waits for these: not answering is as good
        assert reply is not None and reply.error == -errno.EINVAL, (Opcode(opcode).name, size)
    assert kernel.getattr(ROOT)["attr"]["ino"] == 1


def test_unknown_nodeid_is_estale(kernel: FakeKernel) -> None:
    with fails(errno.ESTALE):
        kernel.getattr(4242)
    with fails(errno.ESTALE):
        kernel.lookup(4242, "x")
    with fails(errno.ESTALE):
        kernel.mkdir(4242, "x")
    with fails(errno.ESTALE):
        kernel.open(0)
    with fails(errno.ESTALE):
        kernel.statfs(4242)
    file = kernel.write_file(ROOT, "f", b"")
    with fails(errno.ESTALE):
        kernel.link(4242, ROOT, "g")
    with fails(errno.ESTALE):
        kernel.rename(ROOT, "f", 4242, "g")
    assert kernel.lookup(ROOT, "f")["nodeid"] == file["nodeid"]


# -- names -----------------------------------------------------------------------------------


BAD_NAMES = [
    (b"", errno.EINVAL),
    (b".", errno.EINVAL),
    (b"..", errno.EINVAL),
    (b"a/b", errno.EINVAL),
    (b"/", errno.EINVAL),
    (b"x" * 256, errno.ENAMETOOLONG),
    (b"\xc3" * 300, errno.ENAMETOOLONG),
]


def _creators(kernel: FakeKernel, target: int) -> dict[str, Any]:
    return {
        "mkdir": lambda name: kernel.mkdir(ROOT, name),
        "create": lambda name: kernel.create(ROOT, name),
        "mknod": lambda name: kernel.mknod(ROOT, name, stat.S_IFIFO | 0o644),
        "symlink": lambda name: kernel.symlink(ROOT, name, "target"),
        "link": lambda name: kernel.link(target, ROOT, name),
        "rename-to": lambda name: kernel.rename(ROOT, "file", ROOT, name),
        "rename-from": lambda name: kernel.rename(ROOT, name, ROOT, "other"),
        "rename2": lambda name: kernel.rename2(ROOT, "file", ROOT, name, ops.RENAME_NOREPLACE),
        "unlink": lambda name: kernel.unlink(ROOT, name),
        "rmdir": lambda name: kernel.rmdir(ROOT, name),
    }


@pytest.mark.parametrize(("name", "code"), BAD_NAMES)
@pytest.mark.parametrize(
    "op",
    ["mkdir", "create", "mknod", "symlink", "link", "rename-to", "rename-from", "rename2",
     "unlink", "rmdir"],
)  # fmt: skip
def test_names_that_could_escape_are_refused(
    kernel: FakeKernel, op: str, name: bytes, code: int
) -> None:
    target = kernel.write_file(ROOT, "file", b"")["nodeid"]
    before = kernel.list_names(ROOT)
    with fails(code):
        _creators(kernel, target)[op](name)
    assert kernel.list_names(ROOT) == before


@pytest.mark.parametrize(("name", "code"), [n for n in BAD_NAMES if n[0] not in (b".", b"..")])
def test_lookup_refuses_bad_names(kernel: FakeKernel, name: bytes, code: int) -> None:
    with fails(code):
        kernel.lookup(ROOT, name)


@pytest.mark.parametrize(
    ("opcode", "body"),
    [
        (Opcode.LOOKUP, b"noterminator"),
        (Opcode.MKDIR, abi.MKDIR_IN.pack(0o755, 0) + b"noterminator"),
        (Opcode.CREATE, abi.CREATE_IN.pack(os.O_RDWR, 0o644, 0, 0) + b"noterminator"),
        (Opcode.MKNOD, abi.MKNOD_IN.pack(stat.S_IFIFO, 0, 0, 0) + b"noterminator"),
        (Opcode.SYMLINK, b"name\0target-without-nul"),
        (Opcode.RENAME, abi.RENAME_IN.pack(ROOT) + b"a\0b"),
        (Opcode.LINK, abi.LINK_IN.pack(ROOT) + b"name"),
        (Opcode.UNLINK, b"a"),
        (Opcode.GETXATTR, abi.GETXATTR_IN.pack(10, 0) + b"user.a"),
        (Opcode.REMOVEXATTR, b"user.a"),
    ],
)
def test_names_without_their_nul_are_einval(kernel: FakeKernel, opcode: int, body: bytes) -> None:
    with fails(errno.EINVAL):
        kernel.call(opcode, ROOT, body)
    assert kernel.list_names(ROOT) == [b".", b".."]


def test_longest_name_and_any_bytes_work(kernel: FakeKernel) -> None:
    longest = b"n" * 255
    entry = kernel.mkdir(ROOT, longest)
    assert kernel.lookup(ROOT, longest)["nodeid"] == entry["nodeid"]
    odd = b"\xff\xfe not utf-8 \x01\t"
    entry = kernel.write_file(ROOT, os.fsdecode(odd), b"")
    assert kernel.lookup(ROOT, odd)["nodeid"] == entry["nodeid"]
    assert odd in kernel.list_names(ROOT)


def test_dot_and_dotdot_lookups(kernel: FakeKernel) -> None:
    a = kernel.mkdir(ROOT, "a")
    b = kernel.mkdir(a["nodeid"], "b")
    assert kernel.lookup(b["nodeid"], ".")["nodeid"] == b["nodeid"]
    assert kernel.lookup(b["nodeid"], "..")["nodeid"] == a["nodeid"]
    assert kernel.lookup(a["nodeid"], "..")["nodeid"] == ROOT
    assert kernel.lookup(ROOT, "..")["nodeid"] == ROOT


# -- entries and attributes ----------------------------------------------------------------


def test_mkdir_then_lookup_and_getattr_agree(kernel: FakeKernel) -> None:
    made = kernel.mkdir(ROOT, "dir", 0o750)
    assert made["nodeid"] not in (0, ROOT)
    assert made["attr"]["mode"] == stat.S_IFDIR | 0o750
    assert made["attr"]["nlink"] == 2
    assert made["entry_valid"] == (1, 0) and made["attr_valid"] == (1, 0)  # cache=auto
    found = kernel.lookup(ROOT, "dir")
    assert found["nodeid"] == made["nodeid"]
    same_attr(found["attr"], made["attr"])
    same_attr(kernel.getattr(made["nodeid"])["attr"], made["attr"])
    assert kernel.getattr(ROOT)["attr"]["nlink"] == 3
    with fails(errno.EEXIST):
        kernel.mkdir(ROOT, "dir")


def test_umask_and_caller_reach_the_backend(kernel: FakeKernel) -> None:
    made = kernel.mkdir(ROOT, "d", 0o777, umask=0o027, caller=(1000, 100, 42))
    assert made["attr"]["mode"] == stat.S_IFDIR | 0o750
    assert (made["attr"]["uid"], made["attr"]["gid"]) == (1000, 100)
    entry, _ = kernel.create(ROOT, "f", 0o666, umask=0o002, caller=(7, 8, 9))
    assert entry["attr"]["mode"] == stat.S_IFREG | 0o664
    assert (entry["attr"]["uid"], entry["attr"]["gid"]) == (7, 8)


def test_cache_policy_sets_timeouts_and_open_flags() -> None:
    kernel = FakeKernel(memory_session(SessionOptions(cache="always")))
    kernel.init()
    entry, opened = kernel.create(ROOT, "f")
    assert entry["entry_valid"] == (86400, 0) and entry["attr_valid"] == (86400, 0)
    assert opened["open_flags"] & abi.FOPEN_KEEP_CACHE
    assert kernel.opendir(ROOT)["open_flags"] & abi.FOPEN_CACHE_DIR
    kernel = FakeKernel(memory_session(SessionOptions(cache="none")))
    kernel.init()
    entry, opened = kernel.create(ROOT, "f")
    assert entry["entry_valid"] == (0, 0)
    assert opened["open_flags"] & abi.FOPEN_DIRECT_IO


def test_lookup_counts_and_forget(kernel: FakeKernel) -> None:
    session = kernel.session
    made = kernel.mkdir(ROOT, "d")  # one lookup
    nodeid = made["nodeid"]
    for _ in range(3):
        assert kernel.lookup(ROOT, "d")["nodeid"] == nodeid
    kernel.forget(nodeid, 3)
    assert kernel.getattr(nodeid)["attr"]["ino"] == made["attr"]["ino"]
    kernel.forget(nodeid, 1)
    with fails(errno.ESTALE):
        kernel.getattr(nodeid)
    assert len(session.nodes) == 1
    # Looked up again it is a new kernel inode with a new nodeid.
    again = kernel.lookup(ROOT, "d")
    assert again["nodeid"] != nodeid and again["attr"]["ino"] == made["attr"]["ino"]


def test_batch_forget(kernel: FakeKernel) -> None:
    ids = [kernel.mkdir(ROOT, f"d{i}")["nodeid"] for i in range(5)]
    kernel.lookup(ROOT, "d0")
    kernel.batch_forget([(ids[0], 1), (ids[1], 1), (ids[2], 1), (9999, 3), (ROOT, 100)])
    assert kernel.getattr(ids[0])  # had two lookups
    for nodeid in ids[1:3]:
        with fails(errno.ESTALE):
            kernel.getattr(nodeid)
    for nodeid in ids[3:]:
        assert kernel.getattr(nodeid)
    assert kernel.getattr(ROOT)["attr"]["ino"] == 1


def test_batch_forget_shorter_than_its_count_forgets_nothing(kernel: FakeKernel) -> None:
    nodeid = kernel.mkdir(ROOT, "d")["nodeid"]
    body = abi.BATCH_FORGET_IN.pack(3, 0) + abi.FORGET_ONE.pack(nodeid, 1) * 2
    reply = kernel.send(Opcode.BATCH_FORGET, 0, body)
    assert reply is None or reply.error == -errno.EINVAL
    assert kernel.getattr(nodeid)


def test_forgetting_the_root_is_ignored(kernel: FakeKernel) -> None:
    kernel.forget(ROOT, 1)
    kernel.forget(ROOT, 1 << 40)
    kernel.batch_forget([(ROOT, 5)])
    assert kernel.getattr(ROOT)["attr"]["ino"] == 1
    assert kernel.mkdir(ROOT, "still-works")


def test_setattr(kernel: FakeKernel) -> None:
    entry = kernel.write_file(ROOT, "f", b"0123456789")
    nodeid = entry["nodeid"]
    attr = kernel.setattr(nodeid, mode=0o600)["attr"]
    assert attr["mode"] == stat.S_IFREG | 0o600
    attr = kernel.setattr(nodeid, uid=1234, gid=5678)["attr"]
    assert (attr["uid"], attr["gid"]) == (1234, 5678)
    attr = kernel.setattr(nodeid, size=4)["attr"]
    assert attr["size"] == 4
    attr = kernel.setattr(nodeid, atime=(1_000_000, 5), mtime=(2_000_000, 999_999_999))["attr"]
    assert (attr["atime"], attr["atimensec"]) == (1_000_000, 5)
    assert (attr["mtime"], attr["mtimensec"]) == (2_000_000, 999_999_999)
    attr = kernel.setattr(nodeid, mtime=(-1, 500))["attr"]  # before the epoch
    assert attr["mtime"] == (-1) & (2**64 - 1) and attr["mtimensec"] == 500
    attr = kernel.setattr(nodeid, mtime_now=True, atime_now=True)["attr"]
    assert attr["mtime"] > 2_000_000
    same_attr(kernel.getattr(nodeid)["attr"], attr)
    with fails(errno.EINVAL):
        kernel.setattr(nodeid, mtime=(5, 1_000_000_000))
    with fails(errno.EISDIR):
        kernel.setattr(ROOT, size=0)


def test_setattr_and_getattr_through_a_handle(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    assert kernel.setattr(nodeid, fh=fh, size=3000)["attr"]["size"] == 3000
    assert kernel.getattr(nodeid, fh=fh)["attr"]["size"] == 3000
    with fails(errno.EBADF):
        kernel.getattr(nodeid, fh=fh + 1000)
    dir_fh = kernel.opendir(ROOT)["fh"]
    with fails(errno.EBADF):
        kernel.setattr(nodeid, fh=dir_fh, size=1)


def test_symlink_and_readlink(kernel: FakeKernel) -> None:
    target = b"../some/where \xff"
    entry = kernel.symlink(ROOT, "link", target)
    assert stat.S_ISLNK(entry["attr"]["mode"])
    assert entry["attr"]["size"] == len(target)
    assert kernel.lookup(ROOT, "link")["nodeid"] == entry["nodeid"]
    assert kernel.readlink(entry["nodeid"]) == target
    with fails(errno.EINVAL):
        kernel.readlink(ROOT)
    with fails(errno.ENOENT):
        kernel.symlink(ROOT, "empty", b"")
    with fails(errno.ENAMETOOLONG):
        kernel.symlink(ROOT, "long", b"t" * abi.PATH_MAX)
    with fails(errno.EEXIST):
        kernel.symlink(ROOT, "link", b"x")


def test_mknod(kernel: FakeKernel) -> None:
    fifo = kernel.mknod(ROOT, "fifo", stat.S_IFIFO | 0o640)
    assert fifo["attr"]["mode"] == stat.S_IFIFO | 0o640
    dev = kernel.mknod(ROOT, "dev", stat.S_IFCHR | 0o600, rdev=os.makedev(1, 3))
    assert stat.S_ISCHR(dev["attr"]["mode"]) and dev["attr"]["rdev"] == os.makedev(1, 3)
    regular = kernel.mknod(ROOT, "reg", stat.S_IFREG | 0o644, umask=0o044)
    assert regular["attr"]["mode"] == stat.S_IFREG | 0o600
    assert kernel.lookup(ROOT, "fifo")["nodeid"] == fifo["nodeid"]
    with fails(errno.EPERM):
        kernel.mknod(ROOT, "dir", stat.S_IFDIR | 0o755)


def test_unlink_and_rmdir(kernel: FakeKernel) -> None:
    d = kernel.mkdir(ROOT, "d")
    kernel.write_file(d["nodeid"], "f", b"x")
    with fails(errno.ENOTEMPTY):
        kernel.rmdir(ROOT, "d")
    with fails(errno.EISDIR):
        kernel.unlink(ROOT, "d")
    with fails(errno.ENOTDIR):
        kernel.rmdir(d["nodeid"], "f")
    kernel.unlink(d["nodeid"], "f")
    with fails(errno.ENOENT):
        kernel.lookup(d["nodeid"], "f")
    with fails(errno.ENOENT):
        kernel.unlink(d["nodeid"], "f")
    kernel.rmdir(ROOT, "d")
    with fails(errno.ENOENT):
        kernel.lookup(ROOT, "d")
    assert kernel.list_names(ROOT) == [b".", b".."]


def test_rename_updates_the_node_and_its_children(kernel: FakeKernel) -> None:
    session = kernel.session
    a = kernel.mkdir(ROOT, "a")["nodeid"]
    b = kernel.mkdir(a, "b")["nodeid"]
    f = kernel.write_file(b, "f", b"payload")["nodeid"]
    other = kernel.mkdir(ROOT, "other")["nodeid"]
    kernel.rename(ROOT, "a", other, "moved")
    assert session.nodes.path(session.nodes.get(a)) == "/other/moved"
    assert session.nodes.path(session.nodes.get(f)) == "/other/moved/b/f"
    # The same nodeids keep working: the backend is asked by the new paths.
    assert kernel.getattr(f)["attr"]["size"] == 7
    opened = kernel.open(f, os.O_RDONLY)
    assert kernel.read(f, opened["fh"], 0, 100) == b"payload"
    assert kernel.lookup(other, "moved")["nodeid"] == a
    assert kernel.lookup(b, "f")["nodeid"] == f
    with fails(errno.ENOENT):
        kernel.lookup(ROOT, "a")
    kernel.rename(b, "f", ROOT, "f2")
    assert session.nodes.path(session.nodes.get(f)) == "/f2"
    assert kernel.lookup(ROOT, "f2")["nodeid"] == f


def test_rename_over_an_existing_name(kernel: FakeKernel) -> None:
    session = kernel.session
    src = kernel.write_file(ROOT, "src", b"new")["nodeid"]
    dst = kernel.write_file(ROOT, "dst", b"old")["nodeid"]
    kernel.rename(ROOT, "src", ROOT, "dst")
    assert kernel.lookup(ROOT, "dst")["nodeid"] == src
    assert session.nodes.get(dst).names == []  # the replaced file has no name left
    with fails(errno.ESTALE):
        kernel.getattr(dst)
    with fails(errno.ENOENT):
        kernel.rename(ROOT, "src", ROOT, "x")


def test_rename2_noreplace_and_exchange(kernel: FakeKernel) -> None:
    session = kernel.session
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    x = kernel.write_file(ROOT, "x", b"xx")["nodeid"]
    y = kernel.write_file(d, "y", b"yyyy")["nodeid"]
    with fails(errno.EEXIST):
        kernel.rename2(ROOT, "x", d, "y", ops.RENAME_NOREPLACE)
    kernel.rename2(ROOT, "x", d, "y", ops.RENAME_EXCHANGE)
    assert kernel.lookup(d, "y")["nodeid"] == x
    assert kernel.lookup(ROOT, "x")["nodeid"] == y
    assert session.nodes.path(session.nodes.get(x)) == "/d/y"
    assert session.nodes.path(session.nodes.get(y)) == "/x"
    assert kernel.getattr(x)["attr"]["size"] == 2
    assert kernel.getattr(y)["attr"]["size"] == 4
    kernel.rename2(ROOT, "x", ROOT, "z", ops.RENAME_NOREPLACE)
    assert kernel.lookup(ROOT, "z")["nodeid"] == y
    with fails(errno.EINVAL):
        kernel.rename2(ROOT, "z", ROOT, "w", 8)


def test_link_gives_the_nodeid_of_the_inode(kernel: FakeKernel) -> None:
    session = kernel.session
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    original = kernel.write_file(ROOT, "orig", b"shared")
    nodeid = original["nodeid"]
    linked = kernel.link(nodeid, d, "alias")
    assert linked["nodeid"] == nodeid
    assert linked["attr"]["ino"] == original["attr"]["ino"]
    assert linked["attr"]["nlink"] == 2
    assert kernel.lookup(d, "alias")["nodeid"] == nodeid
    assert kernel.getattr(nodeid)["attr"]["nlink"] == 2
    # One nodeid, so both names see the same attributes; after the first name is gone the
    # node is reached by the other.
    kernel.unlink(ROOT, "orig")
    assert session.nodes.path(session.nodes.get(nodeid)) == "/d/alias"
    assert kernel.getattr(nodeid)["attr"]["nlink"] == 1
    opened = kernel.open(nodeid, os.O_RDONLY)
    assert kernel.read(nodeid, opened["fh"], 0, 10) == b"shared"
    with fails(errno.EPERM):
        kernel.link(d, ROOT, "dirlink")
    with fails(errno.EEXIST):
        kernel.link(nodeid, d, "alias")


def test_access(kernel: FakeKernel) -> None:
    entry, _ = kernel.create(ROOT, "private", 0o600)
    nodeid = entry["nodeid"]
    kernel.access(nodeid, os.F_OK)
    kernel.access(nodeid, os.R_OK | os.W_OK)
    stranger = (1000, 1000, 1)
    kernel.access(nodeid, os.F_OK, caller=stranger)
    with fails(errno.EACCES):
        kernel.access(nodeid, os.R_OK, caller=stranger)


# -- open files ------------------------------------------------------------------------------


def test_create_open_write_read_release(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f", 0o640)
    nodeid, fh = entry["nodeid"], opened["fh"]
    assert entry["attr"]["mode"] == stat.S_IFREG | 0o640 and entry["attr"]["size"] == 0
    assert kernel.lookup(ROOT, "f")["nodeid"] == nodeid
    assert kernel.write(nodeid, fh, 0, b"hello world") == 11
    assert kernel.write(nodeid, fh, 6, b"WORLD!") == 6
    assert kernel.read(nodeid, fh, 0, 100) == b"hello WORLD!"
    assert kernel.read(nodeid, fh, 6, 3) == b"WOR"
    assert kernel.read(nodeid, fh, 12, 10) == b""
    assert kernel.read(nodeid, fh, 1 << 40, 10) == b""
    assert kernel.getattr(nodeid)["attr"]["size"] == 12
    kernel.flush(nodeid, fh, lock_owner=77)
    kernel.fsync(nodeid, fh)
    kernel.fsync(nodeid, fh, datasync=True)
    kernel.release(nodeid, fh)
    with fails(errno.EBADF):
        kernel.read(nodeid, fh, 0, 10)
    with fails(errno.EBADF):
        kernel.release(nodeid, fh)
    second = kernel.open(nodeid, os.O_RDONLY)
    assert second["fh"] != fh  # handle numbers are never reused
    assert kernel.read(nodeid, second["fh"], 0, 5) == b"hello"
    with fails(errno.EBADF):
        kernel.write(nodeid, second["fh"], 0, b"x")


def test_create_exclusive_and_existing(kernel: FakeKernel) -> None:
    first, _ = kernel.create(ROOT, "f")
    again, _ = kernel.create(ROOT, "f", flags=os.O_RDWR | os.O_CREAT)
    assert again["nodeid"] == first["nodeid"]
    with fails(errno.EEXIST):
        kernel.create(ROOT, "f", flags=os.O_RDWR | os.O_CREAT | os.O_EXCL)


def test_open_errors(kernel: FakeKernel) -> None:
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    with fails(errno.EISDIR):
        kernel.open(d, os.O_RDWR)
    f = kernel.write_file(ROOT, "f", b"")["nodeid"]
    with fails(errno.ENOTDIR):
        kernel.opendir(f)
    dir_fh = kernel.opendir(d)["fh"]
    with fails(errno.EBADF):
        kernel.read(f, dir_fh, 0, 10)
    file_fh = kernel.open(f)["fh"]
    with fails(errno.EBADF):
        kernel.readdir(d, file_fh)
    with fails(errno.EBADF):
        kernel.releasedir(d, file_fh)


def test_open_truncate(kernel: FakeKernel) -> None:
    nodeid = kernel.write_file(ROOT, "f", b"content")["nodeid"]
    kernel.open(nodeid, os.O_WRONLY | os.O_TRUNC)
    assert kernel.getattr(nodeid)["attr"]["size"] == 0


@pytest.mark.parametrize(
    ("cuts", "reply_cuts"),
    [
        (every(1), every(1)),
        (every(7), every(5)),
        (at(3), at(1)),
        (at(39, 40, 41), at(15, 16, 17)),
        (at(0, 0, 40, 40, 80, 80), at(0, 0, 16, 16)),  # empty segments, as descriptors allow
        (at(60, 61, 5000, 9000), at(4096, 4097, 8000)),
    ],
)
def test_write_and_read_scattered(kernel: FakeKernel, cuts: Any, reply_cuts: Any) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    data = bytes(range(256)) * 50
    assert kernel.write(nodeid, fh, 100, data, cuts=cuts) == len(data)
    got = kernel.read(nodeid, fh, 100, len(data), cuts=cuts, reply_cuts=reply_cuts)
    assert got == data
    got = kernel.read(nodeid, fh, 0, 300, cuts=cuts, reply_cuts=reply_cuts)
    assert got == bytes(100) + data[:200]


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=3000),
    offset=st.integers(0, 1 << 18),
    cuts=st.lists(st.integers(0, 3100), max_size=12),
    reply_cuts=st.lists(st.integers(0, 3100), max_size=12),
)
def test_write_read_roundtrip_any_split(
    data: bytes, offset: int, cuts: list[int], reply_cuts: list[int]
) -> None:
    kernel = FakeKernel(memory_session())
    kernel.init()
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    assert kernel.write(nodeid, fh, offset, data, cuts=at(*cuts)) == len(data)
    got = kernel.read(
        nodeid, fh, offset, len(data) + 10, cuts=at(*cuts), reply_cuts=at(*reply_cuts)
    )
    assert got == data
    assert kernel.getattr(nodeid)["attr"]["size"] == (offset + len(data) if data else 0)


def test_write_payload_is_not_copied(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    """virtio-fs puts the header, the arguments and the data in separate descriptors; only
    the small parts may be gathered into one buffer, never the data."""
    gathered: list[int] = []
    real_gather = call_module.gather

    def counting_gather(segments: Any, length: int) -> memoryview:
        gathered.append(length)
        return real_gather(segments, length)

    monkeypatch.setattr(call_module, "gather", counting_gather)
    entry, opened = kernel.create(ROOT, "f")
    data = os.urandom(1 << 16)
    virtio_layout = at(abi.IN_HEADER.size, abi.IN_HEADER.size + abi.WRITE_IN.size)
    gathered.clear()
    assert kernel.write(entry["nodeid"], opened["fh"], 0, data, cuts=virtio_layout) == len(data)
    assert gathered and max(gathered) <= abi.IN_HEADER.size + abi.WRITE_IN.size
    assert kernel.read(entry["nodeid"], opened["fh"], 0, len(data)) == data


def test_read_is_capped_by_the_reply_space(kernel: FakeKernel) -> None:
    entry = kernel.write_file(ROOT, "f", b"abcdefghij" * 10)
    opened = kernel.open(entry["nodeid"], os.O_RDONLY)
    got = kernel.read(entry["nodeid"], opened["fh"], 0, 100, reply_size=16 + 7)
    assert got == b"abcdefg"
    got = kernel.read(entry["nodeid"], opened["fh"], 3, 100, reply_size=16, reply_cuts=every(4))
    assert got == b""


@pytest.mark.parametrize("reply_size", [0, 1, 8, 15])
def test_no_room_for_a_reply_header(kernel: FakeKernel, reply_size: int) -> None:
    entry = kernel.write_file(ROOT, "f", b"data")
    opened = kernel.open(entry["nodeid"])
    nodeid, fh = entry["nodeid"], opened["fh"]
    cuts = at(1, 2) if reply_size > 2 else None
    for opcode, body in [
        (Opcode.READ, abi.READ_IN.pack(fh, 0, 4, 0, 0, 0, 0)),
        (Opcode.GETATTR, abi.GETATTR_IN.pack(0, 0, 0)),
        (Opcode.FLUSH, abi.FLUSH_IN.pack(fh, 0, 0, 0)),
        (Opcode.GETATTR, b""),  # an error reply
    ]:
        assert kernel.send(opcode, nodeid, body, reply_size=reply_size, reply_cuts=cuts) is None
    assert kernel.read(nodeid, fh, 0, 10) == b"data"


def test_reply_larger_than_the_space_is_eio(kernel: FakeKernel) -> None:
    entry = kernel.mkdir(ROOT, "d")
    reply = kernel.send(Opcode.LOOKUP, ROOT, b"d\0", reply_size=16 + abi.ENTRY_OUT.size - 1)
    assert reply is not None and reply.error == -errno.EIO
    assert kernel.lookup(ROOT, "d")["nodeid"] == entry["nodeid"]


@pytest.mark.parametrize("declared", [0, 4, 6, 100, 2**32 - 1])
def test_write_size_not_matching_the_payload(kernel: FakeKernel, declared: int) -> None:
    entry, opened = kernel.create(ROOT, "f")
    with fails(errno.EINVAL):
        kernel.write(entry["nodeid"], opened["fh"], 0, b"12345", size=declared)
    assert kernel.getattr(entry["nodeid"])["attr"]["size"] == 0


def test_write_of_nothing(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    assert kernel.write(entry["nodeid"], opened["fh"], 10, b"") == 0
    with fails(errno.EBADF):
        kernel.write(entry["nodeid"], 999, 0, b"x")


def test_io_on_an_unlinked_open_file(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "tmp")
    nodeid, fh = entry["nodeid"], opened["fh"]
    kernel.unlink(ROOT, "tmp")
    assert kernel.write(nodeid, fh, 0, b"still here") == 10
    assert kernel.read(nodeid, fh, 0, 100) == b"still here"
    assert kernel.getattr(nodeid, fh=fh)["attr"]["nlink"] == 0
    assert kernel.setattr(nodeid, fh=fh, size=5)["attr"]["size"] == 5
    kernel.flush(nodeid, fh)
    kernel.fsync(nodeid, fh)
    kernel.release(nodeid, fh)


def test_fallocate(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    kernel.fallocate(nodeid, fh, 0, 8192)
    assert kernel.getattr(nodeid)["attr"]["size"] == 8192
    kernel.fallocate(nodeid, fh, 8192, 4096, mode=1)  # FALLOC_FL_KEEP_SIZE
    assert kernel.getattr(nodeid)["attr"]["size"] == 8192
    with fails(errno.EINVAL):
        kernel.fallocate(nodeid, fh, 0, 0)
    with fails(errno.EOPNOTSUPP):
        kernel.fallocate(nodeid, fh, 0, 10, mode=0x10)


def test_lseek_data_and_hole(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "sparse")
    nodeid, fh = entry["nodeid"], opened["fh"]
    kernel.write(nodeid, fh, 1 << 20, b"data")
    assert kernel.lseek(nodeid, fh, 0, SEEK_HOLE) == 0
    assert kernel.lseek(nodeid, fh, 0, SEEK_DATA) == 1 << 20
    assert kernel.lseek(nodeid, fh, (1 << 20) + 2, SEEK_DATA) == (1 << 20) + 2
    assert kernel.lseek(nodeid, fh, (1 << 20) + 2, SEEK_HOLE) == (1 << 20) + 4  # end of file
    for whence in (SEEK_DATA, SEEK_HOLE):
        with fails(errno.ENXIO):
            kernel.lseek(nodeid, fh, (1 << 20) + 4, whence)
    for whence in (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END, 7):
        with fails(errno.EINVAL):
            kernel.lseek(nodeid, fh, 0, whence)


def test_copy_file_range(kernel: FakeKernel) -> None:
    src_entry, src = kernel.create(ROOT, "src")
    dst_entry, dst = kernel.create(ROOT, "dst")
    s, d = src_entry["nodeid"], dst_entry["nodeid"]
    kernel.write(s, src["fh"], 0, b"0123456789")
    assert kernel.copy_file_range(s, src["fh"], 2, d, dst["fh"], 5, 100) == 8
    assert kernel.read(d, dst["fh"], 0, 100) == bytes(5) + b"23456789"
    # The output handle must belong to the output node.
    with fails(errno.EINVAL):
        kernel.copy_file_range(s, src["fh"], 0, s, dst["fh"], 0, 1)
    with fails(errno.EBADF):
        kernel.copy_file_range(s, 999, 0, d, dst["fh"], 0, 1)


# -- extended attributes ---------------------------------------------------------------------


def test_xattrs(kernel: FakeKernel) -> None:
    nodeid = kernel.write_file(ROOT, "f", b"")["nodeid"]
    value = b"\x00binary\xffvalue\x00"
    kernel.setxattr(nodeid, "user.one", value)
    kernel.setxattr(nodeid, "user.two", b"")
    assert kernel.getxattr(nodeid, "user.one", 0) == len(value)  # the size probe
    assert kernel.getxattr(nodeid, "user.one", len(value)) == value
    assert kernel.getxattr(nodeid, "user.one", 4096) == value
    assert kernel.getxattr(nodeid, "user.two", 10) == b""
    with fails(errno.ERANGE):
        kernel.getxattr(nodeid, "user.one", len(value) - 1)
    names_size = len(b"user.one\0user.two\0")
    assert kernel.listxattr(nodeid, 0) == names_size
    assert sorted(kernel.listxattr(nodeid, names_size)) == [b"user.one", b"user.two"]
    with fails(errno.ERANGE):
        kernel.listxattr(nodeid, names_size - 1)
    with fails(errno.EEXIST):
        kernel.setxattr(nodeid, "user.one", b"x", flags=os.XATTR_CREATE)
    with fails(errno.ENODATA):
        kernel.setxattr(nodeid, "user.three", b"x", flags=os.XATTR_REPLACE)
    kernel.setxattr(nodeid, "user.one", b"replaced", flags=os.XATTR_REPLACE)
    assert kernel.getxattr(nodeid, "user.one", 100) == b"replaced"
    kernel.removexattr(nodeid, "user.one")
    with fails(errno.ENODATA):
        kernel.getxattr(nodeid, "user.one", 100)
    with fails(errno.ENODATA):
        kernel.removexattr(nodeid, "user.one")
    assert kernel.listxattr(nodeid, 100) == [b"user.two"]


def test_xattr_malformed(kernel: FakeKernel) -> None:
    with fails(errno.ERANGE):
        kernel.getxattr(ROOT, b"", 10)
    with fails(errno.ERANGE):
        kernel.setxattr(ROOT, b"user." + b"x" * 300, b"v")
    body = abi.SETXATTR_IN.pack(10, 0) + cstr("user.short") + b"only5"
    with fails(errno.EINVAL):
        kernel.call(Opcode.SETXATTR, ROOT, body)
    with fails(errno.ENODATA):
        kernel.getxattr(ROOT, "user.short", 0)


# -- directories -----------------------------------------------------------------------------


def _populate(kernel: FakeKernel, parent: int, count: int) -> dict[bytes, dict[str, Any]]:
    entries = {}
    for i in range(count):
        name = f"{'n' * (i % 13 + 1)}{i}"
        if i % 3:
            entries[os.fsencode(name)] = kernel.write_file(parent, name, b"x" * i)
        else:
            entries[os.fsencode(name)] = kernel.mkdir(parent, name)
    return entries


# 40 bytes hold the longest record here (a 15-byte name); the kernel always offers a page.
@pytest.mark.parametrize("size", [40, 48, 100, 4096])
def test_readdir_resumes_at_offsets(kernel: FakeKernel, size: int) -> None:
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    made = _populate(kernel, d, 25)
    fh = kernel.opendir(d)["fh"]
    seen, offset, calls = [], 0, 0
    while batch := kernel.readdir(d, fh, offset, size):
        calls += 1
        assert [e["off"] for e in batch] == list(range(offset + 1, offset + 1 + len(batch)))
        seen += batch
        offset = batch[-1]["off"]
    assert calls == 1 if size == 4096 else calls > 5
    names = [e["name"] for e in seen]
    assert names[:2] == [b".", b".."] and sorted(names[2:]) == sorted(made)
    assert seen[0]["ino"] == kernel.getattr(d)["attr"]["ino"]
    assert seen[1]["ino"] == 1
    for e in seen[2:]:
        attr = made[e["name"]]["attr"]
        assert e["ino"] == attr["ino"] and e["type"] == stat.S_IFMT(attr["mode"]) >> 12
    kernel.releasedir(d, fh)
    with fails(errno.EBADF):
        kernel.readdir(d, fh)


def test_readdir_too_small_for_one_entry(kernel: FakeKernel) -> None:
    fh = kernel.opendir(ROOT)["fh"]
    assert kernel.readdir(ROOT, fh, 0, abi.dirent_size(1) - 1) == []
    assert [e["name"] for e in kernel.readdir(ROOT, fh, 0, abi.dirent_size(1))] == [b"."]


def test_readdir_offsets_survive_changes_and_rewind_refreshes(kernel: FakeKernel) -> None:
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    made = _populate(kernel, d, 10)
    fh = kernel.opendir(d)["fh"]
    first = kernel.readdir(d, fh, 0, 100)
    kernel.unlink(d, "nn1")
    kernel.write_file(d, "late", b"")
    rest, offset = [], first[-1]["off"]
    while batch := kernel.readdir(d, fh, offset, 100):
        rest += batch
        offset = batch[-1]["off"]
    names = [e["name"] for e in first + rest]
    assert len(names) == len(set(names))
    assert sorted(names[2:]) == sorted(made)  # the listing taken at the first read
    fresh = [e["name"] for e in kernel.readdir(d, fh, 0, 4096)]
    assert b"late" in fresh and b"nn1" not in fresh


def test_readdirplus_entries_are_lookups(kernel: FakeKernel) -> None:
    session = kernel.session
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    made = _populate(kernel, d, 6)
    known = kernel.lookup(d, "n0")["nodeid"]  # now 2 lookups: mkdir and this one
    for entry in made.values():
        kernel.forget(entry["nodeid"], 1)  # only "n0" stays known
    assert len(session.nodes) == 3
    fh = kernel.opendir(d)["fh"]
    listed = kernel.readdirplus(d, fh, 0, 1 << 16)
    dots, rest = listed[:2], listed[2:]
    assert [dirent["name"] for _, dirent in dots] == [b".", b".."]
    assert all(entry["nodeid"] == 0 for entry, _ in dots)
    assert sorted(dirent["name"] for _, dirent in rest) == sorted(made)
    for entry, dirent in rest:
        assert entry["attr"]["ino"] == dirent["ino"] == made[dirent["name"]]["attr"]["ino"]
        assert dirent["type"] == stat.S_IFMT(entry["attr"]["mode"]) >> 12
        assert kernel.session.nodes.get(entry["nodeid"])
    by_name = {dirent["name"]: entry["nodeid"] for entry, dirent in rest}
    assert by_name[b"n0"] == known
    # Each listed entry counts one lookup: one FORGET each drops all but "n0".
    kernel.batch_forget([(nodeid, 1) for nodeid in by_name.values()])
    assert kernel.getattr(known)
    for name, nodeid in by_name.items():
        if name != b"n0":
            with fails(errno.ESTALE):
                kernel.getattr(nodeid)
    kernel.forget(known, 1)
    assert len(session.nodes) == 2


def test_readdirplus_counts_only_what_fits(kernel: FakeKernel) -> None:
    session = kernel.session
    d = kernel.mkdir(ROOT, "d")["nodeid"]
    for name in ("aaaa", "bbbb", "cccc"):
        kernel.forget(kernel.write_file(d, name, b"")["nodeid"], 1)
    record = abi.ENTRY_OUT.size + abi.dirent_size(4)
    dots = abi.ENTRY_OUT.size + abi.dirent_size(1) + abi.ENTRY_OUT.size + abi.dirent_size(2)
    fh = kernel.opendir(d)["fh"]
    before = len(session.nodes)
    listed = kernel.readdirplus(d, fh, 0, dots + record + record - 1)
    assert len(listed) == 3 and len(session.nodes) == before + 1
    offset = listed[-1][1]["off"]
    listed = kernel.readdirplus(d, fh, offset, record)
    assert len(listed) == 1 and len(session.nodes) == before + 2
    listed = kernel.readdirplus(d, fh, listed[-1][1]["off"], record)
    assert len(listed) == 1 and len(session.nodes) == before + 3
    assert kernel.readdirplus(d, fh, listed[-1][1]["off"], record) == []
    names = {session.nodes.path(node) for node in session.nodes._by_id.values()}
    assert {"/d/aaaa", "/d/bbbb", "/d/cccc"} <= names


def test_readdir_scattered_reply(kernel: FakeKernel) -> None:
    _populate(kernel, ROOT, 8)
    fh = kernel.opendir(ROOT)["fh"]
    plain = kernel.readdir(ROOT, fh, 0, 4096)
    assert kernel.readdir(ROOT, fh, 0, 4096, reply_cuts=every(3), cuts=every(5)) == plain
    plus = kernel.readdirplus(ROOT, fh, 0, 8192)
    again = kernel.readdirplus(ROOT, fh, 0, 8192, reply_cuts=at(17, 100, 101))
    assert [(e["nodeid"], d) for e, d in plus] == [(e["nodeid"], d) for e, d in again]


# -- locks -------------------------------------------------------------------------------------


def test_posix_locks(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    fh2 = kernel.open(nodeid)["fh"]
    kernel.setlk(nodeid, fh, 0xA, 0, 99, fcntl.F_WRLCK, pid=11)
    found = kernel.getlk(nodeid, fh2, 0xB, 50, 60, fcntl.F_RDLCK, pid=22)
    assert found == {"start": 0, "end": 99, "type": fcntl.F_WRLCK, "pid": 11}
    free = kernel.getlk(nodeid, fh2, 0xB, 100, 200, fcntl.F_WRLCK, pid=22)
    assert free["type"] == fcntl.F_UNLCK
    assert kernel.getlk(nodeid, fh, 0xA, 0, 10, fcntl.F_WRLCK)["type"] == fcntl.F_UNLCK
    with fails(errno.EAGAIN):
        kernel.setlk(nodeid, fh2, 0xB, 10, 20, fcntl.F_RDLCK)
    kernel.setlkw(nodeid, fh2, 0xB, 100, 200, fcntl.F_WRLCK)  # no conflict: no wait
    kernel.setlk(nodeid, fh, 0xA, 0, 99, fcntl.F_UNLCK)
    kernel.setlk(nodeid, fh2, 0xB, 10, 20, fcntl.F_RDLCK)
    with fails(errno.EINVAL):
        kernel.setlk(nodeid, fh, 0xA, 0, 10, 99)
    with fails(errno.EBADF):
        kernel.getlk(nodeid, 999, 0xA, 0, 10, fcntl.F_RDLCK)


def test_flock_released_with_the_file(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    fh2 = kernel.open(nodeid)["fh"]
    whole = (0, 2**63 - 1)
    kernel.setlk(nodeid, fh, 0x1, *whole, fcntl.F_WRLCK, flock=True)
    with fails(errno.EAGAIN):
        kernel.setlk(nodeid, fh2, 0x2, *whole, fcntl.F_WRLCK, flock=True)
    kernel.release(nodeid, fh, release_flags=abi.RELEASE_FLOCK_UNLOCK, lock_owner=0x1)
    kernel.setlk(nodeid, fh2, 0x2, *whole, fcntl.F_WRLCK, flock=True)


# -- a backend that fails --------------------------------------------------------------------


class FlakyBackend(Backend):
    """A root with "ok" and "boom" in it; "boom" trips a bug, statfs raises odd errnos."""

    errno_for_statfs: int | None = None

    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        if req.path == "/":
            return ops.Attr(st_ino=1, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
        if req.path == "/ok":
            return ops.Attr(st_ino=2, st_mode=stat.S_IFREG | 0o644, st_size=3)
        if req.path == "/boom":
            raise RuntimeError("a bug in the backend")
        if req.path == "/bad-attr":
            return None  # type: ignore[return-value]
        raise FileNotFoundError(errno.ENOENT, "no such file", req.path)

    def vfs_statfs(self, req: ops.StatfsRequest) -> ops.StatFs:
        if self.errno_for_statfs is None:
            raise OSError("an OSError without an errno")
        raise OSError(self.errno_for_statfs, "odd errno")


@pytest.fixture
def flaky() -> FakeKernel:
    kernel = FakeKernel(FuseSession(ShareChain(FlakyBackend())))
    kernel.init()
    return kernel


def test_backend_bug_is_eio_and_the_session_goes_on(flaky: FakeKernel) -> None:
    for _ in range(3):
        with fails(errno.EIO):
            flaky.lookup(ROOT, "boom")
        with fails(errno.EIO):
            flaky.lookup(ROOT, "bad-attr")
        with fails(errno.ENOENT):
            flaky.lookup(ROOT, "missing")
        assert flaky.lookup(ROOT, "ok")["attr"]["size"] == 3
    assert flaky.getattr(ROOT)["attr"]["ino"] == 1
    assert len(flaky.session.nodes) == 2  # nothing remembered for the failures


def test_unimplemented_hooks_are_enosys(flaky: FakeKernel) -> None:
    nodeid = flaky.lookup(ROOT, "ok")["nodeid"]
    with fails(errno.ENOSYS):
        flaky.readlink(nodeid)
    with fails(errno.ENOSYS):
        flaky.open(nodeid)
    with fails(errno.ENOSYS):
        flaky.mkdir(ROOT, "d")
    assert not flaky.init()["flags"] & (InitFlag.POSIX_LOCKS | InitFlag.FLOCK_LOCKS)


@pytest.mark.parametrize("code", [None, 0, -2, 512, 70000, 2**31, 2**40])
def test_backend_errno_out_of_range_is_eio(flaky: FakeKernel, code: int | None) -> None:
    # Linux refuses a reply whose error is not in -511..-1 (fuse_dev_do_write); the request
    # would then never be answered.
    flaky.session.chain.backend.errno_for_statfs = code
    with fails(errno.EIO):
        flaky.statfs()
    assert flaky.getattr(ROOT)["attr"]["ino"] == 1


def test_releasedir_of_a_file_handle_changes_nothing(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    with fails(errno.EBADF):
        kernel.releasedir(nodeid, fh)
    assert kernel.write(nodeid, fh, 0, b"ok") == 2  # still open
    kernel.release(nodeid, fh)
    assert len(kernel.session.handles) == 0


def test_release_of_a_directory_handle_changes_nothing(kernel: FakeKernel) -> None:
    kernel.write_file(ROOT, "f", b"")
    dir_fh = kernel.opendir(ROOT)["fh"]
    with fails(errno.EBADF):
        kernel.release(ROOT, dir_fh)
    assert [e["name"] for e in kernel.readdir(ROOT, dir_fh)] == [b".", b"..", b"f"]  # still open
    kernel.releasedir(ROOT, dir_fh)
    assert len(kernel.session.handles) == 0


def test_the_fake_kernel_knows_every_opcode_the_session_serves() -> None:
    assert set(HANDLERS) == set(ARGUMENTS)


def _blocked_setlkw(kernel: FakeKernel, nodeid: int, fh: int, unique: int) -> Any:
    """Start a SETLKW that has to wait; the future of its reply."""
    body = abi.LK_IN.pack(fh, 0xB, 0, 9, fcntl.F_WRLCK, 2, 0, 0)
    pool = ThreadPoolExecutor(1)
    future = pool.submit(kernel.send, Opcode.SETLKW, nodeid, body, unique=unique)
    pool.shutdown(wait=False)
    return future


def test_setlkw_waits_for_the_unlock(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    kernel.setlk(nodeid, fh, 0xA, 0, 9, fcntl.F_WRLCK)
    future = _blocked_setlkw(kernel, nodeid, kernel.open(nodeid)["fh"], unique=1000)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.3)
    kernel.setlk(nodeid, fh, 0xA, 0, 9, fcntl.F_UNLCK)
    reply = future.result(timeout=10)
    assert (reply.unique, reply.error, reply.body) == (1000, 0, b"")
    assert kernel.getlk(nodeid, fh, 0xA, 0, 9, fcntl.F_RDLCK)["type"] == fcntl.F_WRLCK


def test_interrupt_ends_a_blocked_setlkw(kernel: FakeKernel) -> None:
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    kernel.setlk(nodeid, fh, 0xA, 0, 9, fcntl.F_WRLCK)
    other = kernel.open(nodeid)["fh"]
    future = _blocked_setlkw(kernel, nodeid, other, unique=2000)
    with pytest.raises(TimeoutError):
        future.result(timeout=0.3)
    kernel.interrupt(2000)
    reply = future.result(timeout=10)
    assert (reply.unique, reply.error) == (2000, -errno.EINTR)
    # An INTERRUPT that overtakes its request (another queue) still ends the wait.
    kernel.interrupt(3000)
    reply = _blocked_setlkw(kernel, nodeid, other, unique=3000).result(timeout=10)
    assert reply.error == -errno.EINTR
    assert kernel.getlk(nodeid, other, 0xB, 0, 9, fcntl.F_WRLCK)["type"] == fcntl.F_WRLCK


def test_too_many_blocked_setlkw_get_enolck_and_abort_ends_them() -> None:
    # Each blocked SETLKW holds a transport thread: past the limit a wait is refused rather
    # than risk every thread waiting for an unlock no thread is left to serve.
    kernel = FakeKernel(memory_session(SessionOptions(max_lock_waits=2)))
    kernel.init()
    entry, opened = kernel.create(ROOT, "f")
    nodeid, fh = entry["nodeid"], opened["fh"]
    kernel.setlk(nodeid, fh, 0xA, 0, 9, fcntl.F_WRLCK)
    other = kernel.open(nodeid)["fh"]
    waiting = [_blocked_setlkw(kernel, nodeid, other, unique=u) for u in (4000, 4001)]
    deadline = time.monotonic() + 10
    while kernel.session.blocked_waits < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    refused = _blocked_setlkw(kernel, nodeid, other, unique=4002).result(timeout=10)
    assert refused.error == -errno.ENOLCK
    # The connection goes away: both waits end, and the lock is still A's.
    kernel.session.abort_waits()
    assert [f.result(timeout=10).error for f in waiting] == [-errno.EINTR] * 2
    assert kernel.getlk(nodeid, other, 0xB, 0, 9, fcntl.F_WRLCK)["type"] == fcntl.F_WRLCK


def test_destroy_releases_what_the_kernel_held_open(kernel: FakeKernel) -> None:
    entry, _ = kernel.create(ROOT, "tmp")  # left open, as after a guest crash
    kernel.opendir(ROOT)
    kernel.unlink(ROOT, "tmp")
    before = kernel.statfs()["ffree"]  # the unlinked file still holds an inode
    kernel.destroy()
    kernel.init()
    assert kernel.statfs()["ffree"] == before + 1
    with fails(errno.ESTALE):
        kernel.getattr(entry["nodeid"])

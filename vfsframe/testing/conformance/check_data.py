"""File data and attributes: read/write/truncate/append, large and concurrent I/O,
unlink-while-open, chmod/utimens, statfs, xattrs."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections.abc import Callable

from vfsframe.testing.conformance.drivers import Driver, read_file, write_file
from vfsframe.testing.conformance.errors import expect_errno
from vfsframe.testing.conformance.marks import requires
from vfsframe.testing.conformance.seed import pseudo_random


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` on ``count`` threads at once; re-raise the first failure."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            start.wait()
            work(index)
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


class DataChecks:
    @requires("writable")
    def test_write_read_round_trip(self, vfs: Driver) -> None:
        data = b"0123456789" * 1000
        write_file(vfs, "f", data)
        assert vfs.lstat("f").st_size == len(data)
        handle = vfs.open("f", os.O_RDWR)
        try:
            assert vfs.pread(handle, 10, 5) == data[5:15]
            assert vfs.pread(handle, 100, len(data) - 3) == data[-3:]
            assert vfs.pread(handle, 100, len(data) + 10) == b""
            vfs.pwrite(handle, b"XYZ", 4000)  # overwrite in the middle
            assert vfs.fstat(handle).st_size == len(data)
        finally:
            vfs.close(handle)
        assert read_file(vfs, "f") == data[:4000] + b"XYZ" + data[4003:]

    @requires("writable")
    def test_truncate_shrinks_and_extends_with_zeros(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"x" * 10_000)
        vfs.truncate("f", 100)
        assert read_file(vfs, "f") == b"x" * 100
        vfs.truncate("f", 5000)
        assert read_file(vfs, "f") == b"x" * 100 + bytes(4900)
        vfs.close(vfs.open("f", os.O_WRONLY | os.O_TRUNC))
        assert vfs.lstat("f").st_size == 0

    @requires("writable")
    def test_write_past_the_end_leaves_zeros(self, vfs: Driver) -> None:
        handle = vfs.open("f", os.O_WRONLY | os.O_CREAT)
        try:
            vfs.pwrite(handle, b"end", 70_000)
        finally:
            vfs.close(handle)
        assert read_file(vfs, "f") == bytes(70_000) + b"end"

    @requires("writable")
    def test_append_from_two_handles(self, vfs: Driver) -> None:
        write_file(vfs, "log", b"start\n")
        one = vfs.open("log", os.O_WRONLY | os.O_APPEND)
        two = vfs.open("log", os.O_WRONLY | os.O_APPEND)
        try:
            for i in range(50):
                # The offset given is wrong on purpose: O_APPEND writes at the end anyway.
                vfs.pwrite(one if i % 2 else two, b"%02d\n" % i, 0)
        finally:
            vfs.close(one)
            vfs.close(two)
        lines = read_file(vfs, "log").split(b"\n")[:-1]
        assert lines[0] == b"start"
        assert sorted(lines[1:]) == [b"%02d" % i for i in range(50)]

    @requires("writable")
    def test_large_io_integrity(self, vfs: Driver) -> None:
        data = pseudo_random(24 << 20, seed=24)
        write_file(vfs, "large", data, chunk=1 << 20)
        assert vfs.lstat("large").st_size == len(data)
        # Reads of an odd size cross every block boundary a backend may keep.
        back = read_file(vfs, "large", chunk=131_071)
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()

    @requires("writable")
    def test_concurrent_writers(self, vfs: Driver) -> None:
        vfs.mkdir("c")
        region = 256 << 10
        shared = vfs.open("c/shared", os.O_WRONLY | os.O_CREAT)
        vfs.close(shared)

        def writer(index: int) -> None:
            own = pseudo_random(1 << 20, seed=100 + index)
            write_file(vfs, f"c/own-{index}", own, chunk=64 << 10)
            handle = vfs.open("c/shared", os.O_WRONLY)  # disjoint regions of one file
            try:
                piece = bytes([65 + index]) * region
                for offset in range(0, region, 32 << 10):
                    vfs.pwrite(handle, piece[offset : offset + (32 << 10)], index * region + offset)
            finally:
                vfs.close(handle)

        run_threads(6, writer)
        for index in range(6):
            assert read_file(vfs, f"c/own-{index}") == pseudo_random(1 << 20, seed=100 + index)
        shared_data = read_file(vfs, "c/shared")
        assert len(shared_data) == 6 * region
        for index in range(6):
            got = shared_data[index * region : (index + 1) * region]
            lost = region - got.count(65 + index)
            assert lost == 0, f"writer {index}: {lost} of its {region} bytes lost"

    @requires("writable", "unlink_while_open")
    def test_unlink_while_open(self, vfs: Driver) -> None:
        handle = vfs.open("doomed", os.O_RDWR | os.O_CREAT)  # the temporary-file pattern
        try:
            vfs.pwrite(handle, b"still here", 0)
            vfs.unlink("doomed")
            expect_errno(errno.ENOENT, vfs.lstat, "doomed")
            assert "doomed" not in vfs.listdir("")
            assert vfs.pread(handle, 100, 0) == b"still here"
            vfs.pwrite(handle, b"STILL", 0)
            assert vfs.pread(handle, 100, 0) == b"STILL here"
            assert vfs.fstat(handle).st_size == 10
        finally:
            vfs.close(handle)
        write_file(vfs, "doomed", b"a new file")  # the name is free again
        assert read_file(vfs, "doomed") == b"a new file"

    @requires("writable", "chmod")
    def test_chmod(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"")
        vfs.mkdir("d")
        for mode in (0o600, 0o755, 0o4711, 0o000):
            vfs.chmod("f", mode)
            assert stat.S_IMODE(vfs.lstat("f").st_mode) == mode
        vfs.chmod("d", 0o1777)
        st = vfs.lstat("d")
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o1777

    @requires("writable", "utimens")
    def test_utimens(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"")
        vfs.utime("f", 1_000_000_123, 2_000_000_456)
        st = vfs.lstat("f")
        assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456)
        vfs.mkdir("d")
        vfs.utime("d", 3_000_000_000, 4_000_000_000)
        assert vfs.lstat("d").st_mtime_ns == 4_000_000_000

    def test_statfs(self, vfs: Driver) -> None:
        st = vfs.statfs("")
        assert st.block_size > 0
        assert st.blocks >= st.blocks_free >= st.blocks_available >= 0
        assert st.files >= st.files_free >= 0
        assert st.name_max >= 1

    @requires("writable", "xattrs")
    def test_xattrs(self, vfs: Driver) -> None:
        write_file(vfs, "f", b"")
        vfs.setxattr("f", "user.colour", b"blue")
        vfs.setxattr("f", "user.empty", b"")
        assert vfs.getxattr("f", "user.colour") == b"blue"
        assert vfs.getxattr("f", "user.empty") == b""
        assert {"user.colour", "user.empty"} <= set(vfs.listxattr("f"))
        expect_errno(errno.EEXIST, vfs.setxattr, "f", "user.colour", b"red", os.XATTR_CREATE)
        expect_errno(errno.ENODATA, vfs.setxattr, "f", "user.none", b"x", os.XATTR_REPLACE)
        vfs.setxattr("f", "user.colour", b"red", os.XATTR_REPLACE)
        assert vfs.getxattr("f", "user.colour") == b"red"
        vfs.removexattr("f", "user.colour")
        expect_errno(errno.ENODATA, vfs.getxattr, "f", "user.colour")
        expect_errno(errno.ENODATA, vfs.removexattr, "f", "user.colour")
        big = pseudo_random(1000, seed=4)  # object stores keep xattrs in 2 KiB of metadata
        vfs.setxattr("f", "user.big", big)
        assert vfs.getxattr("f", "user.big") == big

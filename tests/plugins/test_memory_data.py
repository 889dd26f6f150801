"""The memory backend's file data: sparse chunks, zero-copy reads, scattered writes,
capacity, fallocate, SEEK_DATA/SEEK_HOLE and copy_file_range."""

from __future__ import annotations

import array
import errno
import os

from vfsframe_plugins.memory import MemoryConfig
from vfsframe_plugins.memory.content import CHUNK_SIZE

from tests.plugins.memfs_helpers import USER, MemFs, make_fs, raises_errno
from vfsframe import ops

C = CHUNK_SIZE
GIB = 1 << 30


def _pattern(length: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(length))


def _read_into(fs: MemFs, path: str, fh: object, offset: int, sizes: list[int]) -> tuple:
    buffers = [bytearray(b"\xff" * n) for n in sizes]
    views = [memoryview(b) for b in buffers]
    count = fs.chain.read(ops.ReadRequest(USER, path, fh, offset, sum(sizes), views))
    return count, b"".join(buffers)


# -- read and write ------------------------------------------------------------------------


def test_write_read_roundtrip_across_chunks(fs: MemFs) -> None:
    data = _pattern(3 * C + 123)
    fh, _ = fs.create("/f")
    assert fs.write("/f", fh, 0, data) == len(data)
    assert fs.read("/f", fh, 0, len(data) + 100) == data
    assert fs.read("/f", fh, C - 5, 10) == data[C - 5 : C + 5]
    assert fs.read("/f", fh, len(data), 10) == b""
    assert fs.read("/f", fh, len(data) + 10**9, 10) == b""
    attr = fs.stat("/f", fh)
    assert attr.st_size == len(data)
    assert attr.st_blocks == (len(data) + 511) // 512
    assert attr.st_blksize == C


def test_overwrite_in_the_middle(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"a" * (2 * C))
    fs.write("/f", fh, C - 2, b"XYZW")
    expect = b"a" * (C - 2) + b"XYZW" + b"a" * (C - 2)
    assert fs.read("/f", fh, 0, 2 * C) == expect
    assert fs.stat("/f").st_size == 2 * C


def test_scattered_write_is_placed_in_order(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    pieces = [b"head", _pattern(C + 17, 1), b"", b"mid", _pattern(2 * C, 2), b"tail"]
    offset = C - 3  # straddle a chunk boundary from the start
    assert fs.write("/f", fh, offset, *pieces) == sum(len(p) for p in pieces)
    joined = b"".join(pieces)
    assert fs.read("/f", fh, offset, len(joined)) == joined
    assert fs.read("/f", fh, 0, offset) == bytes(offset)


def test_write_accepts_views_of_other_formats(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    words = array.array("I", [1, 2, 3])
    view = memoryview(words)
    req = ops.WriteRequest(USER, "/f", fh, 0, [view], view.nbytes)
    assert fs.chain.write(req) == 12
    assert fs.read("/f", fh, 0, 12) == words.tobytes()


def test_zero_copy_read_into_several_buffers(fs: MemFs) -> None:
    data = _pattern(2 * C + 1000)
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, data)
    sizes = [3, C, 5000, C]  # more room than the file has past the offset
    count, got = _read_into(fs, "/f", fh, 10, sizes)
    assert count == len(data) - 10
    assert got[:count] == data[10:]
    assert got[count:] == b"\xff" * (sum(sizes) - count)  # untouched past the end


def test_zero_copy_read_fills_holes_with_zeros(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 3 * C, b"end")
    count, got = _read_into(fs, "/f", fh, C - 10, [7, 2 * C, 20])
    assert count == 2 * C + 13
    assert got[: 2 * C + 10] == bytes(2 * C + 10)
    assert got[2 * C + 10 : 2 * C + 13] == b"end"


def test_read_respects_size_smaller_than_the_buffers(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"0123456789")
    buf = bytearray(b"-" * 8)
    req = ops.ReadRequest(USER, "/f", fh, 2, 4, [memoryview(buf)])
    assert fs.chain.read(req) == 4
    assert bytes(buf) == b"2345----"


def test_sparse_file_at_a_huge_offset_costs_one_chunk(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    offset = 1 << 40
    fs.write("/f", fh, offset, b"far away")
    attr = fs.stat("/f")
    assert attr.st_size == offset + 8
    assert 0 < attr.st_blocks * 512 <= C
    assert fs.read("/f", fh, offset - 4, 12) == b"\0\0\0\0far away"
    assert fs.read("/f", fh, 12345 * C + 7, 1000) == bytes(1000)
    assert fs.statfs().bfree >= fs.statfs().blocks - C // 4096


def test_truncate_shrink_then_grow_reads_zeros(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"x" * (2 * C + 100))
    fs.setattr("/f", size=C + 10)
    fs.setattr("/f", size=3 * C)
    got = fs.read("/f", fh, 0, 3 * C)
    assert got == b"x" * (C + 10) + bytes(2 * C - 10)
    # Writing past the end after a shrink leaves zeros in between, not old data.
    fs.setattr("/f", size=5)
    fs.write("/f", fh, 100, b"y")
    assert fs.read("/f", fh, 0, 101) == b"x" * 5 + bytes(95) + b"y"


def test_truncate_frees_storage(fs: MemFs) -> None:
    fs.make_file("/f", b"z" * (4 * C))
    free = fs.statfs().bfree
    attr = fs.setattr("/f", size=C // 2)
    assert attr.st_blocks == C // 2 // 512
    assert fs.statfs().bfree - free == (4 * C - C // 2) // 4096


def test_append_writes_at_the_end(fs: MemFs) -> None:
    fs.make_file("/f", b"start")
    fh = fs.open("/f", os.O_WRONLY | os.O_APPEND)
    fs.write("/f", fh, 0, b"-one", flags=os.O_WRONLY | os.O_APPEND)
    fs.write("/f", fh, 4, b"-two", flags=os.O_APPEND)  # the offset does not matter
    fs.release("/f", fh)
    assert fs.read_file("/f") == b"start-one-two"


def test_append_handle_without_append_write_flag_writes_at_the_offset(fs: MemFs) -> None:
    # Writeback cache: the kernel writes cached pages back at their offsets, with
    # flags 0, through whatever writable handle it has (it may be O_APPEND).
    fs.make_file("/f", b"hello")
    fh = fs.open("/f", os.O_WRONLY | os.O_APPEND)
    fs.write("/f", fh, 0, b"helloXYZ")
    fs.release("/f", fh)
    assert fs.read_file("/f") == b"helloXYZ"


def test_handle_io_continues_after_unlink_and_frees_at_release(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"q" * (2 * C))
    used = fs.statfs().bfree
    fs.unlink("/f")
    with raises_errno(errno.ENOENT):
        fs.stat("/f")
    fs.write("/f", fh, 2 * C, b"more")
    assert fs.read("/f", fh, 2 * C - 1, 10) == b"qmore"
    assert fs.stat("/f", fh).st_nlink == 0
    assert fs.statfs().bfree < used + 1  # still held while open
    fs.release("/f", fh)
    after = fs.statfs()
    assert after.bfree == after.blocks
    assert after.ffree == after.files - 1


def test_open_flags(fs: MemFs) -> None:
    fs.make_file("/f", b"content")
    fs.mkdir("/d")
    fh = fs.open("/f", os.O_RDONLY)
    with raises_errno(errno.EBADF):
        fs.write("/f", fh, 0, b"x")
    fs.release("/f", fh)
    # The writeback cache reads partial pages through a write-only handle: allowed.
    fh = fs.open("/f", os.O_WRONLY)
    assert fs.read("/f", fh, 0, 4) == b"cont"
    fs.release("/f", fh)
    fs.age("/f")
    fh = fs.open("/f", os.O_WRONLY | os.O_TRUNC)
    attr = fs.stat("/f")
    assert attr.st_size == 0 and attr.st_mtime_ns > 10**12
    fs.release("/f", fh)
    with raises_errno(errno.EISDIR):
        fs.open("/d", os.O_WRONLY)
    with raises_errno(errno.ENOTDIR):
        fs.open("/f", os.O_RDONLY | os.O_DIRECTORY)
    with raises_errno(errno.ENOENT):
        fs.open("/nothing")


def test_create_flags(fs: MemFs) -> None:
    fh, attr = fs.create("/f")
    fs.write("/f", fh, 0, b"abc")
    fs.release("/f", fh)
    with raises_errno(errno.EEXIST):
        fs.create("/f", flags=os.O_RDWR | os.O_CREAT | os.O_EXCL)
    fh, again = fs.create("/f")  # without O_EXCL: opens the file
    assert again.st_ino == attr.st_ino and again.st_size == 3
    fs.release("/f", fh)
    fh, again = fs.create("/f", flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    assert again.st_size == 0
    fs.release("/f", fh)
    fs.mkdir("/d")
    with raises_errno(errno.EISDIR):
        fs.create("/d")
    with raises_errno(errno.ENOENT):
        fs.create("/none/f")


def test_io_on_non_files(fs: MemFs) -> None:
    fs.mkdir("/d")
    with raises_errno(errno.EISDIR):
        fs.read("/d", None, 0, 10)
    fs.chain.mknod(ops.MknodRequest(USER, "/p", 0o010644))
    with raises_errno(errno.EINVAL):
        fs.write("/p", None, 0, b"x")
    fs.make_file("/f")
    with raises_errno(errno.EINVAL):
        fs.read("/f", None, -1, 10)


def test_write_by_non_root_drops_setuid(fs: MemFs) -> None:
    fs.make_file("/f")
    fs.setattr("/f", mode=0o6755)
    fh = fs.open("/f")
    fs.write("/f", fh, 0, b"x")
    assert fs.stat("/f").st_mode & 0o7777 == 0o755
    fs.release("/f", fh)


# -- capacity ------------------------------------------------------------------------------


def test_capacity_enospc_and_recovery() -> None:
    fs = make_fs(MemoryConfig(capacity=4 * C))
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"a" * (3 * C))
    with raises_errno(errno.ENOSPC):
        fs.write("/f", fh, 3 * C, b"b" * (C + 1))
    assert fs.stat("/f").st_size == 3 * C  # nothing of the refused write landed
    fs.write("/f", fh, 3 * C, b"b" * C)  # exactly full
    assert fs.statfs().bfree == 0
    fs.write("/f", fh, 0, b"c" * (4 * C))  # overwriting needs no new space
    with raises_errno(errno.ENOSPC):
        fs.write("/f", fh, 10 * C, b"x")
    fs.write("/f", fh, 10 * C, b"")  # an empty write never fails on space
    fs.setattr("/f", size=C)
    fs.make_file("/g", b"g" * (3 * C))
    fs.release("/f", fh)


def test_small_files_cost_their_size_not_a_chunk() -> None:
    fs = make_fs(MemoryConfig(capacity=C))
    for i in range(100):
        fs.make_file(f"/f{i}", b"x" * 1000)
    assert fs.stat("/f0").st_blocks == 2


# -- fallocate -----------------------------------------------------------------------------


def _falloc(fs: MemFs, path: str, fh: object, mode: int, offset: int, length: int) -> None:
    fs.chain.fallocate(ops.FallocateRequest(USER, path, fh, mode, offset, length))


KEEP_SIZE, PUNCH_HOLE = 0x01, 0x02


def test_fallocate_extends_and_allocates(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    _falloc(fs, "/f", fh, 0, C, 2 * C)
    attr = fs.stat("/f")
    assert attr.st_size == 3 * C
    assert attr.st_blocks == 2 * C // 512
    assert fs.read("/f", fh, 0, 3 * C) == bytes(3 * C)
    _falloc(fs, "/f", fh, KEEP_SIZE, 5 * C, C)
    attr = fs.stat("/f")
    assert attr.st_size == 3 * C and attr.st_blocks == 3 * C // 512
    fs.setattr("/f", size=C)  # shrinking drops the blocks past the end too
    assert fs.stat("/f").st_blocks == 0


def test_punch_hole_zeroes_and_frees(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"d" * (4 * C))
    _falloc(fs, "/f", fh, PUNCH_HOLE | KEEP_SIZE, C - 10, 2 * C + 20)
    attr = fs.stat("/f")
    assert attr.st_size == 4 * C
    # Chunk 1 and 2 are gone except for chunk 2's last 10 bytes... which kept it allocated.
    assert attr.st_blocks * 512 < 3 * C
    got = fs.read("/f", fh, 0, 4 * C)
    assert got == b"d" * (C - 10) + bytes(2 * C + 20) + b"d" * (C - 10)
    fs.age("/f")
    _falloc(fs, "/f", fh, PUNCH_HOLE | KEEP_SIZE, 0, 4 * C)
    attr = fs.stat("/f")
    assert attr.st_blocks == 0 and attr.st_size == 4 * C
    assert attr.st_mtime_ns > 10**12
    assert fs.statfs().bfree == fs.statfs().blocks


def test_fallocate_errors() -> None:
    fs = make_fs(MemoryConfig(capacity=2 * C))
    fh, _ = fs.create("/f")
    with raises_errno(errno.EOPNOTSUPP):
        _falloc(fs, "/f", fh, PUNCH_HOLE, 0, 10)
    with raises_errno(errno.EOPNOTSUPP):
        _falloc(fs, "/f", fh, 0x10, 0, 10)  # FALLOC_FL_ZERO_RANGE
    with raises_errno(errno.EINVAL):
        _falloc(fs, "/f", fh, 0, 0, 0)
    with raises_errno(errno.EINVAL):
        _falloc(fs, "/f", fh, 0, -1, 10)
    with raises_errno(errno.ENOSPC):
        _falloc(fs, "/f", fh, 0, 0, 3 * C)
    with raises_errno(errno.ENOSPC):
        _falloc(fs, "/f", fh, 0, 0, 1 << 50)
    assert fs.stat("/f").st_size == 0
    _falloc(fs, "/f", fh, 0, 0, 2 * C)
    fs.mkdir("/d")
    with raises_errno(errno.EISDIR):
        _falloc(fs, "/d", None, 0, 0, 1)


# -- SEEK_DATA / SEEK_HOLE -----------------------------------------------------------------


def _seek(fs: MemFs, fh: object, offset: int, whence: int) -> int:
    return fs.chain.lseek(ops.LseekRequest(USER, "/f", fh, offset, whence))


def test_seek_data_and_hole(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 2 * C + 5, b"x" * C)  # data in chunks 2 and 3
    fs.write("/f", fh, 6 * C, b"y")  # and chunk 6; size 6C+1
    assert _seek(fs, fh, 0, os.SEEK_DATA) == 2 * C
    assert _seek(fs, fh, 2 * C + 100, os.SEEK_DATA) == 2 * C + 100
    assert _seek(fs, fh, 4 * C, os.SEEK_DATA) == 6 * C
    assert _seek(fs, fh, 0, os.SEEK_HOLE) == 0
    assert _seek(fs, fh, 2 * C, os.SEEK_HOLE) == 4 * C
    assert _seek(fs, fh, 6 * C, os.SEEK_HOLE) == 6 * C + 1  # end of file is a hole
    with raises_errno(errno.ENXIO):
        _seek(fs, fh, 6 * C + 1, os.SEEK_DATA)
    with raises_errno(errno.ENXIO):
        _seek(fs, fh, 6 * C + 1, os.SEEK_HOLE)
    with raises_errno(errno.EINVAL):
        _seek(fs, fh, 0, os.SEEK_END)


def test_seek_data_in_a_file_that_is_all_hole(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.setattr("/f", size=10 * C)
    with raises_errno(errno.ENXIO):
        _seek(fs, fh, 0, os.SEEK_DATA)
    assert _seek(fs, fh, 3, os.SEEK_HOLE) == 3


# -- copy_file_range -----------------------------------------------------------------------


def _copy(fs: MemFs, src: tuple, dst: tuple, length: int, flags: int = 0) -> int:
    (pin, fin, oin), (pout, fout, oout) = src, dst
    req = ops.CopyFileRangeRequest(USER, pin, fin, oin, pout, fout, oout, length, flags)
    return fs.chain.copy_file_range(req)


def test_copy_file_range_copies_data_and_keeps_holes(fs: MemFs) -> None:
    src, _ = fs.create("/src")
    data = _pattern(C + 50, 3)
    fs.write("/src", src, 3 * C, data)  # chunks 0-2 are a hole
    dst, _ = fs.create("/dst")
    fs.write("/dst", dst, 0, b"o" * (5 * C))
    fs.age("/dst")
    n = _copy(fs, ("/src", src, C), ("/dst", dst, 7), 10 * C)
    assert n == 3 * C + 50  # clamped to the end of the source
    got = fs.read("/dst", dst, 0, 5 * C)
    assert got == b"o" * 7 + bytes(2 * C) + data + b"o" * (5 * C - 7 - n)
    assert fs.stat("/dst").st_mtime_ns > 10**12
    assert _copy(fs, ("/src", src, 10 * C), ("/dst", dst, 0), 100) == 0
    fresh, _ = fs.create("/fresh")
    _copy(fs, ("/src", src, 0), ("/fresh", fresh, 0), 4 * C + 50)
    assert fs.stat("/fresh").st_blocks * 512 <= 2 * C  # the hole stayed a hole


def test_copy_file_range_within_one_file(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, _pattern(2 * C))
    with raises_errno(errno.EINVAL):
        _copy(fs, ("/f", fh, 0), ("/f", fh, 100), 200)  # overlapping
    _copy(fs, ("/f", fh, 10), ("/f", fh, C + 100), C - 100)
    got = fs.read("/f", fh, C + 100, C - 100)
    assert got == _pattern(2 * C)[10 : C - 90]
    with raises_errno(errno.EINVAL):
        _copy(fs, ("/f", fh, 0), ("/f", fh, 3 * C), 10, flags=1)


def test_copy_file_range_within_one_chunk_that_grows(fs: MemFs) -> None:
    fh, _ = fs.create("/f")
    fs.write("/f", fh, 0, b"abcdefghij")
    assert _copy(fs, ("/f", fh, 0), ("/f", fh, 200), 10) == 10
    assert fs.read("/f", fh, 0, 210) == b"abcdefghij" + bytes(190) + b"abcdefghij"


def test_copy_file_range_respects_capacity() -> None:
    fs = make_fs(MemoryConfig(capacity=3 * C))
    src, _ = fs.create("/src")
    fs.write("/src", src, 0, b"s" * (2 * C))
    dst, _ = fs.create("/dst")
    with raises_errno(errno.ENOSPC):
        _copy(fs, ("/src", src, 0), ("/dst", dst, 0), 2 * C)
    assert _copy(fs, ("/src", src, 0), ("/dst", dst, 0), C) == C

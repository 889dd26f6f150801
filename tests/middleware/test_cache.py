"""cache in-process: hits, TTLs, bounds, spill, readahead, and above all invalidation."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from vfsframe_plugins.cache import BlockCache, CacheConfig, CacheMiddleware
from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from vfsframe import ops
from vfsframe.chain import ShareChain

from .helpers import ROOT, Fs, raises_errno

KIB = 1024


class CountingBackend(MemoryBackend):
    """The memory backend, counting the calls that reach it."""

    def __init__(self) -> None:
        super().__init__(MemoryConfig())
        self.calls: Counter[str] = Counter()
        self.read_sizes: list[int] = []
        self.during_read: Any = None

    def vfs_getattr(self, req: ops.GetattrRequest) -> ops.Attr:
        self.calls["getattr"] += 1
        return super().vfs_getattr(req)

    def vfs_readdir(self, req: ops.ReaddirRequest) -> list[ops.DirEntry]:
        self.calls["readdir"] += 1
        return super().vfs_readdir(req)

    def vfs_read(self, req: ops.ReadRequest) -> Any:
        self.calls["read"] += 1
        self.read_sizes.append(req.size)
        result = super().vfs_read(req)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        return result


def cached(**config: Any) -> tuple[Fs, CountingBackend, CacheMiddleware]:
    backend = CountingBackend()
    settings: dict[str, Any] = {"block_size": "4KiB", "memory": "1MiB", "readahead": 0}
    settings.update(config)
    cache = CacheMiddleware(CacheConfig(**settings))
    return Fs(ShareChain(backend, [cache])), backend, cache


def test_getattr_is_answered_from_the_cache_until_the_ttl() -> None:
    fs, backend, _ = cached(attr_ttl=0.2)
    fs.put("/f", b"x")
    fs.stat("/f")
    before = backend.calls["getattr"]
    for _ in range(5):
        assert fs.stat("/f").st_size == 1
    assert backend.calls["getattr"] == before
    time.sleep(0.25)
    fs.stat("/f")
    assert backend.calls["getattr"] == before + 1


def test_missing_names_are_not_cached() -> None:
    fs, _, _ = cached()
    with raises_errno(2):
        fs.stat("/nope")
    fs.put("/nope", b"")
    assert fs.stat("/nope").st_size == 0


def test_listing_cached_and_invalidated_by_every_namespace_change() -> None:
    fs, backend, _ = cached(dir_ttl=60)
    fs.mkdir("/d")
    fs.put("/d/a", b"1")
    assert fs.listdir("/d") == ["a"]
    assert fs.listdir("/d") == ["a"]
    assert backend.calls["readdir"] == 1
    fs.put("/d/b", b"2")
    assert fs.listdir("/d") == ["a", "b"]
    fs.mkdir("/d/sub")
    assert fs.listdir("/d") == ["a", "b", "sub"]
    fs.symlink("/d/s", "a")
    assert "s" in fs.listdir("/d")
    fs.link("/d/a", "/d/hard")
    assert "hard" in fs.listdir("/d")
    fs.unlink("/d/b")
    fs.rmdir("/d/sub")
    fs.rename("/d/s", "/d/t")
    assert fs.listdir("/d") == ["a", "hard", "t"]


def test_listing_hits_carry_fresh_attributes_only() -> None:
    fs, _, _ = cached(dir_ttl=60, attr_ttl=60)
    fs.put("/f", b"abc")
    fs.listdir("/")
    fh = fs.open("/f")
    fs.write("/f", fh, 3, b"defg")
    entries = {e.name: e for e in fs.entries("/")}
    attr = entries["f"].attr
    assert attr is None or attr.st_size == 7  # stale sizes are never shown


def test_a_write_is_visible_to_the_next_read_through_every_name_and_handle() -> None:
    fs, backend, _ = cached()
    fs.put("/f", b"a" * 10_000)
    fs.link("/f", "/g")
    fs.stat("/f"), fs.stat("/g")
    reader = fs.open("/g", os.O_RDONLY)
    writer = fs.open("/f", os.O_WRONLY)
    assert fs.read("/g", reader, 0, 10) == b"a" * 10
    assert fs.read("/g", reader, 0, 10) == b"a" * 10
    assert backend.calls["read"] == 1
    fs.write("/f", writer, 2, b"XY")
    assert fs.read("/g", reader, 0, 6) == b"aaXYaa"
    assert fs.read("/f", writer, 0, 6) == b"aaXYaa"
    fs.write("/f", writer, 10_000, b"tail")  # past the old end-of-file block
    assert fs.read("/g", reader, 9_998, 100) == b"aatail"
    assert fs.stat("/g").st_size == 10_004


def test_append_truncate_fallocate_and_copy_invalidate() -> None:
    fs, _, _ = cached()
    fs.put("/f", b"0123456789")
    fs.put("/g", b"abcdefghij")
    fs.stat("/f"), fs.stat("/g")
    fh = fs.open("/f")
    assert fs.read("/f", fh, 0, 100) == b"0123456789"
    fs.write("/f", fh, 0, b"++", flags=os.O_APPEND)
    assert fs.read("/f", fh, 0, 100) == b"0123456789++"
    fs.setattr("/f", size=4)
    assert fs.read("/f", fh, 0, 100) == b"0123"
    assert fs.stat("/f").st_size == 4
    trunc = fs.open("/f", os.O_WRONLY | os.O_TRUNC)
    assert fs.read("/f", fh, 0, 100) == b""
    gh = fs.open("/g")
    fs.read("/g", gh, 0, 100)
    fs.chain.copy_file_range(ops.CopyFileRangeRequest(ROOT, "/f", fh, 0, "/g", gh, 0, 0))
    fs.write("/f", trunc, 0, b"XYZ")
    fs.chain.copy_file_range(ops.CopyFileRangeRequest(ROOT, "/f", fh, 0, "/g", gh, 1, 3))
    assert fs.read("/g", gh, 0, 100) == b"aXYZefghij"
    fs.chain.fallocate(ops.FallocateRequest(ROOT, "/g", gh, 0, 0, 20))
    assert fs.read("/g", gh, 0, 100) == b"aXYZefghij" + bytes(10)


def test_renaming_a_directory_invalidates_its_subtree() -> None:
    fs, _, _ = cached(attr_ttl=60, dir_ttl=60)
    fs.mkdir("/a")
    fs.mkdir("/a/b")
    fs.put("/a/b/f", b"old")
    fs.mkdir("/x")
    fs.put("/x/f", b"other")
    for path in ("/a", "/a/b", "/a/b/f", "/x", "/x/f"):
        fs.stat(path)
    fs.listdir("/a/b")
    fs.get("/a/b/f")
    fs.rename("/a", "/c")
    with raises_errno(2):
        fs.stat("/a/b/f")
    with raises_errno(2):
        fs.listdir("/a/b")
    assert fs.get("/c/b/f") == b"old"
    # Replace a cached directory with another: nothing of the old one may show.
    fs.unlink("/x/f")
    fs.rename("/c", "/x")
    assert fs.listdir("/x/b") == ["f"]
    assert fs.get("/x/b/f") == b"old"
    with raises_errno(2):
        fs.stat("/x/f")


def test_rename_over_a_cached_file_shows_the_new_content() -> None:
    fs, _, _ = cached(attr_ttl=60)
    fs.put("/target", b"old content")
    fs.put("/tmp", b"new")
    fs.stat("/target"), fs.stat("/tmp")
    assert fs.get("/target") == b"old content"
    fs.rename("/tmp", "/target")
    assert fs.stat("/target").st_size == 3
    assert fs.get("/target") == b"new"


def test_ttl_and_signature_catch_changes_behind_the_cache() -> None:
    fs, backend, _ = cached(attr_ttl=0.1, data_ttl=60)
    fs.put("/f", b"before")
    fs.stat("/f")
    assert fs.get("/f") == b"before"
    behind = Fs(ShareChain(backend, []))  # the backend changed by someone else
    time.sleep(0.01)
    behind.put("/f", b"after!!")
    time.sleep(0.15)
    fs.stat("/f")  # the attr TTL ran out: fresh attributes show a new mtime and size
    assert fs.get("/f") == b"after!!"


def test_blocks_respect_the_memory_budget_and_spill(tmp_path: Path) -> None:
    fs, backend, cache = cached(memory="16KiB", spill_dir=tmp_path, spill_size="32KiB")
    data = os.urandom(64 * KIB)
    fs.put("/big", data)
    fs.stat("/big")
    fh = fs.open("/big", os.O_RDONLY)
    for offset in range(0, len(data), 4 * KIB):
        assert fs.read("/big", fh, offset, 4 * KIB) == data[offset : offset + 4 * KIB]
    assert cache.blocks is not None
    assert cache.blocks.ram_bytes <= 16 * KIB
    assert cache.blocks.spilled_blocks == 8  # 32 KiB of 4 KiB blocks
    reads = backend.calls["read"]
    # The 8 blocks before the last 4 are on disk: served from the spill file.
    for offset in range(32 * KIB, 64 * KIB, 4 * KIB):
        assert fs.read("/big", fh, offset, 4 * KIB) == data[offset : offset + 4 * KIB]
    assert backend.calls["read"] == reads
    # The oldest were dropped for good.
    assert fs.read("/big", fh, 0, 4 * KIB) == data[: 4 * KIB]
    assert backend.calls["read"] == reads + 1
    assert list(tmp_path.iterdir()) == []  # the spill file is unlinked


def test_block_cache_lru_order() -> None:
    blocks = BlockCache(4, 8)
    blocks.put(1, 0, b"aaaa", 1e18)
    blocks.put(1, 1, b"bbbb", 1e18)
    assert blocks.get(1, 0, 0) == b"aaaa"  # 0 is now the most recent
    blocks.put(1, 2, b"cccc", 1e18)
    assert blocks.get(1, 1, 0) is None
    assert blocks.get(1, 0, 0) == b"aaaa"
    blocks.drop_ino(1)
    assert blocks.get(1, 2, 0) is None and blocks.ram_bytes == 0


def test_sequential_reads_fetch_ahead() -> None:
    fs, backend, _ = cached(readahead="32KiB")
    data = os.urandom(256 * KIB)
    fs.put("/f", data)
    fs.stat("/f")
    fh = fs.open("/f", os.O_RDONLY)
    for offset in range(0, len(data), 4 * KIB):
        assert fs.read("/f", fh, offset, 4 * KIB) == data[offset : offset + 4 * KIB]
    # 64 reads of 4 KiB; readahead turns most of them into hits.
    assert backend.calls["read"] <= 10
    assert max(backend.read_sizes) == 36 * KIB


def test_end_of_file_and_zero_copy_reads() -> None:
    fs, backend, _ = cached()
    fs.put("/f", b"0123456789")
    fs.put("/empty", b"")
    fs.stat("/f"), fs.stat("/empty")
    fh = fs.open("/f", os.O_RDONLY)
    assert fs.read("/f", fh, 0, 8192, zero_copy=True) == b"0123456789"
    assert fs.read("/f", fh, 5, 8192, zero_copy=True) == b"56789"
    assert fs.read("/f", fh, 10, 100) == b""
    assert fs.read("/f", fh, 50_000, 100) == b""  # past the cached end: asks the backend
    eh = fs.open("/empty", os.O_RDONLY)
    assert fs.read("/empty", eh, 0, 100) == b""
    assert fs.read("/empty", eh, 0, 100) == b""
    assert backend.calls["read"] == 3


def test_a_fill_racing_a_write_is_discarded() -> None:
    fs, backend, _ = cached()
    fs.put("/f", b"old!")
    fs.stat("/f")
    fh = fs.open("/f")
    # The backend answers the read with the old data, then a write lands before the cache
    # stores the fill: the stale blocks must not be kept.
    backend.during_read = lambda: fs.write("/f", fh, 0, b"new!")
    assert fs.read("/f", fh, 0, 4) == b"old!"
    assert fs.read("/f", fh, 0, 4) == b"new!"


def test_threads_reading_and_writing_see_their_own_writes() -> None:
    fs, _, _ = cached(memory="64KiB")
    errors: list[str] = []

    def worker(index: int) -> None:
        path = f"/t{index}"
        fs.put(path, b"")
        fs.stat(path)
        fh = fs.open(path)
        for round_ in range(200):
            payload = f"{index}:{round_}".encode().ljust(32, b".")
            fs.write(path, fh, 0, payload)
            got = fs.read(path, fh, 0, 32)
            if got != payload:
                errors.append(f"{path}: wrote {payload!r}, read {got!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_config_validation() -> None:
    with pytest.raises(ValidationError) as info:
        CacheConfig(block_size="5000")
    assert info.value.errors()[0]["loc"] == ("block_size",)
    with pytest.raises(ValidationError):
        CacheConfig(memory="4KiB", block_size="64KiB")
    assert CacheConfig(memory=0).memory == 0


def test_a_new_file_at_a_renamed_name_is_not_the_old_one() -> None:
    fs, _, _ = cached(attr_ttl=60)
    fs.put("/a", b"first file")
    fs.stat("/a")
    assert fs.get("/a") == b"first file"
    fs.rename("/a", "/b")
    fh, _ = fs.create("/a")
    fs.write("/a", fh, 0, b"second")
    assert fs.read("/a", fh, 0, 100) == b"second"
    assert fs.get("/b") == b"first file"
    assert fs.get("/a") == b"second"


def test_writing_a_new_file_keeps_the_rest_of_the_cache() -> None:
    fs, backend, _ = cached(attr_ttl=60)
    fs.put("/old", b"cached")
    fs.stat("/old")
    fs.get("/old")
    reads = backend.calls["read"]
    fh, _ = fs.create("/new")  # no lookup follows a create: the cache keeps its answer
    fs.write("/new", fh, 0, b"fresh")
    assert fs.get("/old") == b"cached"
    assert backend.calls["read"] == reads
    assert fs.stat("/new").st_size == 5


def test_unknown_names_invalidate_every_multiply_linked_file() -> None:
    fs, backend, _ = cached(attr_ttl=60)
    fs.put("/single", b"1")
    fs.put("/a", b"2")
    fs.link("/a", "/b")
    for path in ("/single", "/a", "/b"):
        fs.stat(path)
    calls = backend.calls["getattr"]
    # Reach /a's inode through a name the cache never saw: a third link made behind it.
    Fs(ShareChain(backend, [])).link("/a", "/c")
    fs.setattr("/c", mode=0o600)
    assert fs.stat("/a").st_mode & 0o777 == 0o600
    assert fs.stat("/b").st_mode & 0o777 == 0o600
    fs.stat("/single")
    assert backend.calls["getattr"] == calls + 2  # /single stayed cached


def test_xattrs_are_cached_with_the_attributes_and_dropped_with_them() -> None:
    fs, _, cache = cached(attr_ttl=60)
    fs.put("/f", b"")
    fs.stat("/f")
    with raises_errno(61):  # ENODATA, as `ls -l` asks for ACLs
        fs.getxattr("/f", "system.posix_acl_access")
    with raises_errno(61):
        fs.getxattr("/f", "system.posix_acl_access")
    assert cache.hits["xattr"] == 1
    fs.setxattr("/f", "user.a", b"1")
    with raises_errno(61):
        fs.getxattr("/f", "user.b")
    fs.stat("/f")
    assert fs.getxattr("/f", "user.a") == b"1"
    fs.setxattr("/f", "user.a", b"2")
    fs.stat("/f")
    assert fs.getxattr("/f", "user.a") == b"2"
    assert fs.chain.listxattr(ops.ListxattrRequest(ROOT, "/f")) == ["user.a"]
    fs.chain.removexattr(ops.RemovexattrRequest(ROOT, "/f", "user.a"))
    fs.stat("/f")
    assert fs.chain.listxattr(ops.ListxattrRequest(ROOT, "/f")) == []
    with raises_errno(61):
        fs.getxattr("/f", "user.a")


def test_closing_a_written_file_forgets_its_attributes() -> None:
    """A write-back backend uploads at close, which may change what it reports."""
    fs, backend, _ = cached(attr_ttl=60)
    behind = Fs(ShareChain(backend, []))
    fs.put("/f", b"data")
    fs.stat("/f")
    reader = fs.open("/f", os.O_RDONLY)
    fs.release("/f", reader)
    calls = backend.calls["getattr"]
    fs.stat("/f")
    assert backend.calls["getattr"] == calls  # a reader's close changes nothing
    writer = fs.open("/f", os.O_WRONLY)
    fs.write("/f", writer, 0, b"DATA")
    fs.stat("/f")
    behind.setattr("/f", mtime_ns=123_000_000_000)  # "uploaded" at close
    fs.chain.flush(ops.FlushRequest(ROOT, "/f", writer))
    assert fs.stat("/f").st_mtime_ns == 123_000_000_000
    behind.setattr("/f", mtime_ns=456_000_000_000)
    fs.release("/f", writer)
    assert fs.stat("/f").st_mtime_ns == 456_000_000_000


def test_handles_opened_before_a_change_bypass_the_cache() -> None:
    """A backend may serve an old handle the version it opened (object stores); that
    version must never be cached for later opens, nor the new one served to the old handle."""

    class VersionedBackend(CountingBackend):
        def __init__(self) -> None:
            super().__init__()
            self.old_handles: dict[int, bytes] = {}

        def vfs_read(self, req: ops.ReadRequest) -> Any:
            if id(req.fh) in self.old_handles:
                self.calls["read"] += 1
                return self.old_handles[id(req.fh)][req.offset : req.offset + req.size]
            return super().vfs_read(req)

    backend = VersionedBackend()
    cache = CacheMiddleware(CacheConfig(block_size="4KiB", memory="1MiB", readahead=0))
    fs = Fs(ShareChain(backend, [cache]))
    fs.put("/f", b"version 1")
    fs.stat("/f")
    old = fs.open("/f", os.O_RDONLY)
    assert fs.read("/f", old, 0, 100) == b"version 1"
    writer = fs.open("/f", os.O_WRONLY)
    fs.write("/f", writer, 0, b"VERSION 2")
    assert fs.read("/f", writer, 0, 100) == b"VERSION 2"  # a writer sees its own write
    fs.release("/f", writer)
    backend.old_handles[id(old)] = b"version 1"
    assert fs.read("/f", old, 0, 100) == b"version 1"  # the backend's answer, not cached
    new = fs.open("/f", os.O_RDONLY)
    assert fs.read("/f", new, 0, 100) == b"VERSION 2"
    reads = backend.calls["read"]
    assert fs.read("/f", new, 0, 100) == b"VERSION 2"
    assert backend.calls["read"] == reads  # the new handle is served from the cache


def test_a_short_read_before_the_known_size_is_not_taken_for_the_end() -> None:
    class Stingy(CountingBackend):
        def vfs_read(self, req: ops.ReadRequest) -> Any:
            req.size = min(req.size, 5000)  # answers less than asked, as a backend may
            return super().vfs_read(req)

    backend = Stingy()
    fs = Fs(ShareChain(backend, [CacheMiddleware(CacheConfig(block_size="4KiB", readahead=0))]))
    data = os.urandom(20_000)
    fs.put("/f", data)
    fs.stat("/f")
    fh = fs.open("/f", os.O_RDONLY)
    assert fs.read("/f", fh, 0, 8192) == data[:5000]
    assert fs.read("/f", fh, 5000, 4000) == data[5000:9000]
    assert fs.read("/f", fh, 12_000, 3000) == data[12_000:15_000]

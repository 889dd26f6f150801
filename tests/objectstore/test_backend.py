"""The objectstore backend in process: config validation, the store registry, metadata
encoding, readahead, and the backend's operations against the local store."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pytest
from vfsframe_plugins.objectstore import (
    ObjectReader,
    ObjectStoreBackend,
    ObjectStoreConfig,
    StoreConfig,
    StoreType,
    store,
)
from vfsframe_plugins.objectstore.files import FileHandle, OpenInode
from vfsframe_plugins.objectstore.local import LocalStore
from vfsframe_plugins.objectstore.metadata import Meta

from vfsframe import ops
from vfsframe.config.loader import ConfigError, validate_config

CTX = ops.Context(uid=0, gid=0, umask=0o022)


def problems(backend: dict[str, Any]) -> list[str]:
    document = {"share": [{"tag": "t", "backend": {"type": "objectstore", **backend}}]}
    with pytest.raises(ConfigError) as caught:
        validate_config(document)
    return caught.value.problems


def test_config_refuses_bad_combinations_with_field_paths() -> None:
    assert problems({"store": {"type": "local"}}) == [
        "share[0].backend.store.local.root: required, but missing"
    ]
    assert problems({"store": {"type": "s3", "bucket": "b-1", "access_key_id": "k"}}) == [
        "share[0].backend.store.s3: access_key_id and secret_access_key go together: give "
        "both or neither"
    ]
    assert problems({"store": {"type": "s3", "bucket": "b-1"}, "part_size": "1MiB"}) == [
        "share[0].backend: part_size: 1.0MiB is below the s3 store's minimum part of 5242880 bytes"
    ]
    assert problems({"store": {"type": "s3", "bucket": "Bad_Name"}})[0].startswith(
        "share[0].backend.store.s3.bucket:"
    )
    assert problems({"store": {"type": "gcs"}}) == [
        "share[0].backend.store: unknown store type 'gcs'; installed: local, s3 (more come "
        "from packages in the vfsframe.objectstores entry-point group)"
    ]
    assert problems({"store": {"type": "local", "root": "/x"}, "list_page_size": 5000})[
        0
    ].startswith("share[0].backend.list_page_size:")


def test_config_declares_network_and_host_paths() -> None:
    s3 = ObjectStoreConfig(store={"type": "s3", "bucket": "bucket", "prefix": "team/data"})
    assert s3.needs_network and s3.host_paths == ()
    assert s3.store.prefix == "team/data/"
    local = ObjectStoreConfig(store={"type": "local", "root": "/srv/o"}, staging_dir="/var/tmp")
    assert not local.needs_network and local.host_paths == ("/srv/o", "/var/tmp")
    with_keys = ObjectStoreConfig(
        store={
            "type": "s3",
            "bucket": "bucket",
            "access_key_id": "a",
            "secret_access_key": "s3kr1t",
        }
    )
    assert "s3kr1t" not in str(with_keys) and "s3kr1t" not in with_keys.model_dump_json()


class MemoryStoreConfig(StoreConfig):
    type: Literal["third-party"] = "third-party"


class FakeEntryPoint:
    name = "third-party"
    value = "somewhere:STORE"
    dist = None

    def load(self) -> StoreType:
        return StoreType("third-party", MemoryStoreConfig, lambda config: None)  # type: ignore[arg-type,return-value]


def test_third_party_stores_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "entry_points", lambda group: [FakeEntryPoint()])
    found = store.discover_store_types()
    assert list(found) == ["local", "s3", "third-party"]
    assert found["third-party"].origin == "?:third-party"


def test_metadata_round_trip_and_limit() -> None:
    meta = Meta(stat.S_IFREG | 0o640, 1000, 100, 123_456_789, {"user.a": b"\0\xff", "b": b""})
    encoded = meta.encode()
    assert all(value.isascii() for value in encoded.values())
    assert Meta.decode(encoded, stat.S_IFREG | 0o644, 0, 0, 0) == meta
    meta.xattrs["user.big"] = b"x" * 2000
    with pytest.raises(OSError) as caught:
        meta.encode_within(2048)
    assert caught.value.errno == errno.ENOSPC
    foreign = Meta.decode({"vfs-mode": "zz"}, stat.S_IFDIR | 0o755, 5, 6, 7)
    assert foreign == Meta(stat.S_IFDIR | 0o755, 5, 6, 7)


class CountingReader(ObjectReader):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)
        self.gets: list[tuple[int, int]] = []

    def read_into(self, offset: int, buffers: Sequence[memoryview]) -> int:
        done = 0
        for buffer in buffers:
            piece = self.data[offset + done : offset + done + len(buffer)]
            buffer[: len(piece)] = piece
            done += len(piece)
        self.gets.append((offset, done))
        return done


def test_sequential_reads_grow_the_window_and_random_reads_do_not() -> None:
    data = os.urandom(8 << 20)
    reader = CountingReader(data)
    handle = FileHandle(OpenInode(2, "/f", Meta(stat.S_IFREG, 0, 0, 0), None), os.O_RDONLY)
    out = bytearray(128 << 10)
    for offset in range(0, len(data), len(out)):
        count = handle.read(reader, offset, len(out), [memoryview(out)], 4 << 20)
        assert bytes(out[:count]) == data[offset : offset + count]
    assert len(reader.gets) < 10  # 64 reads served by a few GETs of up to 4 MiB
    assert max(length for _, length in reader.gets) == 4 << 20
    reader.gets.clear()
    for offset in (7 << 20, 1 << 20, 5 << 20):
        assert handle.read(reader, offset, 4096, (), 4 << 20) == data[offset : offset + 4096]
    assert [length for _, length in reader.gets] == [4096, 4096, 4096]


def test_readahead_fetches_the_next_window_in_the_background() -> None:
    data = os.urandom(20 << 20)
    reader = CountingReader(data)
    handle = FileHandle(OpenInode(2, "/f", Meta(stat.S_IFREG, 0, 0, 0), None), os.O_RDONLY)
    got = bytearray()
    with ThreadPoolExecutor(2) as pool:
        for offset in range(0, len(data), 1 << 20):
            got += handle.read(reader, offset, 1 << 20, (), 8 << 20, pool)  # type: ignore[operator]
        handle.close()
    assert bytes(got) == data
    assert len(reader.gets) <= 6 and max(length for _, length in reader.gets) == 8 << 20


def write(backend: ObjectStoreBackend, fh: Any, offset: int, data: bytes, flags: int = 0) -> int:
    req = ops.WriteRequest(CTX, "/f", fh, offset, [memoryview(data)], len(data), flags)
    return backend.vfs_write(req)


def test_backend_write_back_and_inode_numbers(backend: ObjectStoreBackend) -> None:
    fh, attr = backend.vfs_create(ops.CreateRequest(CTX, "/f", os.O_RDWR, 0o666))
    assert stat.S_IMODE(attr.st_mode) == 0o644
    assert write(backend, fh, 0, b"hello") == 5
    assert write(backend, fh, 0, b"!", os.O_APPEND) == 1
    store: LocalStore = backend.store  # type: ignore[assignment]
    with pytest.raises(FileNotFoundError):
        store.head("f")  # staged, not uploaded yet
    assert [e.name for e in backend.vfs_readdir(ops.ReaddirRequest(CTX, "/"))] == ["f"]
    backend.vfs_flush(ops.FlushRequest(CTX, "/f", fh))
    assert store.get("f") == b"hello!"
    backend.vfs_release(ops.ReleaseRequest(CTX, "/f", fh))
    ino = backend.vfs_getattr(ops.GetattrRequest(CTX, "/f")).st_ino
    backend.vfs_rename(ops.RenameRequest(CTX, "/f", "/g"))
    assert backend.vfs_getattr(ops.GetattrRequest(CTX, "/g")).st_ino == ino
    with pytest.raises(OSError) as caught:
        backend.vfs_rename(ops.RenameRequest(CTX, "/g", "/h", ops.RENAME_EXCHANGE))
    assert caught.value.errno == errno.EINVAL
    backend.vfs_mkdir(ops.MkdirRequest(CTX, "/d", 0o777))
    with pytest.raises(OSError) as caught:
        backend.vfs_rename(ops.RenameRequest(CTX, "/g", "/d"))
    assert caught.value.errno == errno.EISDIR
    backend.vfs_unlink(ops.UnlinkRequest(CTX, "/g"))
    fh, attr = backend.vfs_create(ops.CreateRequest(CTX, "/g", os.O_RDWR, 0o600))
    assert attr.st_ino != ino  # a new file at the old name is a new inode
    backend.vfs_release(ops.ReleaseRequest(CTX, "/g", fh))


def test_backend_reads_fill_buffers(backend: ObjectStoreBackend) -> None:
    data = os.urandom(3 << 20)
    backend.store.put("f", data, {})
    fh = backend.vfs_open(ops.OpenRequest(CTX, "/f", os.O_RDONLY))
    first, second = bytearray(100_000), bytearray(100_000)
    count = backend.vfs_read(
        ops.ReadRequest(CTX, "/f", fh, 1000, 150_000, [memoryview(first), memoryview(second)])
    )
    assert count == 150_000
    assert bytes(first) + bytes(second[:50_000]) == data[1000:151_000]
    with pytest.raises(OSError) as caught:
        write(backend, fh, 0, b"x")
    assert caught.value.errno == errno.EBADF
    backend.vfs_release(ops.ReleaseRequest(CTX, "/f", fh))


def test_backend_refuses_what_a_store_cannot_do(backend: ObjectStoreBackend) -> None:
    backend.store.put("f", b"", {})
    for call, code in (
        (lambda: backend.vfs_link(ops.LinkRequest(CTX, "/f", "/l")), errno.EPERM),
        (lambda: backend.vfs_mknod(ops.MknodRequest(CTX, "/p", stat.S_IFIFO | 0o644)), errno.EPERM),
        (
            lambda: backend.vfs_setxattr(ops.SetxattrRequest(CTX, "/f", "user.x", b"v" * 5000)),
            errno.E2BIG,
        ),
        (
            lambda: backend.vfs_setxattr(
                ops.SetxattrRequest(CTX, "/f", "system.posix_acl_default", b"\2\0\0\0")
            ),
            errno.EOPNOTSUPP,
        ),
        (lambda: backend.vfs_rmdir(ops.RmdirRequest(CTX, "/")), errno.EBUSY),
        (lambda: backend.vfs_getattr(ops.GetattrRequest(CTX, "/nope")), errno.ENOENT),
    ):
        with pytest.raises(OSError) as caught:
            call()
        assert caught.value.errno == code


def test_implicit_directories_from_foreign_keys(backend: ObjectStoreBackend) -> None:
    backend.store.put("photos/2024/a.jpg", b"jpg", {})  # written by another tool, no markers
    attr = backend.vfs_getattr(ops.GetattrRequest(CTX, "/photos"))
    assert stat.S_ISDIR(attr.st_mode) and stat.S_IMODE(attr.st_mode) == 0o755
    entries = backend.vfs_readdir(ops.ReaddirRequest(CTX, "/photos"))
    assert [(e.name, stat.S_IFMT(e.mode)) for e in entries] == [("2024", stat.S_IFDIR)]
    file_attr = backend.vfs_getattr(ops.GetattrRequest(CTX, "/photos/2024/a.jpg"))
    assert stat.S_IMODE(file_attr.st_mode) == 0o644 and file_attr.st_size == 3
    backend.vfs_rename(ops.RenameRequest(CTX, "/photos", "/pics"))
    assert backend.store.get("pics/2024/a.jpg") == b"jpg"
    assert backend.store.head("pics/").size == 0  # the renamed directory got a marker


def test_rename_over_a_file_open_for_writing(backend: ObjectStoreBackend) -> None:
    old, _ = backend.vfs_create(ops.CreateRequest(CTX, "/a", os.O_RDWR, 0o644))
    write(backend, old, 0, b"old contents")
    new, _ = backend.vfs_create(ops.CreateRequest(CTX, "/b", os.O_RDWR, 0o644))
    write(backend, new, 0, b"new")
    backend.vfs_flush(ops.FlushRequest(CTX, "/b", new))
    backend.vfs_release(ops.ReleaseRequest(CTX, "/b", new))
    backend.vfs_rename(ops.RenameRequest(CTX, "/b", "/a"))
    # The replaced file is unlinked: closing it must not overwrite the renamed one.
    backend.vfs_flush(ops.FlushRequest(CTX, "", old))
    backend.vfs_release(ops.ReleaseRequest(CTX, "", old))
    assert backend.store.get("a") == b"new"
    attr = backend.vfs_getattr(ops.GetattrRequest(CTX, "", old))
    assert attr.st_size == len(b"old contents")


def test_a_read_handle_keeps_its_version(backend: ObjectStoreBackend) -> None:
    backend.store.put("f", b"first version", {})
    fh = backend.vfs_open(ops.OpenRequest(CTX, "/f", os.O_RDONLY))
    backend.store.put("f", b"second", {})  # another mount replaces it
    backend.vfs_unlink(ops.UnlinkRequest(CTX, "/f"))
    assert backend.vfs_read(ops.ReadRequest(CTX, "", fh, 0, 100)) == b"first version"
    backend.vfs_release(ops.ReleaseRequest(CTX, "", fh))


def test_chmod_that_waited_for_the_last_release_still_reaches_the_store(
    backend: ObjectStoreBackend,
) -> None:
    """close(2) returns before the kernel's RELEASE is served: a chmod right after it can find
    the inode open, then wait for its lock while the release uploads and closes it."""
    fh, _ = backend.vfs_create(ops.CreateRequest(CTX, "/f", os.O_RDWR, 0o644))
    write(backend, fh, 0, b"data")
    backend.vfs_flush(ops.FlushRequest(CTX, "/f", fh))
    inode = fh.inode
    with ThreadPoolExecutor(1) as pool, inode.lock:
        chmod = pool.submit(backend.vfs_setattr, ops.SetattrRequest(CTX, "/f", mode=0o600))
        while not chmod.running():
            pass
        time.sleep(0.1)  # the chmod has found the open inode and waits for its lock
        backend.vfs_release(ops.ReleaseRequest(CTX, "/f", fh))  # re-entrant: same thread
    assert stat.S_IMODE(chmod.result(timeout=10).st_mode) == 0o600
    reopened = ObjectStoreBackend(backend.config, backend.store)  # no in-process state
    assert stat.S_IMODE(reopened.vfs_getattr(ops.GetattrRequest(CTX, "/f")).st_mode) == 0o600

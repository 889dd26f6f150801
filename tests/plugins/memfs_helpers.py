"""Helpers for driving a memory backend in-process through a ShareChain."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any

import pytest
from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from vfsframe import ops
from vfsframe.chain import ShareChain

USER = ops.Context(uid=1000, gid=1000, pid=1, umask=0o022)
OTHER = ops.Context(uid=2000, gid=2000, pid=2, umask=0o022)
ROOT = ops.Context(uid=0, gid=0, pid=3, umask=0o022)


@contextlib.contextmanager
def raises_errno(code: int) -> Iterator[None]:
    """The block must raise OSError with exactly ``code``."""
    with pytest.raises(OSError) as info:
        yield
    assert info.value.errno == code, (
        f"expected {errno.errorcode[code]}, got {errno.errorcode.get(info.value.errno)}"
    )


class MemFs:
    """Short spellings of the requests a test sends, all through the chain."""

    def __init__(self, chain: ShareChain, ctx: ops.Context = USER) -> None:
        self.chain = chain
        self.ctx = ctx

    def as_user(self, ctx: ops.Context) -> MemFs:
        return MemFs(self.chain, ctx)

    def stat(self, path: str, fh: Any = None) -> ops.Attr:
        return self.chain.getattr(ops.GetattrRequest(self.ctx, path, fh))

    def mkdir(self, path: str, mode: int = 0o755) -> ops.Attr:
        return self.chain.mkdir(ops.MkdirRequest(self.ctx, path, mode))

    def create(
        self, path: str, mode: int = 0o644, flags: int = os.O_RDWR | os.O_CREAT
    ) -> tuple[Any, ops.Attr]:
        return self.chain.create(ops.CreateRequest(self.ctx, path, flags, mode))

    def open(self, path: str, flags: int = os.O_RDWR) -> Any:
        return self.chain.open(ops.OpenRequest(self.ctx, path, flags))

    def release(self, path: str, fh: Any) -> None:
        self.chain.release(ops.ReleaseRequest(self.ctx, path, fh))

    def write(self, path: str, fh: Any, offset: int, *pieces: bytes, flags: int = 0) -> int:
        views = [memoryview(piece) for piece in pieces]
        size = sum(len(v) for v in views)
        return self.chain.write(ops.WriteRequest(self.ctx, path, fh, offset, views, size, flags))

    def read(self, path: str, fh: Any, offset: int, size: int) -> bytes:
        return bytes(self.chain.read(ops.ReadRequest(self.ctx, path, fh, offset, size)))

    def make_file(self, path: str, data: bytes = b"", mode: int = 0o644) -> ops.Attr:
        fh, _ = self.create(path, mode)
        if data:
            self.write(path, fh, 0, data)
        self.release(path, fh)
        return self.stat(path)

    def read_file(self, path: str) -> bytes:
        fh = self.open(path, os.O_RDONLY)
        try:
            return self.read(path, fh, 0, self.stat(path).st_size)
        finally:
            self.release(path, fh)

    def setattr(self, path: str, **fields: Any) -> ops.Attr:
        return self.chain.setattr(ops.SetattrRequest(self.ctx, path, **fields))

    def names(self, path: str) -> list[str]:
        return [entry.name for entry in self.chain.readdir(ops.ReaddirRequest(self.ctx, path))]

    def unlink(self, path: str) -> None:
        self.chain.unlink(ops.UnlinkRequest(self.ctx, path))

    def rmdir(self, path: str) -> None:
        self.chain.rmdir(ops.RmdirRequest(self.ctx, path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self.chain.rename(ops.RenameRequest(self.ctx, old, new, flags))

    def link(self, old: str, new: str) -> ops.Attr:
        return self.chain.link(ops.LinkRequest(self.ctx, old, new))

    def statfs(self) -> ops.StatFs:
        return self.chain.statfs(ops.StatfsRequest(self.ctx, "/"))

    def age(self, path: str, seconds: int = 1000) -> None:
        """Put all three times of ``path`` in the past, so an update is visible."""
        past = 10**9 * seconds
        self.as_user(ROOT).setattr(path, atime_ns=past, mtime_ns=past, ctime_ns=past)


def make_fs(config: MemoryConfig | None = None, ctx: ops.Context = USER) -> MemFs:
    return MemFs(ShareChain(MemoryBackend(config or MemoryConfig())), ctx)

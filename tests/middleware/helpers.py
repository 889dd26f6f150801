"""Helpers for driving middleware in-process: a chain over the memory backend and short
spellings of the requests a test sends."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vfsframe_plugins.memory import MemoryBackend, MemoryConfig

from tests.plugins.memfs_helpers import raises_errno as raises_errno  # shared errno check
from vfsframe import ops
from vfsframe.chain import ShareChain

ROOT = ops.Context(uid=0, gid=0, pid=10, umask=0o022)
ALICE = ops.Context(uid=1000, gid=1000, pid=11, umask=0o022)
BOB = ops.Context(uid=2000, gid=2000, pid=12, umask=0o022)


def memory_chain(middleware: Sequence[object]) -> ShareChain:
    return ShareChain(MemoryBackend(MemoryConfig()), list(middleware))


class Fs:
    """Requests through a chain, as one caller."""

    def __init__(self, chain: ShareChain, ctx: ops.Context = ROOT) -> None:
        self.chain = chain
        self.ctx = ctx

    def as_(self, ctx: ops.Context) -> Fs:
        return Fs(self.chain, ctx)

    def ctx_copy(self) -> ops.Context:
        # The session hands each request a Context of its own.
        c = self.ctx
        return ops.Context(c.uid, c.gid, c.pid, c.umask)

    def stat(self, path: str, fh: Any = None) -> Any:
        return self.chain.getattr(ops.GetattrRequest(self.ctx_copy(), path, fh))

    def mkdir(self, path: str, mode: int = 0o777) -> Any:
        return self.chain.mkdir(ops.MkdirRequest(self.ctx_copy(), path, mode))

    def create(self, path: str, mode: int = 0o666, flags: int = os.O_RDWR | os.O_CREAT) -> Any:
        return self.chain.create(ops.CreateRequest(self.ctx_copy(), path, flags, mode))

    def open(self, path: str, flags: int = os.O_RDWR) -> Any:
        return self.chain.open(ops.OpenRequest(self.ctx_copy(), path, flags))

    def release(self, path: str, fh: Any) -> None:
        self.chain.release(ops.ReleaseRequest(self.ctx_copy(), path, fh))

    def write(self, path: str, fh: Any, offset: int, data: bytes, flags: int = 0) -> int:
        req = ops.WriteRequest(
            self.ctx_copy(), path, fh, offset, [memoryview(data)], len(data), flags
        )
        return self.chain.write(req)

    def read(self, path: str, fh: Any, offset: int, size: int, zero_copy: bool = False) -> bytes:
        buffers: list[memoryview] = []
        if zero_copy:
            buffers = [memoryview(bytearray(size))]
        req = ops.ReadRequest(self.ctx_copy(), path, fh, offset, size, buffers)
        result = self.chain.read(req)
        if isinstance(result, int):
            return bytes(buffers[0][:result])
        return bytes(result)

    def put(self, path: str, data: bytes) -> None:
        fh, _ = self.create(path)
        self.write(path, fh, 0, data)
        self.release(path, fh)

    def get(self, path: str) -> bytes:
        fh = self.open(path, os.O_RDONLY)
        try:
            return self.read(path, fh, 0, 1 << 24)
        finally:
            self.release(path, fh)

    def listdir(self, path: str) -> list[str]:
        return sorted(e.name for e in self.entries(path))

    def entries(self, path: str) -> list[ops.DirEntry]:
        return list(self.chain.readdir(ops.ReaddirRequest(self.ctx_copy(), path)))

    def unlink(self, path: str) -> None:
        self.chain.unlink(ops.UnlinkRequest(self.ctx_copy(), path))

    def rmdir(self, path: str) -> None:
        self.chain.rmdir(ops.RmdirRequest(self.ctx_copy(), path))

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        self.chain.rename(ops.RenameRequest(self.ctx_copy(), old, new, flags))

    def link(self, old: str, new: str) -> Any:
        return self.chain.link(ops.LinkRequest(self.ctx_copy(), old, new))

    def symlink(self, path: str, target: str) -> Any:
        return self.chain.symlink(ops.SymlinkRequest(self.ctx_copy(), path, target))

    def setattr(self, path: str, **fields: Any) -> Any:
        return self.chain.setattr(ops.SetattrRequest(self.ctx_copy(), path, **fields))

    def setxattr(self, path: str, name: str, value: bytes) -> None:
        self.chain.setxattr(ops.SetxattrRequest(self.ctx_copy(), path, name, value))

    def getxattr(self, path: str, name: str) -> bytes:
        return self.chain.getxattr(ops.GetxattrRequest(self.ctx_copy(), path, name))
